using System.Buffers;
using System.Diagnostics.CodeAnalysis;

namespace Patterns.Messaging;

/// <summary>
/// The unit every transport carries: a message body plus the identity, correlation, routing and
/// trace information that travels with it.
/// </summary>
/// <remarks>
/// <para>
/// <see cref="Envelope"/> is a value type so that the in-process path allocates nothing per message
/// beyond the message object itself. In-process transports pass <see cref="Body"/> by reference and
/// never serialize it; transports that cross a process boundary carry <see cref="Payload"/> (the
/// serialized body) and <see cref="MessageType"/> instead, and the receiving side turns them back into a
/// body through the configured <see cref="Serialization.IMessageSerializer"/>.
/// </para>
/// <para>
/// Envelopes are immutable; use a <c>with</c> expression to derive a changed copy. A body published to
/// several subscriptions in-process is shared by reference, so message types should be immutable too.
/// </para>
/// </remarks>
public readonly struct Envelope
{
    // The fields every message uses stay inline; the rest live in a side object that is allocated only when
    // one of them is set. That keeps the struct at 64 bytes, so the in-process path copies little and
    // allocates nothing per message.
    private readonly EnvelopeExtra? _extra;
    private readonly long _sentAtUtcTicks;

    /// <summary>Gets the unique id of this message.</summary>
    /// <value>Set by the sender; <see cref="Guid.Empty"/> only on a default envelope.</value>
    public Guid MessageId { get; init; }

    /// <summary>Gets the id that ties this message to the conversation it belongs to.</summary>
    /// <value><see langword="null"/> unless the sender set one; request-response sets it to the request's id.</value>
    public Guid? CorrelationId
    {
        get => _extra?.CorrelationId;
        init
        {
            if (value is not null || _extra is not null)
            {
                _extra = EnvelopeExtra.CopyOf(_extra);
                _extra.CorrelationId = value;
            }
        }
    }

    /// <summary>Gets the id of the message whose handling caused this message to be sent.</summary>
    /// <value><see langword="null"/> when the message was not sent from inside a handler.</value>
    public Guid? CausationId
    {
        get => _extra?.CausationId;
        init
        {
            if (value is not null || _extra is not null)
            {
                _extra = EnvelopeExtra.CopyOf(_extra);
                _extra.CausationId = value;
            }
        }
    }

    /// <summary>Gets the logical message-type name (see <see cref="MessageTypeRegistry"/>).</summary>
    /// <value>The registered name of the body's type; required when only <see cref="Payload"/> is present.</value>
    public string? MessageType { get; init; }

    /// <summary>Gets the message body when it travels by reference (in-process).</summary>
    /// <value><see langword="null"/> when the body travels serialized in <see cref="Payload"/>.</value>
    public object? Body { get; init; }

    /// <summary>Gets the serialized body, for transports that cross a process boundary.</summary>
    /// <value>Empty when the body travels by reference in <see cref="Body"/>.</value>
    /// <remarks>
    /// When the payload was set as a sequence of several segments (<see cref="PayloadSequence"/>), the first read of this
    /// property copies it into one array; code that handles large payloads reads <see cref="PayloadSequence"/> instead.
    /// </remarks>
    public ReadOnlyMemory<byte> Payload
    {
        get => _extra is { } extra ? extra.ContiguousPayload() : default;
        init
        {
            if (!value.IsEmpty || _extra is not null)
            {
                _extra = EnvelopeExtra.CopyOf(_extra);
                _extra.SetPayload(value);
            }
        }
    }

    /// <summary>Gets the serialized body as a sequence of segments.</summary>
    /// <value>
    /// The payload's segments: a transport that receives a large message in chunks hands it on this way, so that no
    /// array as large as the message is needed; a single segment over <see cref="Payload"/> otherwise.
    /// </value>
    public ReadOnlySequence<byte> PayloadSequence
    {
        get => _extra is { } extra ? extra.PayloadSequence() : default;
        init
        {
            if (value.IsSingleSegment)
            {
                Payload = value.First;
                return;
            }

            _extra = EnvelopeExtra.CopyOf(_extra);
            _extra.SetPayload(value);
        }
    }

    /// <summary>Gets the length of the serialized body in bytes, without copying a segmented payload.</summary>
    public long PayloadLength => _extra?.PayloadLength ?? 0;

    /// <summary>Gets the media type of <see cref="Payload"/>.</summary>
    /// <value>For example <c>application/json</c>; <see langword="null"/> for in-process bodies.</value>
    public string? ContentType
    {
        get => _extra?.ContentType;
        init
        {
            if (value is not null || _extra is not null)
            {
                _extra = EnvelopeExtra.CopyOf(_extra);
                _extra.ContentType = value;
            }
        }
    }

    /// <summary>Gets the time the message was first sent, read from the sender's <see cref="TimeProvider"/>; kept in UTC.</summary>
    /// <remarks>
    /// With the system clock, senders read a coarse clock (the millisecond tick count added to a wall-clock reading
    /// refreshed every second), so the value has a resolution of a few milliseconds; a custom
    /// <see cref="TimeProvider"/> is read as is.
    /// </remarks>
    public DateTimeOffset SentAt
    {
        get => _sentAtUtcTicks == 0 ? default : new DateTimeOffset(_sentAtUtcTicks, TimeSpan.Zero);
        init => _sentAtUtcTicks = value.UtcTicks;
    }

    /// <summary>Gets the W3C <c>traceparent</c> of the span that sent the message.</summary>
    /// <value><see langword="null"/> when nobody was tracing.</value>
    public string? TraceParent
    {
        get => _extra?.TraceParent;
        init
        {
            if (value is not null || _extra is not null)
            {
                _extra = EnvelopeExtra.CopyOf(_extra);
                _extra.TraceParent = value;
            }
        }
    }

    /// <summary>Gets the W3C <c>tracestate</c> that accompanies <see cref="TraceParent"/>.</summary>
    public string? TraceState
    {
        get => _extra?.TraceState;
        init
        {
            if (value is not null || _extra is not null)
            {
                _extra = EnvelopeExtra.CopyOf(_extra);
                _extra.TraceState = value;
            }
        }
    }

    /// <summary>Gets the application and transport headers.</summary>
    /// <value><see langword="null"/> when there are none (no dictionary is allocated).</value>
    public IReadOnlyDictionary<string, string>? Headers
    {
        get => _extra?.Headers;
        init
        {
            if (value is not null || _extra is not null)
            {
                _extra = EnvelopeExtra.CopyOf(_extra);
                _extra.Headers = value;
            }
        }
    }

    /// <summary>Gets the key that orders messages: messages with the same key are handled in the order they were sent within one consumer group.</summary>
    /// <value><see langword="null"/> for messages without ordering requirements.</value>
    public string? PartitionKey { get; init; }

    /// <summary>Gets the address a response should be sent to (request-response).</summary>
    public string? ReplyTo
    {
        get => _extra?.ReplyTo;
        init
        {
            if (value is not null || _extra is not null)
            {
                _extra = EnvelopeExtra.CopyOf(_extra);
                _extra.ReplyTo = value;
            }
        }
    }

    /// <summary>Gets how many times this message has been delivered before, counting transport redeliveries.</summary>
    /// <value>0 on first delivery.</value>
    public int DeliveryCount { get; init; }

    /// <summary>Gets a value indicating whether this is a default (empty) envelope.</summary>
    public bool IsEmpty => MessageId == Guid.Empty && Body is null && PayloadLength == 0;

    /// <summary>Gets the value of a header.</summary>
    /// <param name="name">The header name.</param>
    /// <param name="value">The value, when the header is present.</param>
    /// <returns><see langword="true"/> when the header is present.</returns>
    public bool TryGetHeader(string name, [NotNullWhen(true)] out string? value)
    {
        if (Headers is { } headers && headers.TryGetValue(name, out value))
        {
            return true;
        }

        value = null;
        return false;
    }

    /// <summary>Returns a copy of this envelope with one header added or replaced.</summary>
    /// <param name="name">The header name.</param>
    /// <param name="value">The header value.</param>
    /// <returns>The new envelope; this one is unchanged.</returns>
    public Envelope WithHeader(string name, string value)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(value);
        var copy = Headers is null
            ? new Dictionary<string, string>(StringComparer.Ordinal)
            : new Dictionary<string, string>(Headers, StringComparer.Ordinal);
        copy[name] = value;
        return this with { Headers = copy };
    }

    /// <summary>Returns a copy of this envelope with several headers added or replaced.</summary>
    /// <param name="headers">The headers to set.</param>
    /// <returns>The new envelope; this one is unchanged.</returns>
    public Envelope WithHeaders(IEnumerable<KeyValuePair<string, string>> headers)
    {
        ArgumentNullException.ThrowIfNull(headers);
        var copy = Headers is null
            ? new Dictionary<string, string>(StringComparer.Ordinal)
            : new Dictionary<string, string>(Headers, StringComparer.Ordinal);
        foreach (var (key, value) in headers)
        {
            copy[key] = value;
        }

        return this with { Headers = copy };
    }

    /// <summary>Sets both trace fields with one copy of the side object.</summary>
    internal Envelope WithTrace(string? traceParent, string? traceState)
    {
        var extra = EnvelopeExtra.CopyOf(_extra);
        extra.TraceParent = traceParent;
        extra.TraceState = traceState;
        return new Envelope(this, extra);
    }

    private Envelope(in Envelope source, EnvelopeExtra extra)
    {
        this = source;
        _extra = extra;
    }
}

/// <summary>The rarely used envelope fields, allocated only when one of them is set.</summary>
internal sealed class EnvelopeExtra
{
    public static EnvelopeExtra CopyOf(EnvelopeExtra? extra) => extra is null ? new EnvelopeExtra() : extra.Clone();

    public Guid? CorrelationId { get; set; }

    public Guid? CausationId { get; set; }

    // A payload is either contiguous (_payload) or segmented (_segments, with _flattened its copy once someone asked for
    // one array). Both are set once before the envelope is shared; the copy is cached through one reference write.
    private ReadOnlyMemory<byte> _payload;
    private ReadOnlySequence<byte>? _segments;
    private byte[]? _flattened;

    public long PayloadLength => _segments?.Length ?? _payload.Length;

    public void SetPayload(ReadOnlyMemory<byte> payload)
    {
        _payload = payload;
        _segments = null;
        _flattened = null;
    }

    public void SetPayload(ReadOnlySequence<byte> payload)
    {
        _payload = default;
        _segments = payload;
        _flattened = null;
    }

    public ReadOnlyMemory<byte> ContiguousPayload() => _segments is { } segments ? _flattened ??= segments.ToArray() : _payload;

    public ReadOnlySequence<byte> PayloadSequence() => _segments ?? new ReadOnlySequence<byte>(_payload);

    public string? ContentType { get; set; }

    public string? TraceParent { get; set; }

    public string? TraceState { get; set; }

    public IReadOnlyDictionary<string, string>? Headers { get; set; }

    public string? ReplyTo { get; set; }

    public EnvelopeExtra Clone() => (EnvelopeExtra)MemberwiseClone();
}
