using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Patterns.Health;
using Patterns.Hosting;
using Patterns.Queues;
using Patterns.Transport;

namespace Patterns.RabbitMq.Tests;

public sealed class RabbitMqHealthCheckTests
{
    private static readonly HealthCheckContext Context = new() { Registration = new HealthCheckRegistration("x", _ => null!, null, null) };

    [Fact]
    public async Task BrokerUnreachable_TransportIsDegradedNamingTheEndpoint()
    {
        await Broker.RequireAsync();
        var options = Broker.Options("hc-port", o =>
        {
            o.Uri = new Uri("amqp://guest:guest@127.0.0.1:1/");
            o.NetworkRecoveryInterval = TimeSpan.FromMilliseconds(50);
            o.ReconnectTimeout = TimeSpan.FromMilliseconds(300);
        });
        await using var transport = Broker.Create(options);
        var check = new PatternsTransportHealthCheck(transport);
        (await check.CheckHealthAsync(Context)).Status.Should().Be(HealthStatus.Healthy, "nothing tried to connect yet");

        var send = async () => await transport.SendAsync("q", new Messaging.Envelope { MessageId = Guid.NewGuid(), MessageType = "x", Payload = "{}"u8.ToArray() });
        await send.Should().ThrowAsync<TransportUnavailableException>();

        var result = await check.CheckHealthAsync(Context);
        result.Status.Should().Be(HealthStatus.Degraded);
        result.Description.Should().Contain("publish connection: RabbitMQ at amqp://127.0.0.1:1/ is not reachable");
    }

    [Fact]
    public async Task Running_ConnectionsAndConsumersAreHealthy_AndAStoppedConsumerIsDegraded()
    {
        await using var host = await RabbitHost.StartAsync("hc-run", b =>
        {
            b.AddMessageQueue(q => q.AddQueue("hc.work").AddConsumer<WorkItem>("hc.work", (m, c, ct) => default));
            b.Services.AddHealthChecks()
                .AddCheck<PatternsTransportHealthCheck>("patterns-transport")
                .AddCheck<PatternsConsumersHealthCheck>("patterns-consumers");
        });
        await host.Get<IQueueSender>().SendAsync("hc.work", new WorkItem(1));

        var report = await host.Get<HealthCheckService>().CheckHealthAsync();

        report.Entries["patterns-consumers"].Status.Should().Be(HealthStatus.Healthy);
        report.Entries["patterns-transport"].Status.Should().Be(HealthStatus.Healthy, report.Entries["patterns-transport"].Description);
        report.Entries["patterns-transport"].Data.Keys.Should().BeEquivalentTo(["publish connection", "consume connection"]);

        var consumer = host.Get<MessagingHostedService>().Subscriptions.Single();
        await consumer.StopAsync(CancellationToken.None);
        var after = await host.Get<PatternsConsumersHealthCheck>().CheckHealthAsync(Context);
        after.Status.Should().Be(HealthStatus.Degraded);
        after.Description.Should().Contain("stopped: it takes no more messages");
    }
}

public sealed class RabbitMqHarnessTests
{
    [Fact]
    public async Task Consumed_OnRabbitMq_ReadsTheBodiesTheBrokerDelivered()
    {
        await using var host = await RabbitHost.StartAsync("harness", b =>
        {
            b.AddPatterns(p => Patterns.Testing.PatternsTestingExtensions.UseTestHarness(p));
            b.AddMessageQueue(q => q.AddQueue("harness.work").AddConsumer<WorkItem>("harness.work", (m, c, ct) => default));
        });
        await host.Get<IQueueSender>().SendAsync("harness.work", new WorkItem(41));
        await host.Get<IQueueSender>().SendAsync("harness.work", new WorkItem(42));
        var harness = host.Get<Patterns.Testing.PatternsTestHarness>();

        await harness.WaitForDeliveriesAsync(2);

        harness.Consumed<WorkItem>().Select(w => w.Number).Should().BeEquivalentTo([41, 42]);
    }
}
