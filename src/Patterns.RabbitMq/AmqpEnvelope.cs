using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Patterns.Messaging;
using RabbitMQ.Client;

namespace Patterns.RabbitMq;

/// <summary>
/// Maps an <see cref="Envelope"/> to AMQP basic properties and back. Fields with an AMQP property use it
/// (message id, correlation id, type, content type, reply-to, timestamp); the rest travel as headers.
/// </summary>
internal static class AmqpEnvelope
{
    public const string CausationIdHeader = "patterns-causation-id";
    public const string PartitionKeyHeader = "patterns-partition-key";
    public const string DeliveryCountHeader = "patterns-delivery-count";
    public const string SentAtHeader = "patterns-sent-at";
    public const string TraceParentHeader = "traceparent";
    public const string TraceStateHeader = "tracestate";

    /// <summary>Headers the broker or the client library write; never copied into <see cref="Envelope.Headers"/>.</summary>
    private const string PublishSequenceNumberHeader = "x-dotnet-pub-seq-no";

    public static BasicProperties ToProperties(in Envelope envelope, string? contentType, bool persistent)
    {
        var headers = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (envelope.Headers is { } custom)
        {
            foreach (var (name, value) in custom)
            {
                headers[name] = value;
            }
        }

        if (envelope.CausationId is { } causation)
        {
            headers[CausationIdHeader] = causation.ToString();
        }

        if (envelope.PartitionKey is { } key)
        {
            headers[PartitionKeyHeader] = key;
        }

        if (envelope.DeliveryCount != 0)
        {
            headers[DeliveryCountHeader] = envelope.DeliveryCount;
        }

        if (envelope.SentAt != default)
        {
            headers[SentAtHeader] = envelope.SentAt.UtcTicks;
        }

        if (envelope.TraceParent is { } traceParent)
        {
            headers[TraceParentHeader] = traceParent;
            if (envelope.TraceState is { } traceState)
            {
                headers[TraceStateHeader] = traceState;
            }
        }

        var properties = new BasicProperties
        {
            MessageId = envelope.MessageId.ToString(),
            Type = envelope.MessageType,
            ContentType = contentType,
            ReplyTo = envelope.ReplyTo,
            Headers = headers,
            DeliveryMode = persistent ? DeliveryModes.Persistent : DeliveryModes.Transient,
        };
        if (envelope.CorrelationId is { } correlation)
        {
            properties.CorrelationId = correlation.ToString();
        }

        if (envelope.SentAt != default)
        {
            properties.Timestamp = new AmqpTimestamp(envelope.SentAt.ToUnixTimeSeconds());
        }

        return properties;
    }

    /// <summary>Reads a delivery back into an envelope; <paramref name="problem"/> says why when it cannot.</summary>
    public static bool TryRead(IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> body, bool redelivered, out Envelope envelope, out string? problem)
    {
        envelope = default;
        problem = null;
        if (string.IsNullOrEmpty(properties.MessageId))
        {
            problem = "The message has no message-id property; every message needs an id.";
            return false;
        }

        var messageId = ParseId(properties.MessageId);
        Guid? correlationId = null;
        if (!string.IsNullOrEmpty(properties.CorrelationId))
        {
            correlationId = ParseId(properties.CorrelationId);
        }

        Guid? causationId = null;
        string? partitionKey = null;
        string? traceParent = null;
        string? traceState = null;
        long sentAtTicks = 0;
        var deliveryCount = 0;
        Dictionary<string, string>? headers = null;
        if (properties.Headers is { Count: > 0 } amqpHeaders)
        {
            foreach (var (name, raw) in amqpHeaders)
            {
                switch (name)
                {
                    case CausationIdHeader:
                        if (!Guid.TryParse(AsString(raw), out var causation))
                        {
                            problem = $"Header '{CausationIdHeader}' is not a GUID.";
                            return false;
                        }

                        causationId = causation;
                        break;
                    case PartitionKeyHeader:
                        partitionKey = AsString(raw);
                        break;
                    case DeliveryCountHeader:
                        if (!TryGetInt64(raw, out var count) || count < 0 || count > int.MaxValue)
                        {
                            problem = $"Header '{DeliveryCountHeader}' is not a non-negative integer.";
                            return false;
                        }

                        deliveryCount = (int)count;
                        break;
                    case SentAtHeader:
                        if (!TryGetInt64(raw, out sentAtTicks) || sentAtTicks < 0 || sentAtTicks > DateTimeOffset.MaxValue.UtcTicks)
                        {
                            problem = $"Header '{SentAtHeader}' is not a timestamp in ticks.";
                            return false;
                        }

                        break;
                    case TraceParentHeader:
                        traceParent = AsString(raw);
                        break;
                    case TraceStateHeader:
                        traceState = AsString(raw);
                        break;
                    case PublishSequenceNumberHeader:
                        break;
                    default:
                        if (IsBrokerHeader(name))
                        {
                            break;
                        }

                        if (AsString(raw) is { } text)
                        {
                            headers ??= new Dictionary<string, string>(StringComparer.Ordinal);
                            headers[name] = text;
                        }

                        break;
                }
            }
        }

        if (redelivered)
        {
            // The broker delivered it before and got no settlement (a consumer died or lost its connection).
            deliveryCount++;
        }

        var sentAt = sentAtTicks != 0
            ? new DateTimeOffset(sentAtTicks, TimeSpan.Zero)
            : properties.IsTimestampPresent() ? DateTimeOffset.FromUnixTimeSeconds(properties.Timestamp.UnixTime) : default;
        envelope = new Envelope
        {
            MessageId = messageId,
            CorrelationId = correlationId,
            CausationId = causationId,
            MessageType = string.IsNullOrEmpty(properties.Type) ? null : properties.Type,
            Payload = body,
            ContentType = string.IsNullOrEmpty(properties.ContentType) ? null : properties.ContentType,
            SentAt = sentAt,
            TraceParent = traceParent,
            TraceState = traceState,
            Headers = headers,
            PartitionKey = partitionKey,
            ReplyTo = string.IsNullOrEmpty(properties.ReplyTo) ? null : properties.ReplyTo,
            DeliveryCount = deliveryCount,
        };
        return true;
    }

    /// <summary>Reads a header value written as a string (AMQP long strings arrive as UTF-8 bytes), number or flag.</summary>
    public static string? AsString(object? value) => value switch
    {
        byte[] bytes => Encoding.UTF8.GetString(bytes),
        string text => text,
        bool flag => flag ? "true" : "false",
        AmqpTimestamp timestamp => timestamp.UnixTime.ToString(CultureInfo.InvariantCulture),
        IFormattable number => number.ToString(null, CultureInfo.InvariantCulture),
        _ => null,
    };

    private static bool TryGetInt64(object? value, out long result)
    {
        switch (value)
        {
            case int i:
                result = i;
                return true;
            case long l:
                result = l;
                return true;
            case short s:
                result = s;
                return true;
            case byte b:
                result = b;
                return true;
            case uint u:
                result = u;
                return true;
            default:
                return long.TryParse(AsString(value), NumberStyles.Integer, CultureInfo.InvariantCulture, out result);
        }
    }

    private static bool IsBrokerHeader(string name) =>
        name is "x-death" or "x-delivery-count"
        || name.StartsWith("x-first-death-", StringComparison.Ordinal)
        || name.StartsWith("x-last-death-", StringComparison.Ordinal);

    /// <summary>Reads an id; an id that is not a GUID (from another framework) maps to a stable GUID derived from it, so de-duplication still works.</summary>
    private static Guid ParseId(string id)
    {
        if (Guid.TryParse(id, out var guid))
        {
            return guid;
        }

        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(id), hash);
        return new Guid(hash[..16]);
    }
}
