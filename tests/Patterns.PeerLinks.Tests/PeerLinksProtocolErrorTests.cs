using System.Buffers.Binary;
using Grpc.Core;
using Grpc.Net.Client;
using Patterns.Messaging;
using Patterns.PeerLinks.Links;
using Patterns.PeerLinks.Wire;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>A peer that breaks the protocol, and a bulk connection replaced while it reads.</summary>
public sealed class PeerLinksProtocolErrorTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public void Ack_BeyondWhatWasSent_IsAProtocolError_AndLeavesTheOpenFrameToBeSent()
    {
        var sequence = new OutboundSequence(long.MaxValue, static () => { });
        sequence.AppendAcks([10]);

        // Sequence number 1 is all that was handed out. Taken as said, an acknowledgement of 5 dropped the open
        // acknowledgement run and moved the cursor past 5, so the acknowledgement added to that run next, and every frame
        // queued after it, was never written.
        var act = () => sequence.Ack(5);

        act.Should().Throw<MalformedFrameException>().WithMessage("*acknowledgement of sequence number 5*only up to 1 was sent*");
        sequence.AppendAcks([11]);
        sequence.Append(OutEntry.AckSettlement(12));
        Written(sequence).Should().Equal([1L, 2L], "the open run (10 and 11) and the frame queued after it still go out");
    }

    [Fact(Timeout = 60_000)]
    public async Task PeerAcknowledgingBeyondWhatWasSent_HasItsLinkClosed_WithALoggedProtocolError()
    {
        var logs = new ListLogs();
        var ports = new[] { Mesh.FreePort() };
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, ports), loggerFactory: logs.Factory);
        using var channel = GrpcChannel.ForAddress(node.ListenUri!);
        var session = Guid.NewGuid();
        using var call = channel.CreateCallInvoker().AsyncDuplexStreamingCall(
            LinkService.Control, null, new CallOptions(new LinkSecurity(Mesh.Options(0, ports)).Headers("buggy", session)));
        await WriteAsync(call.RequestStream, Frames.Hello(new Hello("buggy", session, 0, LinkProtocol.Current)));
        (await call.ResponseStream.MoveNext(CancellationToken.None).WaitAsync(Bound)).Should().BeTrue("the node answers the hello");
        call.ResponseStream.Current.Return();

        // The node has sent this session no settlement at all.
        await WriteAsync(call.RequestStream, Frames.Int64Frame(FrameType.Ack, 1_000));

        var closed = await ReadUntilClosedAsync(call.ResponseStream);
        closed.StatusCode.Should().Be(StatusCode.InvalidArgument);
        closed.Status.Detail.Should().Contain("acknowledgement of sequence number 1000").And.Contain("only up to 0 was sent");
        (await logs.WaitForAsync("malformed frame", Bound)).Should().Contain("buggy").And.Contain("sequence number 1000");
    }

    [Fact(Timeout = 180_000)]
    public async Task PeerRestarted_TheNewSessionsAcknowledgementsStartAgain_SoNoLinkIsClosedAsMalformed()
    {
        // Seen in the sample's CI log on every restart: "an acknowledgement of sequence number 4, but only up to 0 was
        // sent". The dialler's control writer kept the last acknowledgement of the lost session and wrote it first on the
        // new session's first connection, where the peer had sent nothing yet.
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        var senderLogs = new ListLogs();
        var receiverLogs = new ListLogs();
        var queue = $"restart-acks-{Guid.NewGuid():N}";
        await using var sender = await PeerLinksTransport.StartAsync(Mesh.Options(0, ports), loggerFactory: senderLogs.Factory);
        await sender.DeclareQueueAsync(queue, new QueueSettings { Capacity = 100 });
        var receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports), loggerFactory: receiverLogs.Factory);
        try
        {
            await HandleThreeAsync(sender, receiver, queue);
            var down = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            sender.Membership.PeerChanged += (_, changed) =>
            {
                if (changed.Peer.State == PeerState.Down)
                {
                    down.TrySetResult();
                }
            };
            await receiver.DisposeAsync();
            await down.Task.WaitAsync(Bound);

            // The same node id at the same address, a new incarnation: the sender's link starts a new session there.
            receiverLogs = new ListLogs();
            receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports), loggerFactory: receiverLogs.Factory);
            await HandleThreeAsync(sender, receiver, queue);

            // The restarted node read every control frame of the new session up to an acknowledgement of all it settled,
            // so a stale acknowledgement written ahead of them would have closed the link and been logged by now.
            receiverLogs.Lines.Should().NotContain(l => l.Contains("malformed", StringComparison.OrdinalIgnoreCase));
            senderLogs.Lines.Should().NotContain(l => l.Contains("malformed", StringComparison.OrdinalIgnoreCase));
        }
        finally
        {
            await receiver.DisposeAsync();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task BulkReader_EndedMidReadByANewerCall_EndsAborted_NotWithAnErrorTheHostLogs()
    {
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, [Mesh.FreePort()]), loggerFactory: Mesh.Logs);
        var session = new PeerSession(node, "peer", Guid.NewGuid());

        // The first connection's reader waits inside a read that ends when it is cancelled, as a gRPC stream's does.
        var first = new WaitingStream();
        var firstCall = session.RunBulkAsync(first, CancellationToken.None);
        await first.Reading.Task.WaitAsync(Bound);

        var second = new WaitingStream();
        var secondCall = session.RunBulkAsync(second, CancellationToken.None);
        await second.Reading.Task.WaitAsync(Bound);

        // Before: the first call ended with the read's OperationCanceledException while its request was alive, which
        // the gRPC host logs as an error executing the service method. Now: Aborted, which it logs at information level.
        var replaced = async () => await firstCall.WaitAsync(Bound);
        (await replaced.Should().ThrowAsync<RpcException>()).Which.StatusCode.Should().Be(StatusCode.Aborted);
        second.End();
        await secondCall.WaitAsync(Bound);
    }

    /// <summary>
    /// Sends three messages from <paramref name="sender"/> to a consumer on <paramref name="receiver"/> once it is known, waits
    /// until they are handled and until the receiver has had every settlement it sent the sender acknowledged.
    /// </summary>
    private static async Task HandleThreeAsync(PeerLinksTransport sender, PeerLinksTransport receiver, string queue)
    {
        var handled = 0;
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await receiver.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue }, (_, _) =>
        {
            if (Interlocked.Increment(ref handled) == 3)
            {
                all.TrySetResult();
            }

            return new(Settlement.Ack);
        });
        await Mesh.UntilAsync(() => sender.Links[0].HasQueueConsumer(queue), "the receiver's consumer to be known to the sender");
        for (var i = 0; i < 3; i++)
        {
            await sender.SendAsync(queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "restart.acks", Payload = new byte[8] });
        }

        await all.Task.WaitAsync(Bound);
        await Mesh.UntilAsync(
            () => receiver.Sessions.Any(s => s.NodeId == sender.NodeId && s.Settlements.LastAssigned > 0 && s.Settlements.Bytes == 0),
            "the receiver's settlements to be acknowledged by the sender");
    }

    private static async Task WriteAsync(IClientStreamWriter<FrameBatch> stream, byte[] frame)
    {
        var batch = FrameBatch.Rent();
        try
        {
            frame.CopyTo(batch.Buffer, 0);
            batch.Length = frame.Length;
            await stream.WriteAsync(batch);
        }
        finally
        {
            batch.Return();
        }
    }

    private static async Task<RpcException> ReadUntilClosedAsync(IAsyncStreamReader<FrameBatch> responses)
    {
        try
        {
            // Pongs or announcements may come first; the call's status follows them.
            while (await responses.MoveNext(CancellationToken.None).WaitAsync(Bound))
            {
                responses.Current.Return();
            }
        }
        catch (RpcException ex)
        {
            return ex;
        }

        throw new InvalidOperationException("The node ended the call without an error status.");
    }

    /// <summary>The sequence numbers of the frames the sequence writes next.</summary>
    private static List<long> Written(OutboundSequence sequence)
    {
        var seqs = new List<long>();
        var batch = FrameBatch.Rent();
        try
        {
            sequence.Fill(batch);
            Frames.Parse(batch.Span, (_, body) => seqs.Add(BinaryPrimitives.ReadInt64LittleEndian(body)));
        }
        finally
        {
            batch.Return();
        }

        return seqs;
    }

    /// <summary>A bulk stream whose reads wait until cancelled (or <see cref="End"/>), as a live gRPC stream's do.</summary>
    private sealed class WaitingStream : IAsyncStreamReader<FrameBatch>
    {
        private readonly TaskCompletionSource<bool> _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Reading { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public FrameBatch Current => throw new InvalidOperationException("no message is ever read");

        public void End() => _ended.TrySetResult(false);

        public Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            Reading.TrySetResult();
            return _ended.Task.WaitAsync(cancellationToken);
        }
    }
}
