using System.Buffers;
using System.Buffers.Binary;
using Patterns.PeerLinks.Wire;

namespace Patterns.PeerLinks.Links;

/// <summary>Called for each complete sequenced message: its head (valid only during the call) and its payload (owned).</summary>
internal delegate void MessageReceived(long seq, long subscription, ReadOnlySpan<byte> head, ReadOnlySequence<byte> payload);

/// <summary>
/// The receiving end of an <see cref="OutboundSequence"/>: drops what it already has (replays after a reconnect),
/// refuses gaps, and puts chunks back together. A message is <c>[headLength:4][head][payload]</c>; the head always
/// arrives whole in the first chunk. A payload in several chunks is put back together in segments of at most 64 KiB
/// (<see cref="SegmentChain"/>), handed on as one sequence: no array as large as the message, none on the large-object heap.
/// They are not pooled: the envelope is the handler's, which may keep it after its settlement.
/// </summary>
internal sealed class InboundSequence(long maxMessageBytes)
{
    private long _partialSeq;
    private long _partialSubscription;
    private int _partialTotal;
    private int _filled;
    private byte[]? _partialHead;
    private SegmentChain? _partialPayload;
    private byte[] _segment = [];
    private int _segmentUsed;
    private int _payloadLeft;

    /// <summary>Gets the last sequence number received whole.</summary>
    public long LastReceived { get; private set; }

    /// <summary>A new connection replays from a message boundary: forget a half-received message.</summary>
    public void ResetPartial()
    {
        _partialHead = null;
        _partialPayload = null;
        _segment = [];
        _segmentUsed = 0;
        _payloadLeft = 0;
        _filled = 0;
        _partialSeq = 0;
    }

    public void Accept(ReadOnlySpan<byte> body, MessageReceived received)
    {
        if (body.Length < FrameLimits.SequencedHeaderBytes)
        {
            throw new MalformedFrameException($"a sequenced frame of {body.Length} bytes");
        }

        var seq = BinaryPrimitives.ReadInt64LittleEndian(body);
        var subscription = BinaryPrimitives.ReadInt64LittleEndian(body[8..]);
        var total = BinaryPrimitives.ReadInt32LittleEndian(body[16..]);
        var offset = BinaryPrimitives.ReadInt32LittleEndian(body[20..]);
        var bytes = body[FrameLimits.SequencedHeaderBytes..];
        if (seq <= LastReceived)
        {
            return;
        }

        if (seq != LastReceived + 1)
        {
            throw new MalformedFrameException($"frame {seq} after {LastReceived}: sequence numbers must not skip");
        }

        if (total < 4 || total > maxMessageBytes + FrameLimits.MaxEnvelopeHeaderBytes + 4 || offset < 0 || bytes.Length > total - offset)
        {
            throw new MalformedFrameException($"a chunk at offset {offset} of {bytes.Length} bytes of a {total}-byte message (limit {maxMessageBytes} bytes)");
        }

        if (offset == 0)
        {
            var headLength = BinaryPrimitives.ReadInt32LittleEndian(bytes);
            if (headLength < 0 || headLength > FrameLimits.MaxEnvelopeHeaderBytes || 4 + headLength > bytes.Length)
            {
                throw new MalformedFrameException($"a message head of {headLength} bytes in a first chunk of {bytes.Length}");
            }

            var head = bytes.Slice(4, headLength);
            var payloadPart = bytes[(4 + headLength)..];
            var payloadLength = total - 4 - headLength;
            if (bytes.Length == total)
            {
                LastReceived = seq;
                received(seq, subscription, head, new ReadOnlySequence<byte>(payloadPart.ToArray()));
                return;
            }

            _partialSeq = seq;
            _partialSubscription = subscription;
            _partialTotal = total;
            _partialHead = head.ToArray();
            _partialPayload = new SegmentChain();
            _payloadLeft = payloadLength;
            AddPayload(payloadPart);
            _filled = bytes.Length;
            return;
        }

        if (_partialPayload is null || seq != _partialSeq || offset != _filled || total != _partialTotal || subscription != _partialSubscription)
        {
            throw new MalformedFrameException($"a chunk of message {seq} at offset {offset} that does not continue the message being received");
        }

        AddPayload(bytes);
        _filled += bytes.Length;
        if (_filled == total)
        {
            var head = _partialHead!;
            var payload = _partialPayload.ToSequence();
            ResetPartial();
            LastReceived = seq;
            received(seq, subscription, head, payload);
        }
    }

    /// <summary>Copies a chunk's payload bytes into the current segment, starting a new one (at most 64 KiB) when it is full.</summary>
    private void AddPayload(ReadOnlySpan<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            if (_segmentUsed == _segment.Length)
            {
                _segment = new byte[Math.Min(_payloadLeft, SegmentChain.MaxSegmentBytes)];
                _segmentUsed = 0;
            }

            var n = Math.Min(bytes.Length, _segment.Length - _segmentUsed);
            bytes[..n].CopyTo(_segment.AsSpan(_segmentUsed));
            _segmentUsed += n;
            _payloadLeft -= n;
            bytes = bytes[n..];
            if (_segmentUsed == _segment.Length)
            {
                _partialPayload!.Add(_segment);
            }
        }
    }
}
