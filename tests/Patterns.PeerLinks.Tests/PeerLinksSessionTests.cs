using System.Buffers;
using Patterns.Messaging;
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

    /// <summary>JSON, except that the first body serialized holds the thread until <see cref="Release"/>, then fails.</summary>
    private sealed class HeldSerializer : IMessageSerializer
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
            throw new InvalidOperationException("The held message is not sent.");
        }

        public object Deserialize(ReadOnlyMemory<byte> payload, Type type) => _json.Deserialize(payload, type);
    }
}
