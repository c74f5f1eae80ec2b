using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.Hosting;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.Testing;
using Patterns.Transport;

namespace Patterns.Core.Tests.Hosting;

/// <summary>Outcomes of the hosted consumers that no other test asserted: a handler's own cancellation, a start that fails half-way, and the checks on a message's timing.</summary>
public sealed class HostingOutcomeTests
{
    [Fact]
    public async Task Consume_HandlerThrowsOperationCanceledWhileTheConsumerRuns_IsAFailureAndIsDeadLettered()
    {
        // Only a cancellation of the consumer's own token means "stopping, hand it back"; a handler's own
        // OperationCanceledException (a timed-out HTTP call, say) is a failure like any other.
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddConsumer<Memo>(
            "gives-up",
            (_, _, _) => throw new OperationCanceledException("the downstream call gave up"),
            o =>
            {
                o.Retry = null;
                o.MaxRedeliveries = 0;
            })));

        await host.Services.GetRequiredService<IQueueSender>().SendAsync("gives-up", new Memo(1));

        var dead = await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "gives-up", 1);
        dead[0].Reason.Should().Be("Handler delegate<Memo> failed on delivery 1 with System.OperationCanceledException: the downstream call gave up");
        await host.StopAsync();
    }

    [Fact]
    public async Task Consume_WithAnAttemptTimeout_RunsTheHandlerInsideThePipeline_WhichTimesItOut()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(
            b => b.AddMessageQueue(q => q.AddConsumer<Memo>(
                "timed",
                async (_, _, ct) =>
                {
                    started.TrySetResult();
                    await Task.Delay(Timeout.InfiniteTimeSpan, ct);
                },
                o =>
                {
                    o.Retry = null;
                    o.MaxRedeliveries = 0;
                    o.AttemptTimeout = TimeSpan.FromMinutes(1);
                })),
            time);

        await host.Services.GetRequiredService<IQueueSender>().SendAsync("timed", new Memo(1));
        await started.Task.WaitAsync(TestHost.Wait);
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromMinutes(1));

        var dead = await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "timed", 1);
        dead[0].Reason.Should().StartWith("Handler delegate<Memo> failed on delivery 1 with Polly.Timeout.TimeoutRejectedException");
        await host.StopAsync();
    }

    [Fact]
    public async Task Start_ASubscriptionFailsAfterAnotherStarted_RethrowsAndStopsTheOneThatStarted()
    {
        var transport = new RefusingTransport(InMemoryTransport.Create(), refusedGroup: "second");
        using var host = TestHost.Build(
            b => b.AddMessageQueue(q => q
                .AddConsumer<Memo>("first", (_, _, _) => default)
                .AddConsumer<Memo>("second", (_, _, _) => default)),
            patterns: p => p.UseTransport(_ => transport));

        var start = async () => await host.StartAsync();

        (await start.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Be("The broker refused consumer group 'second'.");
        var started = transport.Started.Should().ContainSingle().Which;
        started.Request.ConsumerGroup.Should().Be("first");
        started.GetHealth().Status.Should().Be(HealthStatus.Degraded, "a start that fails stops the consumers it had started");
        started.GetHealth().Description.Should().Be("stopped: it takes no more messages");
        host.Services.GetRequiredService<MessagingHostedService>().GetConsumerHealth().Should().ContainSingle()
            .Which.Description.Should().Be("The host has not started, so no consumer is taking messages yet.");
    }

    [Fact]
    public void WithTiming_AZeroDelay_IsDueAtOnce_AndANegativeOneIsRefused()
    {
        var now = new DateTimeOffset(2026, 12, 7, 12, 0, 0, TimeSpan.Zero);
        var envelope = new Envelope { MessageId = Guid.NewGuid(), MessageType = "memo" };

        var due = MessageBus.WithTiming(envelope, new MessageOptions { Delay = TimeSpan.Zero }, now);
        var refused = () => MessageBus.WithTiming(envelope, new MessageOptions { Delay = TimeSpan.FromTicks(-1) }, now);

        due.Headers.Should().NotBeNull();
        refused.Should().Throw<ArgumentOutOfRangeException>().Which.Message.Should().StartWith("MessageOptions.Delay must not be negative.");
    }

    /// <summary>Forwards to the in-memory transport but refuses one consumer group's subscription, as a broker can.</summary>
    private sealed class RefusingTransport(MessageTransport inner, string refusedGroup) : MessageTransport
    {
        public List<TransportSubscription> Started { get; } = [];

        public override string SystemName => inner.SystemName;

        public override bool IsInProcess => inner.IsInProcess;

        public override int MaxPayloadBytes => inner.MaxPayloadBytes;

        public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) =>
            inner.DeclareQueueAsync(queue, settings, cancellationToken);

        public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default) =>
            inner.SendAsync(queue, envelope, cancellationToken);

        public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default) =>
            inner.PublishAsync(topic, envelope, cancellationToken);

        public override async ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default)
        {
            if (request.ConsumerGroup == refusedGroup)
            {
                throw new InvalidOperationException($"The broker refused consumer group '{refusedGroup}'.");
            }

            var subscription = await inner.SubscribeAsync(request, handler, cancellationToken);
            Started.Add(subscription);
            return subscription;
        }

        public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            inner.PeekDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            inner.ReplayDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) =>
            inner.PurgeDeadLettersAsync(queue, cancellationToken);

        public override ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
