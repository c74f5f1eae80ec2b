using System.Collections.Concurrent;
using System.Globalization;
using FluentAssertions;
using Microsoft.Extensions.Logging.Abstractions;
using Patterns.Consuming;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.Storage;
using Patterns.Transport;
using Xunit;

namespace Patterns.Conformance;

/// <summary>
/// The kernel's consumer path on top of the transport: de-duplication, settlement failure, scheduling and time to live.
/// A transport gets all of it by implementing the SPI; these tests prove it does, the same way on every transport.
/// </summary>
public abstract partial class TransportConformanceTests
{
    [Fact]
    public async Task Kernel_LateDuplicateAfterAHandledMessage_AcknowledgedWithoutHandling()
    {
        var queue = Name("conformance.late-dup");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var handled = new ConcurrentQueue<int>();
        var two = new CountdownEvent(2);
        var inbox = new FaultyInbox();
        await SubscribeThroughKernelAsync(Request(queue), (e, _) =>
        {
            handled.Enqueue(Sequence(e));
            two.Signal();
            return new(Settlement.Ack);
        }, inbox);
        var original = NewEnvelope(1);

        await Transport.SendAsync(queue, original);
        await Transport.SendAsync(queue, original);
        await Transport.SendAsync(queue, NewEnvelope(2));
        await WaitAsync(two);

        handled.Should().Equal(1, 2);
        inbox.Contains(queue, original.MessageId).Should().BeTrue();
    }

    [Fact]
    public async Task Kernel_DuplicateDeliveredWhileTheOriginalIsHandled_HandledOnce()
    {
        var queue = Name("conformance.dup");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var original = NewEnvelope(1);

        // Two partition keys that land on different workers, so the copies are handled side by side.
        var keys = Enumerable.Range(0, 64).Select(i => $"key-{i}").ToArray();
        var keyA = keys[0];
        var keyB = keys.First(k => PartitionHash.Partition(k, 2) != PartitionHash.Partition(keyA, 2));
        var copies = 0;
        var bothArrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handlerRuns = 0;
        var next = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var marker = NewEnvelope(2, partitionKey: keyB);
        await SubscribeThroughKernelAsync(
            Request(queue) with { Concurrency = 2 },
            async (e, _) =>
            {
                if (e.MessageId == marker.MessageId)
                {
                    next.TrySetResult();
                    return Settlement.Ack;
                }

                Interlocked.Increment(ref handlerRuns);
                // Hold the first copy until the second has reached the consumer path.
                await bothArrived.Task.WaitAsync(WaitTimeout);
                return Settlement.Ack;
            },
            new FaultyInbox(),
            outside: inner => (e, ct) =>
            {
                if (e.MessageId == original.MessageId && Interlocked.Increment(ref copies) == 2)
                {
                    bothArrived.TrySetResult();
                }

                return inner(e, ct);
            });

        await Transport.SendAsync(queue, original with { PartitionKey = keyA });
        await Transport.SendAsync(queue, original with { PartitionKey = keyB });
        await Transport.SendAsync(queue, marker);
        await next.Task.WaitAsync(WaitTimeout);

        Volatile.Read(ref copies).Should().Be(2);
        Volatile.Read(ref handlerRuns).Should().Be(1, "the copy that arrives while the original is handled waits for it and is then skipped");
    }

    [Fact]
    public async Task Kernel_SettlementFails_MessageDeliveredAgainAndTheNextIsNotHeldUp()
    {
        var queue = Name("conformance.settle-fail");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var handled = new ConcurrentQueue<int>();
        var three = new CountdownEvent(3);
        // Recording that the message was handled fails once: the settlement cannot be completed.
        await SubscribeThroughKernelAsync(Request(queue) with { Capacity = 1 }, (e, _) =>
        {
            handled.Enqueue(Sequence(e));
            three.Signal();
            return new(Settlement.Ack);
        }, new FaultyInbox { FailMark = 1 });

        await Transport.SendAsync(queue, NewEnvelope(1));
        await Transport.SendAsync(queue, NewEnvelope(2));
        await WaitAsync(three);

        handled.Should().BeEquivalentTo([1, 1, 2], "the message whose settlement failed is delivered again, and the next one is not held up");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Kernel_InboxUnreadable_MessagePutOffNotCountedAndTheConsumerKeepsWorking(int concurrency)
    {
        var queue = Name("conformance.inbox-fail");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var handled = new ConcurrentQueue<(int Sequence, int Count)>();
        var two = new CountdownEvent(2);
        await SubscribeThroughKernelAsync(Request(queue) with { Concurrency = concurrency }, (e, _) =>
        {
            handled.Enqueue((Sequence(e), e.DeliveryCount));
            two.Signal();
            return new(Settlement.Ack);
        }, new FaultyInbox { FailContains = 1 });

        // Same partition key: both go to the same worker, which must survive the first message's inbox error.
        await Transport.SendAsync(queue, NewEnvelope(1, partitionKey: "k"));
        await Transport.SendAsync(queue, NewEnvelope(2, partitionKey: "k"));
        await WaitAsync(two);

        handled.Should().BeEquivalentTo([(1, 0), (2, 0)], "a message put off because the inbox failed is not a failed delivery");
    }

    [Fact]
    public async Task Kernel_ScheduledMessage_HandledNoSoonerThanItsTimeWithDeliveryCountZero()
    {
        var queue = Name("conformance.scheduled");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var received = new TaskCompletionSource<(Envelope Envelope, DateTimeOffset At)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var handlerCalls = 0;
        await SubscribeThroughKernelAsync(Request(queue), (e, _) =>
        {
            Interlocked.Increment(ref handlerCalls);
            received.TrySetResult((e, DateTimeOffset.UtcNow));
            return new(Settlement.Ack);
        });
        var due = DateTimeOffset.UtcNow.AddMilliseconds(700);

        await Transport.SendAsync(queue, NewEnvelope(1).WithHeader(EnvelopeHeaders.DeliverAt, due.ToString("O", CultureInfo.InvariantCulture)));
        var (envelope, at) = await received.Task.WaitAsync(WaitTimeout);

        at.Should().BeOnOrAfter(due);
        envelope.DeliveryCount.Should().Be(0, "putting a scheduled message off is not a delivery");
        Volatile.Read(ref handlerCalls).Should().Be(1);
    }

    [Fact]
    public async Task Kernel_ExpiredMessage_DeadLetteredAsExpiredAndNeverHandled()
    {
        var queue = Name("conformance.expired");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var handled = new ConcurrentQueue<int>();
        var alive = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await SubscribeThroughKernelAsync(Request(queue), (e, _) =>
        {
            handled.Enqueue(Sequence(e));
            alive.TrySetResult();
            return new(Settlement.Ack);
        });
        var stale = NewEnvelope(1).WithHeader(EnvelopeHeaders.ExpiresAt, DateTimeOffset.UtcNow.AddSeconds(-1).ToString("O", CultureInfo.InvariantCulture));
        var fresh = NewEnvelope(2).WithHeader(EnvelopeHeaders.ExpiresAt, DateTimeOffset.UtcNow.AddMinutes(5).ToString("O", CultureInfo.InvariantCulture));

        await Transport.SendAsync(queue, stale);
        await Transport.SendAsync(queue, fresh);
        await alive.Task.WaitAsync(WaitTimeout);
        var dead = await WaitForDeadLettersAsync(queue, 1);

        handled.Should().Equal(2);
        dead.Single().Envelope.MessageId.Should().Be(stale.MessageId);
        dead.Single().Reason.Should().Be(EnvelopeHeaders.ExpiredReason);
    }

    /// <summary>Subscribes through the kernel's consumer path, as the hosted consumers do.</summary>
    /// <param name="request">The subscription.</param>
    /// <param name="handler">The handler inside the consumer path.</param>
    /// <param name="inbox">De-duplicates with this inbox; no de-duplication when <see langword="null"/>.</param>
    /// <param name="outside">Wraps the consumer path, to watch deliveries before it sees them.</param>
    protected async Task<TransportSubscription> SubscribeThroughKernelAsync(
        SubscriptionRequest request, DeliveryHandler handler, IInboxStore? inbox = null, Func<DeliveryHandler, DeliveryHandler>? outside = null)
    {
        var paths = new ConsumerPaths(
            new PatternsOptions { Deduplicate = inbox is not null, InboxRetryDelay = TimeSpan.FromMilliseconds(100) },
            inbox,
            TimeProvider.System,
            NullLoggerFactory.Instance);
        var wrapped = paths.Wrap(Transport, request, handler);
        var subscription = await Transport.SubscribeAsync(request, outside is null ? wrapped : outside(wrapped));
        _subscriptions.Add(subscription);
        return subscription;
    }

    private static SubscriptionRequest Request(string queue) => new() { Address = TransportAddress.Queue(queue), ConsumerGroup = queue };
}

/// <summary>An inbox that throws for its first calls (as many as asked), then remembers ids in memory.</summary>
public sealed class FaultyInbox : IInboxStore
{
    private readonly ConcurrentDictionary<(string, string), bool> _handled = new();
    private int _failContains;
    private int _failMark;

    /// <summary>Gets how many <see cref="ContainsAsync"/> calls fail first.</summary>
    public int FailContains { get => _failContains; init => _failContains = value; }

    /// <summary>Gets how many <see cref="TryMarkHandledAsync"/> calls fail first.</summary>
    public int FailMark { get => _failMark; init => _failMark = value; }

    /// <summary>Whether a consumer group's inbox holds a message id.</summary>
    public bool Contains(string consumer, Guid messageId) => _handled.ContainsKey((consumer, messageId.ToString()));

    /// <inheritdoc />
    public ValueTask<bool> ContainsAsync(string consumer, string messageId, CancellationToken cancellationToken = default) =>
        Interlocked.Decrement(ref _failContains) >= 0
            ? throw new InvalidOperationException("The inbox store is unavailable.")
            : new(_handled.ContainsKey((consumer, messageId)));

    /// <inheritdoc />
    public ValueTask<bool> TryMarkHandledAsync(string consumer, string messageId, CancellationToken cancellationToken = default) =>
        Interlocked.Decrement(ref _failMark) >= 0
            ? throw new InvalidOperationException("The inbox store is unavailable.")
            : new(_handled.TryAdd((consumer, messageId), true));

    /// <inheritdoc />
    public ValueTask<long> PruneAsync(DateTimeOffset olderThan, CancellationToken cancellationToken = default) => new(0L);
}
