using Patterns.Messaging;
using Patterns.PeerLinks.Links;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>
/// How a subscription runs what one gRPC message brought for it (one batch): with its full concurrency whatever the
/// handlers do (block, wait for each other), and in send order when its concurrency is one. The batches are handed to
/// the subscription as the receiving link does, without a network, so each test controls exactly what arrives together.
/// </summary>
public sealed class PeerLinksBatchTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact(Timeout = 60_000)]
    public async Task BlockingHandlers_FourInOneBatch_RunFourAtOnce()
    {
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, [Mesh.FreePort()]), loggerFactory: Mesh.Logs);
        using var all = new CountdownEvent(4);
        var running = 0;
        var peak = 0;
        var missed = 0;
        var done = 0;
        var finished = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var subscription = Subscribe(node, 4, (_, _) =>
        {
            lock (all)
            {
                peak = Math.Max(peak, ++running);
            }

            // Blocks its thread (no await) until all four run at once; after one wait fails the others do not wait too.
            all.Signal();
            if (Volatile.Read(ref missed) == 0 && !all.Wait(Bound))
            {
                Interlocked.Increment(ref missed);
            }

            lock (all)
            {
                running--;
            }

            if (Interlocked.Increment(ref done) == 4)
            {
                finished.TrySetResult();
            }

            return new(Settlement.Ack);
        });

        subscription.Deliver(Batch(new PeerSession(node, "peer", Guid.NewGuid()), 1, 4));
        await finished.Task.WaitAsync(TimeSpan.FromSeconds(50));

        missed.Should().Be(0, "the four handlers of one batch met within the bound");
        peak.Should().Be(4, "a batch of four runs on four workers when the handlers block");
        await subscription.StopAsync(CancellationToken.None).WaitAsync(Bound);
    }

    [Fact(Timeout = 60_000)]
    public async Task HandlersWaitingForEachOther_InOneBatch_DoNotDeadlock()
    {
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, [Mesh.FreePort()]), loggerFactory: Mesh.Logs);
        using var barrier = new Barrier(2);
        var met = 0;
        var done = 0;
        var finished = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var subscription = Subscribe(node, 2, (_, _) =>
        {
            if (barrier.SignalAndWait(Bound))
            {
                Interlocked.Increment(ref met);
            }

            if (Interlocked.Increment(ref done) == 2)
            {
                finished.TrySetResult();
            }

            return new(Settlement.Ack);
        });

        subscription.Deliver(Batch(new PeerSession(node, "peer", Guid.NewGuid()), 1, 2));
        await finished.Task.WaitAsync(TimeSpan.FromSeconds(30));

        met.Should().Be(2, "each handler waited for the other message of its batch, and both met");
        await subscription.StopAsync(CancellationToken.None).WaitAsync(Bound);
    }

    [Fact(Timeout = 60_000)]
    public async Task ConcurrencyOne_AsynchronousHandler_ManyBatches_HandledInSendOrder()
    {
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, [Mesh.FreePort()]), loggerFactory: Mesh.Logs);
        const int count = 1_000;
        var order = new List<int>(count);
        var finished = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var subscription = Subscribe(node, 1, async (e, _) =>
        {
            await Task.Yield();
            order.Add(BitConverter.ToInt32(e.Payload.Span));
            if (order.Count == count)
            {
                finished.TrySetResult();
            }

            return Settlement.Ack;
        });

        // As a temporary subscription (credit 256) receives them: many gRPC messages of ten, handed over back to back.
        var session = new PeerSession(node, "peer", Guid.NewGuid());
        for (var first = 1; first <= count; first += 10)
        {
            subscription.Deliver(Batch(session, first, 10));
        }

        await finished.Task.WaitAsync(TimeSpan.FromSeconds(30));
        order.Should().Equal(Enumerable.Range(1, count), "a subscription of concurrency one handles messages in the order they were sent");
        await subscription.StopAsync(CancellationToken.None).WaitAsync(Bound);
    }

    private static LocalSubscription Subscribe(PeerLinksTransport node, int concurrency, DeliveryHandler handler)
    {
        var queue = $"batch-{Guid.NewGuid():N}";
        var subscription = new LocalSubscription(node, 1, new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue, Concurrency = concurrency }, handler);
        subscription.Start();
        return subscription;
    }

    private static ArraySegment<RemoteDelivery> Batch(PeerSession session, int first, int count) =>
        new([.. Enumerable.Range(first, count).Select(i => new RemoteDelivery(session, i, new Envelope { MessageId = Guid.NewGuid(), MessageType = "batch.message", Payload = BitConverter.GetBytes(i) }))]);

}
