using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.Testing;
using Patterns.Transport;

namespace Patterns.Core.Tests.Consuming;

/// <summary>
/// A transport written outside the library, against the public SPI alone, gets the kernel's consumer path: de-duplication,
/// scheduling and consume filters behave as on the built-in transports.
/// </summary>
public sealed class ExternalTransportTests
{
    [Fact]
    public async Task ExternalTransport_ImplementingOnlyTheSpi_GetsDeduplicationSchedulingAndFilters()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var handled = new ConcurrentQueue<int>();
        var filtered = new ConcurrentQueue<int>();
        var arrived = new SemaphoreSlim(0);
        using var host = await TestHost.StartAsync(
            b => b.AddMessageQueue(q => q.AddConsumer<Reminder>("external", (r, _, _) =>
            {
                handled.Enqueue(r.Id);
                arrived.Release();
                return default;
            })),
            time,
            p => p
                .UseTransport(_ => new ForwardingTransport(InMemoryTransport.Create(timeProvider: time)))
                .Configure(o => o.Deduplicate = true)
                .AddConsumeFilter((context, next) =>
                {
                    filtered.Enqueue(((Reminder)context.Message).Id);
                    return next(context);
                }),
            harness: false);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        var id = Guid.NewGuid();

        await sender.SendAsync("external", new Reminder(1), new MessageOptions { MessageId = id });
        await sender.SendAsync("external", new Reminder(1), new MessageOptions { MessageId = id });
        await sender.SendAsync("external", new Reminder(2), new MessageOptions { Delay = TimeSpan.FromMinutes(1) });
        await sender.SendAsync("external", new Reminder(3));
        (await arrived.WaitAsync(TestHost.Wait)).Should().BeTrue();
        (await arrived.WaitAsync(TestHost.Wait)).Should().BeTrue();
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromMinutes(1));
        (await arrived.WaitAsync(TestHost.Wait)).Should().BeTrue();

        handled.Should().Equal([1, 3, 2], "the copy with the same id is skipped, and the delayed message waits for virtual time");
        filtered.Should().Equal(1, 3, 2);
    }

    /// <summary>A transport from "outside": it knows nothing of Patterns' internals and forwards every SPI call.</summary>
    private sealed class ForwardingTransport(MessageTransport inner) : MessageTransport
    {
        public override string SystemName => "external";

        public override bool IsInProcess => inner.IsInProcess;

        public override int MaxPayloadBytes => inner.MaxPayloadBytes;

        public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) =>
            inner.DeclareQueueAsync(queue, settings, cancellationToken);

        public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default) =>
            inner.SendAsync(queue, envelope, cancellationToken);

        public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default) =>
            inner.PublishAsync(topic, envelope, cancellationToken);

        public override ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            inner.SubscribeAsync(request, handler, cancellationToken);

        public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            inner.PeekDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            inner.ReplayDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) =>
            inner.PurgeDeadLettersAsync(queue, cancellationToken);

        public override ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
