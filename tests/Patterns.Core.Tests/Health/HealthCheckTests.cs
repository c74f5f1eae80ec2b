using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Patterns.Health;
using Patterns.Hosting;

namespace Patterns.Core.Tests.Health;

public sealed record HealthPing(int Id);

public sealed class HealthCheckTests
{
    [Fact]
    public async Task Consumers_BeforeStart_AreDegradedSayingTheHostHasNotStarted()
    {
        using var host = Build();

        var report = await host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();

        report.Entries["patterns-consumers"].Status.Should().Be(HealthStatus.Degraded);
        report.Entries["patterns-consumers"].Description.Should().Contain("host has not started");
        report.Entries["patterns-transport"].Status.Should().Be(HealthStatus.Healthy);
        report.Status.Should().Be(HealthStatus.Degraded);
    }

    [Fact]
    public async Task Running_EveryConsumerAndTheInMemoryTransport_AreHealthy()
    {
        using var host = Build();
        await host.StartAsync();

        var report = await host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();

        report.Status.Should().Be(HealthStatus.Healthy);
        var consumers = report.Entries["patterns-consumers"];
        consumers.Description.Should().Be("2 consumer(s) taking messages");
        consumers.Data.Keys.Should().BeEquivalentTo(["health.a", "health.b"]);
        report.Entries["patterns-transport"].Description.Should().Contain("in-process");
        await host.StopAsync();
    }

    [Fact]
    public async Task OneConsumerStopped_ConsumersAreDegradedNamingIt()
    {
        using var host = Build();
        await host.StartAsync();
        var stopped = host.Services.GetRequiredService<MessagingHostedService>().Subscriptions.Single(s => s.Request.ConsumerGroup == "health.b");
        await stopped.StopAsync(CancellationToken.None);

        var result = await Check<PatternsConsumersHealthCheck>(host);

        result.Status.Should().Be(HealthStatus.Degraded);
        result.Description.Should().StartWith("health.b: stopped");
        result.Description.Should().NotContain("health.a");
        ((string)result.Data["health.a"]).Should().StartWith("Healthy");
        await host.StopAsync();
    }

    [Fact]
    public async Task AfterStop_ConsumersAreDegraded()
    {
        using var host = Build();
        await host.StartAsync();
        await host.StopAsync();

        var result = await Check<PatternsConsumersHealthCheck>(host);

        result.Status.Should().Be(HealthStatus.Degraded);
        result.Description.Should().Contain("stopped its consumers");
    }

    private static async Task<HealthCheckResult> Check<T>(IHost host)
        where T : IHealthCheck =>
        await host.Services.GetRequiredService<T>().CheckHealthAsync(new HealthCheckContext { Registration = new HealthCheckRegistration("x", _ => null!, null, null) });

    private static IHost Build() => TestHost.Build(b =>
    {
        b.AddPubSub(p => p
            .Subscribe<HealthPing>((m, c, ct) => default, "health", o => o.ConsumerGroup = "health.a")
            .Subscribe<HealthPing>((m, c, ct) => default, "health", o => o.ConsumerGroup = "health.b"));
        b.Services.AddHealthChecks()
            .AddCheck<PatternsTransportHealthCheck>("patterns-transport")
            .AddCheck<PatternsConsumersHealthCheck>("patterns-consumers");
    });
}
