using System.Buffers;
using System.Buffers.Binary;
using Patterns.Transport;

namespace Patterns.PeerLinks.Wire;

/// <summary>
/// One subscription a node announces to its peers: the credit is how many of its messages a peer may have in flight
/// to it at once; the capacity and full mode bound the peer's buffer for it, as they bound the subscription's own.
/// </summary>
internal sealed record SubscriptionInfo(long Id, AddressKind Kind, string Address, string Group, int Credit, bool Temporary, int Capacity = 1024, QueueFullMode FullMode = QueueFullMode.Wait);

internal sealed record Hello(string NodeId, Guid Incarnation, long LastReceived, int Protocol = LinkProtocol.V1);

internal sealed record HelloAck(string NodeId, Guid Incarnation, bool Resumed, long LastReceived, long Version, IReadOnlyList<SubscriptionInfo> Subscriptions, int Protocol = LinkProtocol.V1);

internal readonly record struct SettlementRecord(long DataSeq, SettlementKind Kind, TimeSpan Delay, string? Reason, string? ExceptionType, string? ExceptionMessage, bool Deferred = false)
{
    /// <summary>Gets a value indicating whether this is an acknowledgement (it completes as <see cref="Settlement.Ack"/>, whatever else it carries).</summary>
    public bool IsPlainAck => Kind == SettlementKind.Ack;

    /// <summary>Gets a value indicating whether this is the default record (a slot no record was put in).</summary>
    public bool IsEmpty => DataSeq == 0;
}

/// <summary>Called for each frame of a batch.</summary>
internal delegate void FrameReceived(FrameType type, ReadOnlySpan<byte> body);

/// <summary>Encodes and decodes the link protocol's frames.</summary>
internal static class Frames
{
    private const byte DeferralFlag = 0x80;

    public static byte[] Hello(Hello hello) => Build(FrameType.Hello, hello, static (w, h) =>
    {
        w.String(h.NodeId);
        w.Guid(h.Incarnation);
        w.Int64(h.LastReceived);

        // Protocol 2 on: appended, so a node of protocol 1 (which reads no further) ignores it.
        w.Int32(h.Protocol);
    });

    public static Hello ReadHello(ReadOnlySpan<byte> body)
    {
        var r = new WireReader(body);
        var node = r.String() ?? throw new MalformedFrameException("a hello without a node id");
        var incarnation = r.Guid();
        var last = r.Int64();
        return new Hello(node, incarnation, last, ReadProtocol(ref r));
    }

    public static byte[] HelloAck(HelloAck ack) => Build(FrameType.HelloAck, ack, static (w, a) =>
    {
        w.String(a.NodeId);
        w.Guid(a.Incarnation);
        w.Byte(a.Resumed ? (byte)1 : (byte)0);
        w.Int64(a.LastReceived);
        WriteSubscriptions(w, a.Version, a.Subscriptions);
        w.Int32(a.Protocol);
    });

    public static HelloAck ReadHelloAck(ReadOnlySpan<byte> body)
    {
        var r = new WireReader(body);
        var node = r.String() ?? throw new MalformedFrameException("a hello acknowledgement without a node id");
        var incarnation = r.Guid();
        var resumed = r.Byte() == 1;
        var last = r.Int64();
        var (version, subscriptions) = ReadSubscriptions(ref r);
        return new HelloAck(node, incarnation, resumed, last, version, subscriptions, ReadProtocol(ref r));
    }

    /// <summary>The protocol version a hello or its answer ends with; absent (a node of protocol 1), it is 1.</summary>
    private static int ReadProtocol(ref WireReader r)
    {
        if (r.Remaining == 0)
        {
            return LinkProtocol.V1;
        }

        var protocol = r.Int32();
        return protocol >= LinkProtocol.V1 ? protocol : throw new MalformedFrameException($"protocol version {protocol}");
    }

    public static byte[] Announce(long version, IReadOnlyList<SubscriptionInfo> subscriptions) =>
        Build(FrameType.Announce, (version, subscriptions), static (w, s) => WriteSubscriptions(w, s.version, s.subscriptions));

    public static (long Version, IReadOnlyList<SubscriptionInfo> Subscriptions) ReadAnnounce(ReadOnlySpan<byte> body)
    {
        var r = new WireReader(body);
        return ReadSubscriptions(ref r);
    }

    public static byte[] Int64Frame(FrameType type, long value)
    {
        var frame = new byte[FrameLimits.FrameHeaderBytes + 8];
        frame[0] = (byte)type;
        BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(1), 8);
        BinaryPrimitives.WriteInt64LittleEndian(frame.AsSpan(5), value);
        return frame;
    }

    public static long ReadInt64(ReadOnlySpan<byte> body) =>
        body.Length == 8 ? BinaryPrimitives.ReadInt64LittleEndian(body) : throw new MalformedFrameException($"an 8-byte frame of {body.Length} bytes");

    /// <summary>The bytes of a plain acknowledgement's settlement head (<see cref="SettlementHead"/> of <see cref="Settlement.Ack"/>).</summary>
    public const int AckSettlementHeadBytes = 4 + 8 + 1 + 8 + (3 * 4);

    /// <summary>Writes what <see cref="SettlementHead"/> encodes for <see cref="Settlement.Ack"/>, byte for byte, without an array.</summary>
    public static void WriteAckSettlementHead(Span<byte> target, long dataSeq)
    {
        BinaryPrimitives.WriteInt32LittleEndian(target, AckSettlementHeadBytes - 4);
        BinaryPrimitives.WriteInt64LittleEndian(target[4..], dataSeq);
        target[12] = (byte)SettlementKind.Ack;
        BinaryPrimitives.WriteInt64LittleEndian(target[13..], 0);
        BinaryPrimitives.WriteInt32LittleEndian(target[21..], -1);
        BinaryPrimitives.WriteInt32LittleEndian(target[25..], -1);
        BinaryPrimitives.WriteInt32LittleEndian(target[29..], -1);
    }

    /// <summary>The head of a sequenced settlement entry: <c>[length:4][record]</c>.</summary>
    public static byte[] SettlementHead(long dataSeq, in Settlement settlement)
    {
        var buffer = HeadWriter.Rent();
        var w = new WireWriter(buffer);
        w.Int32(0);
        w.Int64(dataSeq);
        // The high bit marks a deferral (a retry that does not count as a delivery), so it stays one across the link.
        w.Byte((byte)((byte)settlement.Kind | (settlement.IsDeferral ? DeferralFlag : 0)));
        w.Int64(settlement.Delay.Ticks);
        w.String(settlement.Reason);
        var exception = settlement.Exception;
        w.String(exception is null ? null : RemoteHandlerException.TypeNameOf(exception));
        w.String(exception?.Message);
        var head = buffer.WrittenSpan.ToArray();
        BinaryPrimitives.WriteInt32LittleEndian(head, head.Length - 4);
        return head;
    }

    public static SettlementRecord ReadSettlement(ReadOnlySpan<byte> head)
    {
        var r = new WireReader(head);
        var seq = r.Int64();
        var raw = r.Byte();
        var deferred = (raw & DeferralFlag) != 0;
        var kind = (SettlementKind)(raw & ~DeferralFlag);
        var delay = r.Int64();
        if (kind > SettlementKind.DeadLetter || delay < 0 || (deferred && kind != SettlementKind.Retry))
        {
            throw new MalformedFrameException($"a settlement of kind {raw} with delay {delay}");
        }

        return new SettlementRecord(seq, kind, TimeSpan.FromTicks(delay), r.String(), r.String(), r.String(), deferred);
    }

    /// <summary>The bytes of an acknowledgement run's head before its sequence numbers: <c>[length:4][kind:1][count:4]</c>.</summary>
    public const int AckRunPrefixBytes = 4 + 1 + 4;

    /// <summary>
    /// Writes the head of a <see cref="FrameType.Settlements"/> message: <c>[length:4][kind:1][count:4][dataSeq:8]*count</c>,
    /// the kind always <see cref="SettlementKind.Ack"/> (anything else goes in its own <see cref="FrameType.Settlement"/>).
    /// </summary>
    public static void AckRunHead(Span<byte> target, ReadOnlySpan<long> dataSeqs)
    {
        BinaryPrimitives.WriteInt32LittleEndian(target, AckRunPrefixBytes - 4 + (8 * dataSeqs.Length));
        target[4] = (byte)SettlementKind.Ack;
        BinaryPrimitives.WriteInt32LittleEndian(target[5..], dataSeqs.Length);
        var at = target[AckRunPrefixBytes..];
        foreach (var seq in dataSeqs)
        {
            BinaryPrimitives.WriteInt64LittleEndian(at, seq);
            at = at[8..];
        }
    }

    /// <summary>Reads what <see cref="AckRunHead"/> wrote (its head without the length), adding a plain acknowledgement per sequence number.</summary>
    public static void ReadAckRun(ReadOnlySpan<byte> head, List<SettlementRecord> records)
    {
        var r = new WireReader(head);
        var kind = r.Byte();
        var count = r.Int32();
        if (kind != (byte)SettlementKind.Ack || count < 1 || count > FrameLimits.MaxAcksPerFrame || r.Remaining != 8L * count)
        {
            throw new MalformedFrameException($"a run of {count} settlements of kind {kind} in {head.Length} bytes");
        }

        // Checked whole before any is added: the frame already counts as received, so a bad one must settle none.
        var seqs = r.Take(8 * count);
        for (var at = 0; at < seqs.Length; at += 8)
        {
            var seq = BinaryPrimitives.ReadInt64LittleEndian(seqs[at..]);
            if (seq < 1)
            {
                throw new MalformedFrameException($"a settlement of data message {seq}");
            }
        }

        for (var at = 0; at < seqs.Length; at += 8)
        {
            records.Add(new SettlementRecord(BinaryPrimitives.ReadInt64LittleEndian(seqs[at..]), SettlementKind.Ack, TimeSpan.Zero, null, null, null));
        }
    }

    /// <summary>Calls <paramref name="received"/> for each frame in a batch.</summary>
    public static void Parse(ReadOnlySpan<byte> batch, FrameReceived received)
    {
        while (!batch.IsEmpty)
        {
            if (batch.Length < FrameLimits.FrameHeaderBytes)
            {
                throw new MalformedFrameException($"{batch.Length} stray bytes at the end of a batch");
            }

            var type = (FrameType)batch[0];
            var length = BinaryPrimitives.ReadInt32LittleEndian(batch[1..]);
            if (length < 0 || length > batch.Length - FrameLimits.FrameHeaderBytes)
            {
                throw new MalformedFrameException($"a {type} frame claiming {length} bytes where {batch.Length - FrameLimits.FrameHeaderBytes} remain");
            }

            if (type is < FrameType.Hello or > FrameType.Settlements)
            {
                throw new MalformedFrameException($"unknown frame type {(byte)type}");
            }

            received(type, batch.Slice(FrameLimits.FrameHeaderBytes, length));
            batch = batch[(FrameLimits.FrameHeaderBytes + length)..];
        }
    }

    private static void WriteSubscriptions(WireWriter w, long version, IReadOnlyList<SubscriptionInfo> subscriptions)
    {
        w.Int64(version);
        w.Int32(subscriptions.Count);
        foreach (var s in subscriptions)
        {
            w.Int64(s.Id);
            w.Byte((byte)s.Kind);
            w.String(s.Address);
            w.String(s.Group);
            w.Int32(s.Credit);
            w.Byte(s.Temporary ? (byte)1 : (byte)0);
            w.Int32(s.Capacity);
            w.Byte((byte)s.FullMode);
        }
    }

    private static (long, IReadOnlyList<SubscriptionInfo>) ReadSubscriptions(ref WireReader r)
    {
        var version = r.Int64();
        var count = r.Int32();
        if (count < 0 || count > r.Remaining / 10)
        {
            throw new MalformedFrameException($"an announcement of {count} subscriptions");
        }

        var list = new SubscriptionInfo[count];
        for (var i = 0; i < count; i++)
        {
            var id = r.Int64();
            var kind = (AddressKind)r.Byte();
            var address = r.String() ?? throw new MalformedFrameException("a subscription without an address");
            var group = r.String() ?? throw new MalformedFrameException("a subscription without a consumer group");
            var credit = r.Int32();
            var temporary = r.Byte() == 1;
            var capacity = r.Int32();
            var fullMode = (QueueFullMode)r.Byte();
            if (kind > AddressKind.Topic || credit < 1 || capacity < 1 || fullMode > QueueFullMode.Reject)
            {
                throw new MalformedFrameException($"subscription {id} of kind {(int)kind} with credit {credit}, capacity {capacity} and full mode {(int)fullMode}");
            }

            list[i] = new SubscriptionInfo(id, kind, address, group, credit, temporary, capacity, fullMode);
        }

        return (version, list);
    }

    private static byte[] Build<T>(FrameType type, T state, Action<WireWriter, T> body)
    {
        var buffer = new ArrayBufferWriter<byte>(128);
        var w = new WireWriter(buffer);
        w.Byte((byte)type);
        w.Int32(0);
        body(w, state);
        var frame = buffer.WrittenSpan.ToArray();
        BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(1), frame.Length - FrameLimits.FrameHeaderBytes);
        return frame;
    }
}

/// <summary>
/// One reusable buffer per thread for encoding a message's head (copied out at once into an array of its exact size),
/// so encoding allocates only that array.
/// </summary>
internal static class HeadWriter
{
    [ThreadStatic]
    private static ArrayBufferWriter<byte>? t_buffer;

    public static ArrayBufferWriter<byte> Rent()
    {
        var buffer = t_buffer ??= new ArrayBufferWriter<byte>(256);
        if (buffer.Capacity > 64 * 1024)
        {
            // A message with huge headers grew it: start small again rather than keep the big one for the thread's life.
            t_buffer = buffer = new ArrayBufferWriter<byte>(256);
        }

        buffer.ResetWrittenCount();
        return buffer;
    }
}
