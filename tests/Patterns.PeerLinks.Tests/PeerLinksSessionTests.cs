using System.Buffers;
using Patterns.Messaging;
using Patterns.PeerLinks.Links;
using Patterns.PeerLinks.Wire;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>What one session of a link confirmed never reaches the next one (the peer restarted meanwhile).</summary>
public sealed class PeerLinksSessionTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact(Timeout = 180_000)]
    public async Task AnnouncementConfirmedAfterThePeerRestarted_IsNotSentToItsNewIncarnation()
    {
        // The sender's proxy of the receiver's consumer is removed by the receiver's announcement 2 while one of its
        // handlers is held (in the serializer), so the confirmation of 2 waits for it to drain. The receiver restarts
        // meanwhile, and its new incarnation numbers its announcements from 1 again. Before, the confirmation of 2 then
        // went out on the new session: the new incarnation took its own announcements 1 and 2 as applied already, did
        // not send them, and the sender never learnt of the consumer that announcement 1 added.
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        var serializer = new HeldSerializer();
        var queue = $"announce-{Guid.NewGuid():N}";
        await using var sender = await PeerLinksTransport.StartAsync(
            Mesh.Options(0, ports, (_, o) => o.AnnounceTimeout = TimeSpan.FromHours(1)), serializer, loggerFactory: Mesh.Logs);
        await sender.DeclareQueueAsync(queue, new QueueSettings { Capacity = 10 });
        var receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports), loggerFactory: Mesh.Logs);
        var link = sender.Links[0];
        try
        {
            var consumer = await receiver.SubscribeAsync(Consumer(queue), (_, _) => new(Settlement.Ack)); // announcement 1
            await Mesh.UntilAsync(() => link.HasQueueConsumer(queue), "the receiver's consumer to be known to the sender");
            await sender.SendAsync(queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "held", Body = "held" });
            await serializer.Entered.Task.WaitAsync(Bound);

            var removing = consumer.DisposeAsync().AsTask(); // announcement 2: waits for the confirmation that is held
            await Mesh.UntilAsync(
                () => !link.HasQueueConsumer(queue) && !link.Confirming.IsCompleted,
                "the sender to apply the receiver's announcement 2 and drain the removed proxy");

            var down = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            sender.Membership.PeerChanged += (_, changed) =>
            {
                if (changed.Peer.State == PeerState.Down)
                {
                    down.TrySetResult();
                }
            };
            using (var stopped = new CancellationTokenSource())
            {
                await stopped.CancelAsync();
                await receiver.LeaveAsync(stopped.Token).WaitAsync(Bound);
            }

            await receiver.DisposeAsync();
            await QuietlyAsync(removing);
            await down.Task.WaitAsync(Bound);

            receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports), loggerFactory: Mesh.Logs);
            await Mesh.UntilAsync(
                () => link.State == PeerState.Up && receiver.Sessions.Any(s => s.NodeId == sender.NodeId && s.IsAttached),
                "the sender's link to be up on the restarted receiver");

            // The held handler ends, the removed proxy has drained: its confirmation is due now, on the new session.
            serializer.Release.TrySetResult();
            await link.Confirming.WaitAsync(Bound);

            await receiver.SubscribeAsync(Consumer(queue), (_, _) => new(Settlement.Ack)); // the new incarnation's announcement 1
            var session = receiver.Sessions.Single(s => s.NodeId == sender.NodeId && s.IsAttached);
            await Mesh.UntilAsync(() => session.AcknowledgedVersion >= 1, "the sender to confirm the new incarnation's announcement 1");
            session.AcknowledgedVersion.Should().Be(1, "the sender confirmed only what the new incarnation announced");
            await Mesh.UntilAsync(() => link.HasQueueConsumer(queue), "the new incarnation's consumer to be known to the sender");
        }
        finally
        {
            serializer.Release.TrySetResult();
            await receiver.DisposeAsync();
        }
    }

    [Fact(Timeout = 180_000)]
    public async Task MessageOfAProxyHeldAcrossThePeersRestart_IsDeliveredAgain_NotToTheNewIncarnationsSubscriptionWithItsId()
    {
        // The sender's proxy of the receiver's consumer of queue A (subscription 1) is removed while one of its handlers
        // is held (in the serializer). The receiver restarts; its new incarnation numbers its subscriptions from 1 again,
        // and its subscription 1 consumes queue B. Before, the released handler queued its message on the new session
        // under the old id 1, and the consumer of B received a message of A. Now the stale proxy's send fails and the
        // message is delivered again, once, to the new incarnation's consumer of A.
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        var serializer = new HeldSerializer(failHeld: false);
        var queueA = $"stale-a-{Guid.NewGuid():N}";
        var queueB = $"stale-b-{Guid.NewGuid():N}";
        await using var sender = await PeerLinksTransport.StartAsync(
            Mesh.Options(0, ports, (_, o) => o.AnnounceTimeout = TimeSpan.FromHours(1)), serializer, loggerFactory: Mesh.Logs);
        await sender.DeclareQueueAsync(queueA, new QueueSettings { Capacity = 10 });
        await sender.DeclareQueueAsync(queueB, new QueueSettings { Capacity = 10 });
        var receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports), loggerFactory: Mesh.Logs);
        var link = sender.Links[0];
        try
        {
            var consumer = await receiver.SubscribeAsync(Consumer(queueA), (_, _) => new(Settlement.Ack)); // subscription 1
            await Mesh.UntilAsync(() => link.HasQueueConsumer(queueA), "the receiver's consumer of A to be known to the sender");
            var messageId = Guid.NewGuid();
            await sender.SendAsync(queueA, new Envelope { MessageId = messageId, MessageType = "held", Body = "held" });
            await serializer.Entered.Task.WaitAsync(Bound);

            var removing = consumer.DisposeAsync().AsTask();
            await Mesh.UntilAsync(
                () => !link.HasQueueConsumer(queueA) && !link.Confirming.IsCompleted,
                "the sender to remove the proxy of the consumer of A and drain it");

            var down = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            sender.Membership.PeerChanged += (_, changed) =>
            {
                if (changed.Peer.State == PeerState.Down)
                {
                    down.TrySetResult();
                }
            };
            using (var stopped = new CancellationTokenSource())
            {
                await stopped.CancelAsync();
                await receiver.LeaveAsync(stopped.Token).WaitAsync(Bound);
            }

            await receiver.DisposeAsync();
            await QuietlyAsync(removing);
            await down.Task.WaitAsync(Bound);

            receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports), loggerFactory: Mesh.Logs);
            var receivedB = 0;
            var receivedA = new List<Guid>();
            var delivered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            await receiver.SubscribeAsync(Consumer(queueB), (_, _) => // the new incarnation's subscription 1
            {
                Interlocked.Increment(ref receivedB);
                delivered.TrySetResult();
                return new(Settlement.Ack);
            });
            await Mesh.UntilAsync(() => link.HasQueueConsumer(queueB), "the new incarnation's consumer of B to be known to the sender");
            await receiver.SubscribeAsync(Consumer(queueA), (envelope, _) =>
            {
                lock (receivedA)
                {
                    receivedA.Add(envelope.MessageId);
                }

                delivered.TrySetResult();
                return new(Settlement.Ack);
            });
            await Mesh.UntilAsync(() => link.HasQueueConsumer(queueA), "the new incarnation's consumer of A to be known to the sender");

            // The held handler goes on: its proxy belongs to the lost session.
            serializer.Release.TrySetResult();
            await link.Confirming.WaitAsync(Bound);
            await delivered.Task.WaitAsync(Bound);
            Volatile.Read(ref receivedB).Should().Be(0, "a message of queue A never reaches a consumer of queue B");
            await Mesh.UntilAsync(() => link.BufferedBytes == 0, "the sender's link to have its messages acknowledged");
            lock (receivedA)
            {
                receivedA.Should().Equal([messageId], "the message is delivered again, once");
            }
        }
        finally
        {
            serializer.Release.TrySetResult();
            await receiver.DisposeAsync();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task SenderWaitingForRoomWhenTheSessionIsLost_FailsAndIsNotNumberedInTheNextSession()
    {
        // A sender waiting for room in the replay buffer belongs to the lost session. Before, the reset admitted it into
        // the new numbering (sequence number 1), so it could be sent on the next session.
        var sequence = new OutboundSequence(16, () => { });
        await sequence.AppendAsync(new OutEntry(FrameType.Data, 1, new byte[16], ReadOnlySequence<byte>.Empty), CancellationToken.None);
        var waiting = sequence.AppendAsync(new OutEntry(FrameType.Data, 1, new byte[16], ReadOnlySequence<byte>.Empty), CancellationToken.None).AsTask();
        waiting.IsCompleted.Should().BeFalse("the buffer is full");

        var dropped = sequence.Reset(new TransportUnavailableException("the session was lost"));

        dropped.Should().ContainSingle("the entry queued in the lost session is handed back");
        sequence.LastAssigned.Should().Be(0, "nothing of the lost session is numbered in the next one");
        sequence.HasUnsent.Should().BeFalse();
        var failed = async () => await waiting.WaitAsync(Bound);
        await failed.Should().ThrowAsync<TransportUnavailableException>();
    }

    private static SubscriptionRequest Consumer(string queue) => new() { Address = TransportAddress.Queue(queue), ConsumerGroup = queue };

    private static async Task QuietlyAsync(Task task)
    {
        try
        {
            await task.WaitAsync(Bound);
        }
        catch (Exception ex) when (ex is not TimeoutException)
        {
            // The removal's own outcome does not matter here (its node left meanwhile).
        }
    }

    /// <summary>
    /// JSON, except that the first body serialized holds the thread until <see cref="Release"/>, then fails (or, without
    /// <paramref name="failHeld"/>, serializes it).
    /// </summary>
    private sealed class HeldSerializer(bool failHeld = true) : IMessageSerializer
    {
        private readonly JsonMessageSerializer _json = new();
        private int _held;

        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string ContentType => _json.ContentType;

        public void Serialize(IBufferWriter<byte> writer, object value, Type type)
        {
            if (Interlocked.Exchange(ref _held, 1) == 1)
            {
                _json.Serialize(writer, value, type);
                return;
            }

            Entered.TrySetResult();
            Release.Task.Wait(TimeSpan.FromMinutes(2));
            if (failHeld)
            {
                throw new InvalidOperationException("The held message is not sent.");
            }

            _json.Serialize(writer, value, type);
        }

        public object Deserialize(ReadOnlyMemory<byte> payload, Type type) => _json.Deserialize(payload, type);
    }
}
