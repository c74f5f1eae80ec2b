using System.Buffers;
using System.Buffers.Binary;
using System.Reflection;
using Grpc.Core;
using Patterns.Messaging;
using Patterns.PeerLinks.Links;
using Patterns.PeerLinks.Wire;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>
/// Protocol 2's settlement frames without a network: plain acknowledgements share one sequenced
/// <see cref="FrameType.Settlements"/> frame, a link negotiates the protocol in its hello, and a replay after a
/// reconnect sends each acknowledgement once more in the frame it first went in (the receiver drops what it had).
/// </summary>
public sealed class PeerLinksSettlementFrameTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public void Hello_OfAProtocol1Node_HasNoVersion_AndIsReadAsProtocol1()
    {
        // Protocol 1's hello: node id, incarnation, last received, and nothing after them.
        var buffer = new ArrayBufferWriter<byte>();
        var w = new WireWriter(buffer);
        w.Byte((byte)FrameType.Hello);
        w.Int32(0);
        w.String("old");
        w.Guid(Guid.NewGuid());
        w.Int64(42);
        var frame = buffer.WrittenSpan.ToArray();
        BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(1), frame.Length - FrameLimits.FrameHeaderBytes);

        Hello? hello = null;
        Frames.Parse(frame, (_, body) => hello = Frames.ReadHello(body));

        hello!.Protocol.Should().Be(LinkProtocol.V1);
        hello.LastReceived.Should().Be(42);
    }

    [Fact]
    public void HelloAndItsAnswer_CarryTheProtocol()
    {
        var incarnation = Guid.NewGuid();
        Hello? hello = null;
        Frames.Parse(Frames.Hello(new Hello("a", incarnation, 7, LinkProtocol.V2)), (_, body) => hello = Frames.ReadHello(body));
        HelloAck? ack = null;
        Frames.Parse(Frames.HelloAck(new HelloAck("b", incarnation, true, 9, 3, [], LinkProtocol.V2)), (_, body) => ack = Frames.ReadHelloAck(body));

        hello.Should().Be(new Hello("a", incarnation, 7, LinkProtocol.V2));
        ack!.Protocol.Should().Be(LinkProtocol.V2);
        ack.LastReceived.Should().Be(9);
    }

    [Fact(Timeout = 60_000)]
    public async Task Session_OfProtocol2_PutsPlainAcksInOneFrame_AndEveryOtherSettlementInItsOwn()
    {
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, [Mesh.FreePort()]), loggerFactory: Mesh.Logs);
        var session = new PeerSession(node, "peer", Guid.NewGuid());
        session.UseProtocol(LinkProtocol.V2);
        session.UseProtocol(LinkProtocol.V1);
        session.Protocol.Should().Be(LinkProtocol.V2, "a session keeps the protocol of its first hello");

        session.Settle([PeerSession.Settled(1, Settlement.Ack), PeerSession.Settled(2, Settlement.Release("later")), PeerSession.Settled(3, Settlement.Ack)]);
        session.Settle(4, Settlement.Ack);
        var first = Drain(session.Settlements);
        session.Settle([PeerSession.Settled(5, Settlement.Ack)]);
        var second = Drain(session.Settlements);

        Read(first).Should().BeEquivalentTo(
            [(FrameType.Settlements, 1L, new long[] { 1, 3, 4 }), (FrameType.Settlement, 2L, new long[] { 2 })],
            o => o.WithStrictOrdering(),
            "the acknowledgements queued before the frame was written share it, the other settlement has its own");
        Read(second).Should().BeEquivalentTo(
            [(FrameType.Settlements, 3L, new long[] { 5 })],
            o => o.WithStrictOrdering(),
            "a frame once written never changes: a later acknowledgement starts a new one");
    }

    [Fact(Timeout = 60_000)]
    public async Task Session_OfProtocol1_SendsEverySettlementInItsOwnFrame()
    {
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, [Mesh.FreePort()]), loggerFactory: Mesh.Logs);
        var session = new PeerSession(node, "peer", Guid.NewGuid());
        session.UseProtocol(LinkProtocol.V1);

        session.Settle([PeerSession.Settled(1, Settlement.Ack), PeerSession.Settled(2, Settlement.Ack)]);
        session.Settle(3, Settlement.Ack);

        Read(Drain(session.Settlements)).Should().BeEquivalentTo(
            [(FrameType.Settlement, 1L, new long[] { 1 }), (FrameType.Settlement, 2L, new long[] { 2 }), (FrameType.Settlement, 3L, new long[] { 3 })],
            o => o.WithStrictOrdering());
    }

    [Fact]
    public void AckRuns_ReplayedAfterACut_ArriveOnceEach_AndAFullRunStartsAnother()
    {
        var sending = new OutboundSequence(long.MaxValue, () => { });
        sending.AppendAcks([.. Enumerable.Range(1, FrameLimits.MaxAcksPerFrame + 1).Select(i => (long)i)]);
        var cut = Drain(sending);

        // The connection drops before the peer acknowledged anything; a third run is queued meanwhile.
        sending.AppendAcks([5_000, 5_001]);
        sending.Rewind(0);
        var replay = Drain(sending);

        Read(cut).Select(f => (f.Seq, f.DataSeqs.Length)).Should().Equal((1L, FrameLimits.MaxAcksPerFrame), (2L, 1));
        var receiving = new InboundSequence(FrameLimits.MaxChunkBytes);
        var settled = new List<SettlementRecord>();
        foreach (var batch in new[] { cut, replay })
        {
            Frames.Parse(batch, (type, body) =>
            {
                type.Should().Be(FrameType.Settlements);
                receiving.Accept(body, (_, _, head, _) => Frames.ReadAckRun(head, settled));
            });
        }

        settled.Select(s => s.DataSeq).Should().Equal(Enumerable.Range(1, FrameLimits.MaxAcksPerFrame + 1).Select(i => (long)i).Append(5_000).Append(5_001), "nothing lost, nothing twice");
        settled.Should().OnlyContain(s => s.IsPlainAck);
    }

    [Theory]
    [InlineData((byte)SettlementKind.Retry, 1, 8)]
    [InlineData((byte)SettlementKind.Ack, 0, 0)]
    [InlineData((byte)SettlementKind.Ack, 2, 8)]
    [InlineData((byte)SettlementKind.Ack, FrameLimits.MaxAcksPerFrame + 1, 8 * (FrameLimits.MaxAcksPerFrame + 1))]
    public void AckRun_WithAnotherKindOrAWrongCount_IsMalformed(byte kind, int count, int seqBytes)
    {
        var head = new byte[5 + seqBytes];
        head[0] = kind;
        BinaryPrimitives.WriteInt32LittleEndian(head.AsSpan(1), count);
        for (var i = 5; i + 8 <= head.Length; i += 8)
        {
            BinaryPrimitives.WriteInt64LittleEndian(head.AsSpan(i), 1);
        }

        var reading = () => Frames.ReadAckRun(head, []);

        reading.Should().Throw<MalformedFrameException>();
    }

    [Fact]
    public void AckRun_WithAnInvalidSequenceNumber_IsMalformed_AndSettlesNone()
    {
        // Count and length are right; the second sequence number is not. The frame counts as received (the peer does not
        // send it again), so settling the numbers read before the bad one would apply half a malformed frame.
        var head = new byte[5 + 16];
        head[0] = (byte)SettlementKind.Ack;
        BinaryPrimitives.WriteInt32LittleEndian(head.AsSpan(1), 2);
        BinaryPrimitives.WriteInt64LittleEndian(head.AsSpan(5), 7);
        BinaryPrimitives.WriteInt64LittleEndian(head.AsSpan(13), 0);
        var records = new List<SettlementRecord>();

        var reading = () => Frames.ReadAckRun(head, records);

        reading.Should().Throw<MalformedFrameException>();
        records.Should().BeEmpty("a malformed frame is refused whole");
    }

    [Theory(Timeout = 120_000)]
    [InlineData(0)]
    [InlineData(1)]
    public async Task NodesOfProtocols1And2_Link_AndEverySettlementComesBack(int older)
    {
        // Node 0 dials node 1 and sends; the older node (dialler or listener) speaks protocol 1 and, like a node of that
        // version, closes the link on a Settlements frame. With a concurrency of one the credit is one, so every
        // message after the first is forwarded only once the previous one's settlement came back.
        await using var mesh = await Mesh.StartAsync(2, (i, o) => o.Protocol = i == older ? LinkProtocol.V1 : LinkProtocol.V2);
        var (sender, receiver) = (mesh.Nodes[0], mesh.Nodes[1]);
        var queue = $"protocol-{Guid.NewGuid():N}";
        const int count = 200;
        var handled = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await sender.DeclareQueueAsync(queue, new QueueSettings { Capacity = count });
        await receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue, Concurrency = 1 },
            (_, _) =>
            {
                if (Interlocked.Increment(ref handled) == count)
                {
                    done.TrySetResult();
                }

                return new(Settlement.Ack);
            });

        for (var i = 0; i < count; i++)
        {
            await sender.SendAsync(queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "protocol.message", Payload = new byte[16] });
        }

        await done.Task.WaitAsync(Bound);
        handled.Should().Be(count, "a node of protocol 1 given a Settlements frame closes the link and the credit is never freed");
    }

    [Fact(Timeout = 60_000)]
    public async Task Dialer_OneSettlementsFrame_CompletesEveryMessageItAcknowledges()
    {
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, [Mesh.FreePort()]), loggerFactory: Mesh.Logs);
        var link = new PeerLink(node, new Uri($"http://127.0.0.1:{Mesh.FreePort()}"));
        try
        {
            var forwarded = Enumerable.Range(0, 3).Select(_ => Forward(link)).ToList();
            forwarded.Should().OnlyContain(f => !f.IsCompleted, "each waits for the peer's settlement");

            var settlements = new OutboundSequence(long.MaxValue, () => { });
            settlements.AppendAcks([1, 2, 3]);
            var batch = FrameBatch.Rent();
            settlements.Fill(batch);

            var read = (Task)typeof(PeerLink).GetMethod("ReadControlAsync", BindingFlags.NonPublic | BindingFlags.Instance)!
                .Invoke(link, [new OneMessage(batch), CancellationToken.None])!;
            await read.WaitAsync(Bound);

            foreach (var f in forwarded)
            {
                (await f.AsTask().WaitAsync(Bound)).Kind.Should().Be(SettlementKind.Ack);
            }
        }
        finally
        {
            await link.DisposeAsync();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task BulkCalls_TheSecondOvertakenWhileWaitingForTheFirst_NeverReads_SoOneReaderAtATime()
    {
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, [Mesh.FreePort()]), loggerFactory: Mesh.Logs);
        var session = new PeerSession(node, "peer", Guid.NewGuid());

        // The first connection's reader is inside a read that ignores cancellation (a stream that is slow to notice).
        var first = new ScriptedStream();
        var firstCall = session.RunBulkAsync(first, CancellationToken.None);
        await first.Called.Task.WaitAsync(Bound);

        // A second connection arrives and waits for the first reader; a third arrives before the first reader returned.
        var second = new ScriptedStream();
        second.Next.SetResult(false);
        var secondCall = session.RunBulkAsync(second, CancellationToken.None);
        var third = new ScriptedStream();
        var thirdCall = session.RunBulkAsync(third, CancellationToken.None);

        first.Next.SetResult(false);
        await third.Called.Task.WaitAsync(Bound);
        var overtaken = async () => await secondCall.WaitAsync(Bound);
        (await overtaken.Should().ThrowAsync<RpcException>()).Which.StatusCode.Should().Be(StatusCode.Aborted, "an overtaken call ends with a clear status, not an OperationCanceledException the gRPC host logs as a handler error");
        await PeerSession.Quietly(firstCall).WaitAsync(Bound);

        second.Calls.Should().Be(0, "the second call was overtaken before it read: reading then would make two readers with the third");
        third.Calls.Should().Be(1);
        third.Next.SetResult(false);
        await thirdCall.WaitAsync(Bound);
    }

    private static byte[] Drain(OutboundSequence sequence)
    {
        var all = new List<byte>();
        var batch = FrameBatch.Rent();
        try
        {
            do
            {
                batch.Length = 0;
                sequence.Fill(batch);
                all.AddRange(batch.Span.ToArray());
            }
            while (batch.Length > 0);
        }
        finally
        {
            batch.Return();
        }

        return [.. all];
    }

    /// <summary>The sequenced settlement frames of a batch: type, sequence number and the data messages each settles.</summary>
    private static List<(FrameType Type, long Seq, long[] DataSeqs)> Read(byte[] batch)
    {
        var frames = new List<(FrameType, long, long[])>();
        Frames.Parse(batch, (type, body) =>
        {
            var seq = BinaryPrimitives.ReadInt64LittleEndian(body);
            var head = body[(FrameLimits.SequencedHeaderBytes + 4)..];
            if (type == FrameType.Settlements)
            {
                var records = new List<SettlementRecord>();
                Frames.ReadAckRun(head, records);
                frames.Add((type, seq, [.. records.Select(r => r.DataSeq)]));
            }
            else
            {
                frames.Add((type, seq, [Frames.ReadSettlement(head).DataSeq]));
            }
        });
        return frames;
    }

    private static ValueTask<Settlement> Forward(PeerLink link)
    {
        var proxyType = typeof(PeerLink).GetNestedType("Proxy", BindingFlags.NonPublic)!;
        var session = typeof(PeerLink).GetField("_session", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(link)!; // a proxy of the current session
        var proxy = Activator.CreateInstance(proxyType, link, new SubscriptionInfo(5, AddressKind.Queue, "settle.q", "settle.q", 1, false), session)!;
        var envelope = new Envelope { MessageId = Guid.NewGuid(), MessageType = "settle.message", Payload = new byte[100] };
        return (ValueTask<Settlement>)proxyType.GetMethod("Handler")!.Invoke(proxy, [envelope, CancellationToken.None])!;
    }

    private sealed class OneMessage(FrameBatch batch) : IAsyncStreamReader<FrameBatch>
    {
        private bool _read;

        public FrameBatch Current => batch;

        public Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            var first = !_read;
            _read = true;
            return Task.FromResult(first);
        }
    }

    /// <summary>A bulk stream whose first read the test ends (<see cref="Next"/>), ignoring cancellation; it counts reads.</summary>
    private sealed class ScriptedStream : IAsyncStreamReader<FrameBatch>
    {
        private int _calls;

        public TaskCompletionSource<bool> Next { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Called { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Calls => Volatile.Read(ref _calls);

        public FrameBatch Current => throw new InvalidOperationException("no message is ever read");

        public Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _calls);
            Called.TrySetResult();
            return Next.Task;
        }
    }
}
