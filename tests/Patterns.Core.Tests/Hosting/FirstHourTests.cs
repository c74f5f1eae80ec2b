using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.Transport;

namespace Patterns.Core.Tests.Hosting;

public sealed record Early(int Id);

/// <summary>What a new user meets first: errors that say what to do.</summary>
public sealed class FirstHourTests
{
    [Fact]
    public async Task PublishBeforeStart_LogsAWarningThatTheHostHasNotStarted()
    {
        var logs = new CapturedLogs();
        using var host = TestHost.Build(b =>
        {
            b.Logging.AddProvider(logs);
            b.AddPubSub(p => p.Subscribe<Early>((m, c, ct) => default, "early"));
        });

        await host.Services.GetRequiredService<IPublisher>().PublishAsync("early", new Early(1));

        var warning = logs.Entries.Should().ContainSingle(e => e.EventId.Id == 1010).Which;
        warning.Level.Should().Be(LogLevel.Warning);
        warning.Message.Should().Contain("topic 'early'").And.Contain("before the host has started");
    }

    [Fact]
    public async Task PublishAfterStartToNoSubscriber_IsOnlyADebugNote()
    {
        var logs = new CapturedLogs();
        using var host = TestHost.Build(b => b.Logging.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        await host.StartAsync();

        await host.Services.GetRequiredService<IPublisher>().PublishAsync("nobody", new Early(1));

        logs.Entries.Should().ContainSingle(e => e.EventId.Id == 1001).Which.Level.Should().Be(LogLevel.Debug);
        logs.Entries.Should().NotContain(e => e.EventId.Id == 1010);
        await host.StopAsync();
    }

    [Fact]
    public async Task SendBeforeStart_ThrowsSayingTheHostHasNotStarted()
    {
        using var host = TestHost.Build(b => b.AddMessageQueue(q => q.AddQueue("early-work")));

        var act = async () => await host.Services.GetRequiredService<IQueueSender>().SendAsync("early-work", new Early(1));

        var thrown = (await act.Should().ThrowAsync<InvalidOperationException>()).Which;
        thrown.Message.Should().Be("Cannot send to queue 'early-work': the host has not started, so its queues are not declared yet. Send after IHost.StartAsync (or from a hosted service that starts after AddPatterns').");
        thrown.InnerException.Should().BeOfType<QueueNotFoundException>();
    }

    [Fact]
    public async Task SendAfterStartToUnknownQueue_StillSaysTheQueueDoesNotExist()
    {
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddQueue("known")));

        var act = async () => await host.Services.GetRequiredService<IQueueSender>().SendAsync("unknown", new Early(1));

        (await act.Should().ThrowAsync<QueueNotFoundException>()).Which.Queue.Should().Be("unknown");
        await host.StopAsync();
    }

    [Fact]
    public async Task HandlerFailure_LogAndDeadLetterReasonCountDeliveriesFromOne()
    {
        var logs = new CapturedLogs();
        using var host = await TestHost.StartAsync(b =>
        {
            b.Logging.AddProvider(logs);
            b.AddMessageQueue(q => q.AddQueue("fails").AddConsumer<Early>(
                "fails", (m, c, ct) => throw new InvalidOperationException("boom"), o =>
                {
                    o.MaxRedeliveries = 1;
                    o.RedeliveryDelay = TimeSpan.Zero;
                }));
        });

        await host.Services.GetRequiredService<IQueueSender>().SendAsync("fails", new Early(1));
        await host.Harness().WaitUntilAsync(h => h.Deliveries.Count(d => d.Outcome == SettlementKind.DeadLetter) == 1);

        logs.Entries.Where(e => e.EventId.Id == 1002).Select(e => e.Message[(e.Message.IndexOf("(delivery", StringComparison.Ordinal))..])
            .Should().Equal("(delivery 1); it will be redelivered.", "(delivery 2); it will be dead-lettered.");
        var dead = await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "fails", 1);
        dead.Should().ContainSingle().Which.Reason.Should().StartWith("Handler delegate<Early> failed on delivery 2 with");
        await host.StopAsync();
    }

    [Fact]
    public async Task MessageTooLarge_NamesTheOptionThatSetsTheLimit()
    {
        await using var transport = InMemoryTransport.Create(new InMemoryTransportOptions { MaxPayloadBytes = 4 });
        await transport.DeclareQueueAsync("small", new QueueSettings());

        var act = async () => await transport.SendAsync("small", new Envelope { MessageId = Guid.NewGuid(), Payload = "12345"u8.ToArray() });

        var thrown = (await act.Should().ThrowAsync<MessageTooLargeException>()).Which;
        thrown.Message.Should().Be("The message to 'small' has a 5-byte payload, larger than the transport's limit of 4 bytes (set by InMemoryTransportOptions.MaxPayloadBytes).");
        thrown.LimitOption.Should().Be("InMemoryTransportOptions.MaxPayloadBytes");
    }
}
