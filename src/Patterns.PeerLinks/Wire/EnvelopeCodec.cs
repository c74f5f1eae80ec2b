using System.Buffers;
using Patterns.Messaging;

namespace Patterns.PeerLinks.Wire;

/// <summary>
/// Encodes an envelope's header (every field but the payload) for the wire. The payload travels after it
/// untouched, so a sender never copies a body into a bigger buffer: chunks are cut straight from it.
/// </summary>
internal static class EnvelopeCodec
{
    [Flags]
    private enum Fields : ushort
    {
        None = 0,
        Correlation = 1,
        Causation = 2,
        Type = 4,
        ContentType = 8,
        TraceParent = 16,
        TraceState = 32,
        PartitionKey = 64,
        ReplyTo = 128,
        Headers = 256,
    }

    public static void WriteHeader(IBufferWriter<byte> buffer, in Envelope envelope, string? contentType)
    {
        var w = new WireWriter(buffer);
        var fields = Fields.None;
        fields |= envelope.CorrelationId is null ? 0 : Fields.Correlation;
        fields |= envelope.CausationId is null ? 0 : Fields.Causation;
        fields |= envelope.MessageType is null ? 0 : Fields.Type;
        fields |= contentType is null ? 0 : Fields.ContentType;
        fields |= envelope.TraceParent is null ? 0 : Fields.TraceParent;
        fields |= envelope.TraceState is null ? 0 : Fields.TraceState;
        fields |= envelope.PartitionKey is null ? 0 : Fields.PartitionKey;
        fields |= envelope.ReplyTo is null ? 0 : Fields.ReplyTo;
        fields |= envelope.Headers is null ? 0 : Fields.Headers;
        w.Guid(envelope.MessageId);
        w.Int32((int)fields);
        w.Int64(envelope.SentAt.UtcTicks);
        w.Int32(envelope.DeliveryCount);
        if (envelope.CorrelationId is { } correlation)
        {
            w.Guid(correlation);
        }

        if (envelope.CausationId is { } causation)
        {
            w.Guid(causation);
        }

        WriteIf(w, envelope.MessageType);
        WriteIf(w, contentType);
        WriteIf(w, envelope.TraceParent);
        WriteIf(w, envelope.TraceState);
        WriteIf(w, envelope.PartitionKey);
        WriteIf(w, envelope.ReplyTo);
        if (envelope.Headers is { } headers)
        {
            w.Int32(headers.Count);
            foreach (var (key, value) in headers)
            {
                w.String(key);
                w.String(value);
            }
        }
    }

    public static Envelope Read(ReadOnlySpan<byte> header, ReadOnlySequence<byte> payload, DecodedStrings? strings = null)
    {
        var r = new WireReader(header);
        var id = r.Guid();
        var fields = (Fields)r.Int32();
        var sentTicks = r.Int64();
        var deliveryCount = r.Int32();
        if (sentTicks < 0 || sentTicks > DateTimeOffset.MaxValue.UtcTicks || deliveryCount < 0)
        {
            throw new MalformedFrameException($"an envelope header with sent-at ticks {sentTicks} and delivery count {deliveryCount}");
        }

        var correlation = (fields & Fields.Correlation) != 0 ? r.Guid() : (Guid?)null;
        var causation = (fields & Fields.Causation) != 0 ? r.Guid() : (Guid?)null;
        var type = ReadIf(ref r, fields, Fields.Type, strings?.Type);
        var contentType = ReadIf(ref r, fields, Fields.ContentType, strings?.ContentType);
        var traceParent = ReadIf(ref r, fields, Fields.TraceParent);
        var traceState = ReadIf(ref r, fields, Fields.TraceState);
        var partitionKey = ReadIf(ref r, fields, Fields.PartitionKey);
        var replyTo = ReadIf(ref r, fields, Fields.ReplyTo, strings?.ReplyTo);
        Dictionary<string, string>? headers = null;
        if ((fields & Fields.Headers) != 0)
        {
            var count = r.Int32();
            if (count < 0 || count > r.Remaining / 8)
            {
                throw new MalformedFrameException($"an envelope with {count} headers");
            }

            headers = new Dictionary<string, string>(count, StringComparer.Ordinal);
            for (var i = 0; i < count; i++)
            {
                var key = r.String() ?? throw new MalformedFrameException("a header without a name");
                headers[key] = r.String() ?? string.Empty;
            }
        }

        if (r.Remaining != 0)
        {
            throw new MalformedFrameException($"{r.Remaining} stray bytes after an envelope header");
        }

        return new Envelope
        {
            MessageId = id,
            CorrelationId = correlation,
            CausationId = causation,
            MessageType = type,
            ContentType = contentType,
            SentAt = sentTicks == 0 ? default : new DateTimeOffset(sentTicks, TimeSpan.Zero),
            DeliveryCount = deliveryCount,
            TraceParent = traceParent,
            TraceState = traceState,
            PartitionKey = partitionKey,
            ReplyTo = replyTo,
            Headers = headers,
            PayloadSequence = payload,
        };
    }

    private static void WriteIf(WireWriter w, string? value)
    {
        if (value is not null)
        {
            w.String(value);
        }
    }

    // A bit test, not Enum.HasFlag: code that is not fully optimized yet (the first tiers) boxes both of HasFlag's
    // operands, which cost two allocations per field per received message.
    private static string? ReadIf(ref WireReader r, Fields fields, Fields flag, LastString? last = null) =>
        (fields & flag) != 0 ? (last is null ? r.String() : r.String(last)) ?? throw NullField(flag) : null;

    private static MalformedFrameException NullField(Fields flag) => new($"a null {flag} that was flagged present");
}

/// <summary>
/// The strings of the envelopes one reader decodes that usually repeat from message to message (the message type, the
/// content type, the reply-to address): each is decoded again only when its bytes differ from the last one's, so a
/// stream of one message type allocates no string per message. One reader only (not thread-safe).
/// </summary>
internal sealed class DecodedStrings
{
    public LastString Type { get; } = new();

    public LastString ContentType { get; } = new();

    public LastString ReplyTo { get; } = new();
}

/// <summary>The last string decoded in one field, with its UTF-8 bytes.</summary>
internal sealed class LastString
{
    /// <summary>Longer strings are decoded every time (they are not worth keeping a copy of).</summary>
    public const int MaxBytes = 256;

    private byte[] _bytes = [];
    private string? _value;

    public string Get(ReadOnlySpan<byte> utf8)
    {
        if (_value is { } value && utf8.SequenceEqual(_bytes))
        {
            return value;
        }

        value = System.Text.Encoding.UTF8.GetString(utf8);
        if (utf8.Length <= MaxBytes)
        {
            _bytes = utf8.ToArray();
            _value = value;
        }

        return value;
    }
}
