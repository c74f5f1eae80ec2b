using System.Collections.Concurrent;
using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>The control stream keeps answering whatever the data does: pings, heartbeats, announcements.</summary>
public sealed class PeerLinksControlTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact(Timeout = 180_000)]
    public async Task Probe_WhileEveryHandlerWaitsOnASignal_GetsItsPong_AndTheLinkStaysUp()
    {
        await using var mesh = await Mesh.StartAsync(2);
        var (sender, receiver) = (mesh.Nodes[0], mesh.Nodes[1]);
        var queue = $"control.blocked-{Guid.NewGuid():N}";
        await sender.DeclareQueueAsync(queue, new QueueSettings()); // capacity 1,024: every send is queued at once
        const int concurrency = 4;
        const int count = 40;
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var entered = 0;
        var allEntered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var seen = new ConcurrentDictionary<Guid, int>();
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var subscription = await receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue, Concurrency = concurrency },
            async (e, _) =>
            {
                if (Interlocked.Increment(ref entered) == concurrency)
                {
                    allEntered.TrySetResult();
                }

                await release.Task;
                seen.AddOrUpdate(e.MessageId, 1, static (_, n) => n + 1);
                if (seen.Count == count)
                {
                    all.TrySetResult();
                }

                return Settlement.Ack;
            });
        await Mesh.UntilAsync(() => sender.Links[0].HasQueueConsumer(queue), "the receiver's consumer to be announced");
        var link = sender.Links[0];
        var sent = new List<Guid>();
        for (var i = 0; i < count; i++)
        {
            var envelope = new Envelope { MessageId = Guid.NewGuid(), MessageType = "control.blocked", Payload = new byte[1024] };
            sent.Add(envelope.MessageId);
            await sender.SendAsync(queue, envelope).AsTask().WaitAsync(Bound);
        }

        // Every handler holds a delivery and waits for the signal: nothing is settled, so the data path is stuck.
        await allEntered.Task.WaitAsync(Bound);

        for (var i = 0; i < 20; i++)
        {
            await link.ProbeControlAsync().WaitAsync(Bound);
        }

        link.State.Should().Be(PeerState.Up, "the control stream kept answering while no delivery could be settled");
        seen.Should().BeEmpty("no handler was released yet");

        release.SetResult();
        await all.Task.WaitAsync(Bound);
        seen.Keys.Should().BeEquivalentTo(sent);
        seen.Values.Should().AllSatisfy(n => n.Should().Be(1));
    }
}
