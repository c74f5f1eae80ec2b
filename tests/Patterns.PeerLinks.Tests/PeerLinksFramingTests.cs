using System.Buffers;
using System.Buffers.Binary;
using Grpc.Core;
using Patterns.PeerLinks.Links;
using Patterns.PeerLinks.Wire;

namespace Patterns.PeerLinks.Tests;

/// <summary>
/// The bulk stream's framing without a network: many envelopes packed into each gRPC message by the one writer, chunks
/// of large ones, and what a connection cut between (or inside) gRPC messages does to the sequence.
/// </summary>
public sealed class PeerLinksFramingTests
{
    private const int Subscription = 7;

    [Theory]
    [InlineData(1L)]
    [InlineData(123_456_789_012L)]
    public void AckSettlement_WrittenWhenItsFrameIsCut_IsTheSameFrameAsTheEncodedOne(long dataSeq)
    {
        // A plain acknowledgement's settlement is written into the batch without an array of its own; a peer must see
        // exactly the bytes of the encoded settlement (the wire format does not change).
        var written = FillOne(OutEntry.AckSettlement(dataSeq));
        var encoded = FillOne(new OutEntry(FrameType.Settlement, 0, Frames.SettlementHead(dataSeq, Patterns.Transport.Settlement.Ack), ReadOnlySequence<byte>.Empty));

        written.Should().Equal(encoded);
        PeerSession.SettlementEntry(dataSeq, Patterns.Transport.Settlement.Ack).HeadLength.Should().Be(Frames.AckSettlementHeadBytes, "a plain acknowledgement takes the array-free entry");
        PeerSession.SettlementEntry(dataSeq, Patterns.Transport.Settlement.Release("later")).HeadLength.Should().BeGreaterThan(Frames.AckSettlementHeadBytes, "any other settlement is encoded with its fields");
        var record = default(SettlementRecord);
        Frames.Parse(written, (type, body) => new InboundSequence(1024).Accept(body, (_, _, head, _) => record = Frames.ReadSettlement(head)));
        record.Should().Be(new SettlementRecord(dataSeq, Patterns.Transport.SettlementKind.Ack, TimeSpan.Zero, null, null, null));
    }

    [Fact]
    public void RepeatedMessageTypes_AreDecodedOnce_AndAChangedOneIsDecodedAgain()
    {
        var strings = new DecodedStrings();
        static byte[] Header(string type, string? replyTo)
        {
            var buffer = new ArrayBufferWriter<byte>();
            EnvelopeCodec.WriteHeader(buffer, new Patterns.Messaging.Envelope { MessageId = Guid.NewGuid(), MessageType = type, ReplyTo = replyTo }, "application/json");
            return buffer.WrittenSpan.ToArray();
        }

        var first = EnvelopeCodec.Read(Header("orders.placed", "replies.a"), ReadOnlySequence<byte>.Empty, strings);
        var second = EnvelopeCodec.Read(Header("orders.placed", "replies.a"), ReadOnlySequence<byte>.Empty, strings);
        var other = EnvelopeCodec.Read(Header("orders.shipped", "replies.b"), ReadOnlySequence<byte>.Empty, strings);
        var back = EnvelopeCodec.Read(Header("orders.placed", null), ReadOnlySequence<byte>.Empty, strings);

        second.MessageType.Should().BeSameAs(first.MessageType, "the same bytes reuse the string decoded last");
        second.ContentType.Should().BeSameAs(first.ContentType);
        second.ReplyTo.Should().BeSameAs(first.ReplyTo);
        other.MessageType.Should().Be("orders.shipped");
        other.ReplyTo.Should().Be("replies.b");
        back.MessageType.Should().Be("orders.placed");
        back.ReplyTo.Should().BeNull();
    }

    private static byte[] FillOne(OutEntry entry)
    {
        var sequence = new OutboundSequence(long.MaxValue, () => { });
        sequence.Append(entry);
        var batch = FrameBatch.Rent();
        try
        {
            sequence.Fill(batch);
            return batch.Span.ToArray();
        }
        finally
        {
            batch.Return();
        }
    }

    [Fact]
    public void SmallMessages_ManyPerBatch_ArriveOnceInOrder()
    {
        var sending = Sequence();
        for (var i = 1; i <= 1_000; i++)
        {
            sending.Append(Entry(i, 100));
        }

        var batches = FillAll(sending);
        batches.Should().HaveCount(3, "1,000 frames of 133 bytes take three gRPC messages of at most 64 KiB: not one write per message");
        batches.Should().OnlyContain(b => b.Length <= FrameBatch.MaxBytes);

        var receiving = new Receiver();
        batches.ForEach(receiving.Accept);
        receiving.Seqs.Should().Equal(Enumerable.Range(1, 1_000).Select(i => (long)i));
        receiving.Markers.Should().Equal(Enumerable.Range(1, 1_000));
    }

    [Fact]
    public void PartialBatch_WhatIsQueuedGoesOutAtOnce_AndNothingIsLeftBehind()
    {
        var sending = Sequence();
        sending.Append(Entry(1, 100));
        sending.Append(Entry(2, 100));
        sending.Append(Entry(3, 100));

        var batch = FrameBatch.Rent();
        sending.Fill(batch);
        var first = batch.Span.ToArray();
        batch.Length = 0;
        sending.Fill(batch);
        batch.Length.Should().Be(0, "all three fitted in the first batch");
        batch.Return();

        var receiving = new Receiver();
        receiving.Accept(first);
        receiving.Markers.Should().Equal(1, 2, 3);
        sending.HasUnsent.Should().BeFalse();
    }

    [Fact]
    public void LargeEnvelope_CrossesTheGrpcMessageLimit_InChunks_BetweenSmallOnes()
    {
        var sending = Sequence();
        sending.Append(Entry(1, 100));
        sending.Append(Entry(2, 200_000));
        sending.Append(Entry(3, 100));

        var batches = FillAll(sending);
        batches.Should().HaveCountGreaterThan(3, "200,000 bytes do not fit in one 64 KiB gRPC message");
        batches.Should().OnlyContain(b => b.Length <= FrameBatch.MaxBytes);
        var frames = batches.SelectMany(Frame).ToList();
        frames.Should().OnlyContain(f => f.Length <= FrameLimits.SequencedHeaderBytes + FrameLimits.MaxChunkBytes);

        var receiving = new Receiver();
        batches.ForEach(receiving.Accept);
        receiving.Markers.Should().Equal(1, 2, 3);
        receiving.Lengths.Should().Equal(100, 200_000, 100);
        receiving.Exact.Should().BeTrue();
    }

    [Fact]
    public void ConnectionCut_AfterPartOfALargeMessage_ReconnectReplaysFromTheLastWholeMessage_NothingLostOrDuplicated()
    {
        var sending = Sequence();
        for (var i = 1; i <= 300; i++)
        {
            sending.Append(Entry(i, i == 150 ? 150_000 : 100));
        }

        var batches = FillAll(sending);
        var receiving = new Receiver();

        // The connection drops after the gRPC messages that carry the first chunks of message 150 (and what precedes it);
        // the rest were on the wire and are lost with it.
        var cut = batches.FindIndex(b => Frame(b).Any(f => Seq(f) == 150)) + 1;
        batches.Take(cut).ToList().ForEach(receiving.Accept);
        receiving.Seqs.Should().Equal(Enumerable.Range(1, 149).Select(i => (long)i), "message 150 arrived only in part, so it is not handed on");

        // A new connection: the receiver forgets the half message, and the sender goes back to what it last received.
        receiving.Inbound.ResetPartial();
        sending.Rewind(receiving.Inbound.LastReceived);
        FillAll(sending).ForEach(receiving.Accept);

        receiving.Seqs.Should().Equal(Enumerable.Range(1, 300).Select(i => (long)i));
        receiving.Markers.Should().Equal(Enumerable.Range(1, 300));
        receiving.Exact.Should().BeTrue();
    }

    [Fact]
    public void ConnectionCut_WithWholeBatchesInFlight_ReplaysThem_AndRepeatsAreDropped()
    {
        var sending = Sequence();
        for (var i = 1; i <= 1_000; i++)
        {
            sending.Append(Entry(i, 100));
        }

        var batches = FillAll(sending);
        batches.Should().HaveCountGreaterThan(1);
        var receiving = new Receiver();
        receiving.Accept(batches[0]);
        var received = receiving.Inbound.LastReceived;
        received.Should().BeInRange(1, 999);

        // Acknowledged up to half of what arrived (the later acknowledgement was lost with the connection): the replay
        // sends again what the receiver already has, and the receiver drops those repeats by sequence number.
        sending.Ack(received / 2);
        receiving.Inbound.ResetPartial();
        sending.Rewind(received / 2);
        FillAll(sending).ForEach(receiving.Accept);

        receiving.Seqs.Should().Equal(Enumerable.Range(1, 1_000).Select(i => (long)i));
    }

    [Fact(Timeout = 30_000)]
    public async Task Writer_OneMessage_IsWrittenWithoutWaitingForABatch_AndAcksGoFirst()
    {
        var writer = LinkWriter.ForControl();
        var sending = new OutboundSequence(4 * 1024 * 1024, writer.Wake);
        writer.Sequence = sending;
        var stream = new CapturingStream();
        using var stop = new CancellationTokenSource();
        var running = writer.RunAsync(stream, stop.Token);

        writer.Acknowledge(41);
        sending.Append(Entry(1, 100));
        var written = await stream.Next.WaitAsync(TimeSpan.FromSeconds(25));
        while (!Frame(written).Any(f => f.Type == FrameType.Data))
        {
            // The acknowledgement may have gone out alone, just before the message was queued.
            written = await stream.Next.WaitAsync(TimeSpan.FromSeconds(25));
        }

        var frames = Frame(written).ToList();
        frames.Last().Type.Should().Be(FrameType.Data);
        Seq(frames.Last()).Should().Be(1);
        lock (stream.Writes)
        {
            stream.Writes.SelectMany(Frame).Count(f => f.Type == FrameType.Ack).Should().Be(1);
        }

        await stop.CancelAsync();
        await running.ContinueWith(static _ => { }, TaskScheduler.Default);
    }

    [Fact(Timeout = 30_000)]
    public async Task Writer_ControlFrameQueuedBehindThousandsOfSequencedFrames_GoesOutInTheNextGrpcMessage()
    {
        // A receiving node's one control writer carries its settlements (a sequence) and its pongs and announcements
        // (control frames): a control frame must never wait for the sequence to drain.
        var writer = LinkWriter.ForControl();
        var sending = new OutboundSequence(long.MaxValue, writer.Wake);
        writer.Sequence = sending;
        const int queued = 2_000;
        for (var i = 1; i <= queued; i++)
        {
            sending.Append(Entry(i, 1024));
        }

        var stream = new GatedStream();
        using var stop = new CancellationTokenSource();
        var running = writer.RunAsync(stream, stop.Token);

        // The first gRPC message is being written (held by the stream) when the ping is queued.
        var first = await stream.Next.WaitAsync(TimeSpan.FromSeconds(25));
        writer.Enqueue(Frames.Int64Frame(FrameType.Ping, 42));
        stream.Release();
        var second = await stream.Next.WaitAsync(TimeSpan.FromSeconds(25));

        var before = Frame(first).Count(f => f.Type == FrameType.Data);
        var next = Frame(second).ToList();
        next[0].Type.Should().Be(FrameType.Ping, "a control frame goes before the sequenced frames still queued");
        BinaryPrimitives.ReadInt64LittleEndian(next[0].Body).Should().Be(42);
        before.Should().BeInRange(1, FrameBatch.MaxBytes / 1024, "only the one gRPC message already being written went out ahead of the ping");
        (queued - before).Should().BeGreaterThan(1_900, "almost all the sequenced frames were still queued when the ping overtook them");

        await stop.CancelAsync();
        await running.ContinueWith(static _ => { }, TaskScheduler.Default);
    }

    [Theory(Timeout = 30_000)]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Writer_OnASaturatedLink_ABulkWriterHandsItsThreadBackAfterEachGrpcMessage(bool bulk)
    {
        // Every write completes at once and the queue holds twenty gRPC messages (a saturated link). A bulk writer must
        // not keep its thread until the queue is empty: after each message it queues the rest of its work behind what
        // is already queued (here, one work item standing for the control streams' pongs and acknowledgements). The
        // control writer keeps writing (its frames are few and must not wait).
        var context = new QueuedContext();
        var previous = SynchronizationContext.Current;
        var writer = bulk ? LinkWriter.ForBulk() : LinkWriter.ForControl();
        var sending = new OutboundSequence(long.MaxValue, writer.Wake);
        writer.Sequence = sending;
        const int messages = 20;
        for (var i = 1; i <= messages; i++)
        {
            sending.Append(Entry(i, FrameLimits.MaxChunkBytes - 4));
        }

        var stream = new CapturingStream();
        using var stop = new CancellationTokenSource();
        Task running;
        var writtenBeforeOther = -1;
        SynchronizationContext.SetSynchronizationContext(context);
        try
        {
            context.Post(_ => writtenBeforeOther = stream.Writes.Count, null);
            running = writer.RunAsync(stream, stop.Token);
            context.RunUntilEmpty();
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }

        stream.Writes.Should().HaveCount(messages, "the writer went on after each hand-back until the queue was empty");
        if (bulk)
        {
            writtenBeforeOther.Should().Be(1, "the work already queued ran after the bulk writer's first message, before its second");
        }
        else
        {
            writtenBeforeOther.Should().Be(messages, "a control writer drains its queue without handing its thread back");
        }

        await stop.CancelAsync();
        await running.ContinueWith(static _ => { }, TaskScheduler.Default);
    }

    [Fact(Timeout = 30_000)]
    public async Task Writer_ALoneBulkMessage_IsWrittenWithoutHandingTheThreadBack()
    {
        // A request with nothing queued behind it (one outstanding): the bulk writer writes it and goes back to waiting
        // for more, without queuing a hand-back on the pool (that would cost a hop on every lone request).
        var context = new QueuedContext();
        var previous = SynchronizationContext.Current;
        var writer = LinkWriter.ForBulk();
        var sending = new OutboundSequence(long.MaxValue, writer.Wake);
        writer.Sequence = sending;
        sending.Append(Entry(1, 100));
        var stream = new CapturingStream();
        using var stop = new CancellationTokenSource();
        Task running;
        SynchronizationContext.SetSynchronizationContext(context);
        try
        {
            running = writer.RunAsync(stream, stop.Token);
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }

        stream.Writes.Should().HaveCount(1);
        context.Pending.Should().Be(0, "nothing followed the message, so the writer did not hand its thread back");

        await stop.CancelAsync();
        await running.ContinueWith(static _ => { }, TaskScheduler.Default);
    }

    [Fact(Timeout = 30_000)]
    public async Task BulkReader_MessagesAlreadyBuffered_AreReadOneAtATimeBehindTheWorkQueuedMeanwhile()
    {
        // The receiving end of a saturated bulk stream: every message is buffered before it is asked for. The reader
        // hands its thread back before each one it gets without waiting, so work already queued (a control stream's
        // pong) runs before the next bulk message, not after the whole buffer.
        var context = new QueuedContext();
        var previous = SynchronizationContext.Current;
        var stream = new BufferedStream(20);
        var read = 0;
        var readBeforeOther = -1;
        Task reading;
        SynchronizationContext.SetSynchronizationContext(context);
        try
        {
            context.Post(_ => readBeforeOther = read, null);
            reading = ReadAll();
            context.RunUntilEmpty();
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }

        await reading.WaitAsync(TimeSpan.FromSeconds(10));
        read.Should().Be(20);
        readBeforeOther.Should().Be(0, "the reader queued its work behind what was already queued before it took a buffered message");

        Task ReadAll() => PeerSession.ReadEachFairlyAsync(stream, _ => read++, CancellationToken.None);
    }

    [Fact(Timeout = 30_000)]
    public async Task BulkReader_CancelledWhileItHandsItsThreadBack_HandlesNoFurtherMessage()
    {
        // The connection goes while the reader waits behind the pool's queue with a message already read: that message
        // is not handled (its frames would be parsed and acknowledged for a connection that has ended).
        var context = new QueuedContext();
        var previous = SynchronizationContext.Current;
        var stream = new BufferedStream(20);
        var handled = 0;
        using var stop = new CancellationTokenSource();
        Task reading;
        SynchronizationContext.SetSynchronizationContext(context);
        try
        {
            reading = PeerSession.ReadEachFairlyAsync(stream, _ => handled++, stop.Token);
            context.Pending.Should().Be(1, "the first message was buffered, so the reader handed its thread back before it");
            stop.Cancel();
            context.RunUntilEmpty();
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }

        await reading.ContinueWith(static _ => { }, TaskScheduler.Default);
        reading.IsCanceled.Should().BeTrue();
        handled.Should().Be(0, "the reader was cancelled before it handled the message it had read");
    }

    [Fact(Timeout = 30_000)]
    public async Task BulkReader_ALoneMessageAfterAWait_IsHandledWithoutHandingTheThreadBack()
    {
        // One request at a time: the reader waits for each message. It handles one it waited for at once, on the thread
        // that delivered it, without queuing a hand-back (that would cost a hop on every lone request).
        var stream = new WaitingStream();
        var handled = 0;
        var previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(null);
        Task reading;
        try
        {
            reading = PeerSession.ReadEachFairlyAsync(stream, _ => handled++, CancellationToken.None);
            stream.Deliver(true);
            handled.Should().Be(1, "the message was handled on the delivering thread, with no hand-back before it");
            stream.Deliver(true);
            handled.Should().Be(2);
            stream.Deliver(false);
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }

        await reading.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact(Timeout = 30_000)]
    public async Task Writer_FramesQueuedWhileABulkWriterHandsItsThreadBack_JoinTheMessageItWritesNext()
    {
        // The first gRPC message is written without waiting and a second, not full, follows it: the writer hands its
        // thread back before it, and a frame queued meanwhile goes out in that second message, not in a third.
        var context = new QueuedContext();
        var previous = SynchronizationContext.Current;
        var writer = LinkWriter.ForBulk();
        var sending = new OutboundSequence(long.MaxValue, writer.Wake);
        writer.Sequence = sending;
        const int small = 100;
        var perMessage = FrameBatch.MaxBytes / (FrameLimits.FrameHeaderBytes + FrameLimits.SequencedHeaderBytes + Entry(0, small).Total);
        var queued = perMessage + (perMessage / 2);
        for (var i = 1; i <= queued; i++)
        {
            sending.Append(Entry(i, small));
        }

        var stream = new CapturingStream();
        using var stop = new CancellationTokenSource();
        Task running;
        SynchronizationContext.SetSynchronizationContext(context);
        try
        {
            context.Post(_ => sending.Append(Entry(queued + 1, small)), null);
            running = writer.RunAsync(stream, stop.Token);
            context.RunUntilEmpty();
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }

        stream.Writes.Should().HaveCount(2, "the frame queued during the hand-back joined the second message");
        Frame(stream.Writes[1]).Select(Seq).Should().Contain(queued + 1);

        await stop.CancelAsync();
        await running.ContinueWith(static _ => { }, TaskScheduler.Default);
    }

    [Fact(Timeout = 30_000)]
    public async Task Link_WritesItsBulkStreamWithABulkWriter_AndItsControlStreamWithAControlWriter()
    {
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, ports));
        var (control, bulk) = node.Links[0].Writers;

        bulk.YieldsEachMessage.Should().BeTrue("the bulk stream hands its thread back between back-to-back messages");
        control.YieldsEachMessage.Should().BeFalse("the control stream's few frames never wait behind the pool's queue");
    }

    private static OutboundSequence Sequence() => new(64 * 1024 * 1024, static () => { });

    /// <summary>A message whose payload starts with its marker and goes on with bytes derived from it.</summary>
    private static OutEntry Entry(int marker, int length)
    {
        var payload = new byte[length];
        BinaryPrimitives.WriteInt32LittleEndian(payload, marker);
        for (var i = 4; i < length; i++)
        {
            payload[i] = (byte)(marker + i);
        }

        // [headLength:4][head]: an empty head.
        return new OutEntry(FrameType.Data, Subscription, new byte[4], new ReadOnlySequence<byte>(payload));
    }

    private static List<byte[]> FillAll(OutboundSequence sequence)
    {
        var batches = new List<byte[]>();
        var batch = FrameBatch.Rent();
        while (true)
        {
            batch.Length = 0;
            sequence.Fill(batch);
            if (batch.Length == 0)
            {
                batch.Return();
                return batches;
            }

            batches.Add(batch.Span.ToArray());
        }
    }

    private static IEnumerable<(FrameType Type, byte[] Body, int Length)> Frame(byte[] batch)
    {
        var frames = new List<(FrameType, byte[], int)>();
        Frames.Parse(batch, (type, body) => frames.Add((type, body.ToArray(), body.Length)));
        return frames;
    }

    private static long Seq((FrameType Type, byte[] Body, int Length) frame) => BinaryPrimitives.ReadInt64LittleEndian(frame.Body);

    private sealed class Receiver
    {
        public InboundSequence Inbound { get; } = new(16 * 1024 * 1024);

        public List<long> Seqs { get; } = [];

        public List<int> Markers { get; } = [];

        public List<int> Lengths { get; } = [];

        public bool Exact { get; private set; } = true;

        public void Accept(byte[] batch) => Frames.Parse(batch, (type, body) =>
        {
            type.Should().Be(FrameType.Data);
            Inbound.Accept(body, (seq, subscription, head, payload) =>
            {
                subscription.Should().Be(Subscription);
                head.Length.Should().Be(0);
                var bytes = payload.ToArray();
                var marker = BinaryPrimitives.ReadInt32LittleEndian(bytes);
                for (var i = 4; i < bytes.Length; i++)
                {
                    Exact &= bytes[i] == (byte)(marker + i);
                }

                Seqs.Add(seq);
                Markers.Add(marker);
                Lengths.Add(bytes.Length);
            });
        });
    }

    /// <summary>A gRPC stream whose every write stays pending until the test releases it (a slow connection).</summary>
    private sealed class GatedStream : IAsyncStreamWriter<FrameBatch>
    {
        private readonly System.Threading.Channels.Channel<byte[]> _written = System.Threading.Channels.Channel.CreateUnbounded<byte[]>();
        private readonly SemaphoreSlim _gate = new(0);

        public WriteOptions? WriteOptions { get; set; }

        public Task<byte[]> Next => _written.Reader.ReadAsync().AsTask();

        public void Release() => _gate.Release();

        public Task WriteAsync(FrameBatch message) => WriteAsync(message, CancellationToken.None);

        public async Task WriteAsync(FrameBatch message, CancellationToken cancellationToken)
        {
            _written.Writer.TryWrite(message.Span.ToArray());
            await _gate.WaitAsync(cancellationToken);
        }
    }

    /// <summary>A gRPC stream whose next messages are always already buffered.</summary>
    private sealed class BufferedStream(int count) : IAsyncStreamReader<FrameBatch>
    {
        private int _left = count;

        public FrameBatch Current { get; private set; } = null!;

        public Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            Current = FrameBatch.Wrap([1]);
            return Task.FromResult(_left-- > 0);
        }
    }

    /// <summary>A gRPC stream whose every message is waited for: the test delivers each one.</summary>
    private sealed class WaitingStream : IAsyncStreamReader<FrameBatch>
    {
        private TaskCompletionSource<bool>? _next;

        public FrameBatch Current { get; private set; } = null!;

        public Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            _next = new TaskCompletionSource<bool>();
            return _next.Task;
        }

        public void Deliver(bool more)
        {
            Current = FrameBatch.Wrap([1]);
            _next!.SetResult(more);
        }
    }

    /// <summary>A context that queues what is posted to it and runs it on the test's thread, in order.</summary>
    private sealed class QueuedContext : SynchronizationContext
    {
        private readonly Queue<(SendOrPostCallback Callback, object? State)> _queued = new();

        public int Pending => _queued.Count;

        public override void Post(SendOrPostCallback d, object? state) => _queued.Enqueue((d, state));

        public void RunUntilEmpty()
        {
            for (var i = 0; i < 1_000 && _queued.TryDequeue(out var item); i++)
            {
                item.Callback(item.State);
            }

            _queued.Should().BeEmpty("the work ends");
        }
    }

    /// <summary>A gRPC request stream that keeps a copy of each message written.</summary>
    private sealed class CapturingStream : IAsyncStreamWriter<FrameBatch>
    {
        private readonly System.Threading.Channels.Channel<byte[]> _written = System.Threading.Channels.Channel.CreateUnbounded<byte[]>();

        public List<byte[]> Writes { get; } = [];

        public WriteOptions? WriteOptions { get; set; }

        public Task<byte[]> Next => _written.Reader.ReadAsync().AsTask();

        public Task WriteAsync(FrameBatch message, CancellationToken cancellationToken) => WriteAsync(message);

        public Task WriteAsync(FrameBatch message)
        {
            var copy = message.Span.ToArray();
            lock (Writes)
            {
                Writes.Add(copy);
            }

            _written.Writer.TryWrite(copy);
            return Task.CompletedTask;
        }
    }
}
