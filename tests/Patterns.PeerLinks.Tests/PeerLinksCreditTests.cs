using System.Collections.Concurrent;
using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>Credit beyond concurrency (prefetch), and what a stopping subscription does with what it was sent.</summary>
public sealed class PeerLinksCreditTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact(Timeout = 180_000)]
    public async Task Prefetch_StuckHandlerStopped_UnhandledMessagesComeBackUncounted_TheStuckOneAsARetry()
    {
        await using var mesh = await Mesh.StartAsync(2, (_, o) => o.Prefetch = 4);
        var (sender, receiver) = (mesh.Nodes[0], mesh.Nodes[1]);
        var queue = $"credit.prefetch-{Guid.NewGuid():N}";
        await sender.DeclareQueueAsync(queue, new QueueSettings());
        var stuck = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        var entered = new ConcurrentDictionary<Guid, bool>();
        var never = new TaskCompletionSource();
        // Concurrency 2: a subscription of concurrency 1 gets no prefetch (it keeps send order).
        var first = await receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue, Concurrency = 2 },
            async (e, _) =>
            {
                entered.TryAdd(e.MessageId, true);
                stuck.TrySetResult(e);
                await never.Task; // ignores its cancellation token: abandoned after the grace
                return Settlement.Ack;
            });
        const int count = 10;
        var sent = new List<Guid>();
        for (var i = 0; i < count; i++)
        {
            var envelope = new Envelope { MessageId = Guid.NewGuid(), MessageType = "credit.message", Payload = BitConverter.GetBytes(i) };
            sent.Add(envelope.MessageId);
            await sender.SendAsync(queue, envelope);
        }

        var held = await stuck.Task.WaitAsync(Bound);

        // Stop without draining: the handler is cancelled, ignores it, and is abandoned; the stop still ends.
        await first.DisposeAsync().AsTask().WaitAsync(Bound);

        var seen = new ConcurrentDictionary<Guid, int>();
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var second = await receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue },
            (e, _) =>
            {
                seen.TryAdd(e.MessageId, e.DeliveryCount);
                if (seen.Count == count)
                {
                    all.TrySetResult();
                }

                return new(Settlement.Ack);
            });
        await all.Task.WaitAsync(Bound);

        seen.Keys.Should().BeEquivalentTo(sent, "every message comes back: none lost to the stopped subscription");
        seen[held.MessageId].Should().Be(1, "the message its handler held counts as a delivery (retried)");
        entered.Keys.Should().OnlyContain(id => seen[id] == 1, "each message a stuck handler held counts as a delivery");
        seen.Where(p => !entered.ContainsKey(p.Key)).Select(p => p.Value).Should().AllBeEquivalentTo(0, "messages it never handled come back as deferrals, not counted")
            .And.HaveCountGreaterThan(count - 3, "prefetched messages beyond the two held ones came back too");
    }
}
