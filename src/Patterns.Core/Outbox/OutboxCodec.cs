using System.Buffers;
using System.Buffers.Binary;
using System.Text.Json;
using Patterns.Messaging;

namespace Patterns.Outbox;

/// <summary>
/// How an outbox message is stored: a 4-byte little-endian length, a small JSON object with the envelope's fields, then
/// the serialized body. Written and read without reflection.
/// </summary>
internal static class OutboxCodec
{
    /// <summary>Builds the outbox message that carries <paramref name="message"/> in <paramref name="envelope"/> (the body serialized apart).</summary>
    public static Storage.OutboxMessage ToOutboxMessage(string destination, Storage.OutboxMessageKind kind, in Envelope envelope, object message, Serialization.IMessageSerializer serializer)
    {
        var body = new ArrayBufferWriter<byte>(256);
        serializer.Serialize(body, message, message.GetType());
        var stored = envelope with { Body = null, ContentType = envelope.ContentType ?? serializer.ContentType };
        return new Storage.OutboxMessage(destination, kind, Encode(stored, body.WrittenSpan)) { PartitionKey = envelope.PartitionKey };
    }

    /// <summary>
    /// The outbox message for <paramref name="message"/>: its envelope (made by the bus, as a publish or send would make
    /// it) and its body serialized by <paramref name="serializer"/>, to hand to <paramref name="destination"/> later (null: the topic named after the message type).
    /// </summary>
    public static Storage.OutboxMessage Message<TMessage>(Hosting.MessageBus bus, Serialization.IMessageSerializer serializer, string? destination, Storage.OutboxMessageKind kind, TMessage message, in MessageOptions options)
        where TMessage : notnull
    {
        var envelope = bus.CreateEnvelope(message, options);
        return ToOutboxMessage(destination ?? envelope.MessageType!, kind, envelope, message, serializer);
    }

    public static byte[] Encode(in Envelope envelope, ReadOnlySpan<byte> body)
    {
        var header = new ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(header))
        {
            writer.WriteStartObject();
            writer.WriteString("id", envelope.MessageId);
            writer.WriteString("type", envelope.MessageType);
            Optional(writer, "ct", envelope.ContentType);
            if (envelope.CorrelationId is { } correlation)
            {
                writer.WriteString("corr", correlation);
            }

            if (envelope.CausationId is { } causation)
            {
                writer.WriteString("cause", causation);
            }

            Optional(writer, "key", envelope.PartitionKey);
            Optional(writer, "tp", envelope.TraceParent);
            Optional(writer, "ts", envelope.TraceState);
            writer.WriteString("sent", envelope.SentAt);
            if (envelope.Headers is { Count: > 0 } headers)
            {
                writer.WriteStartObject("h");
                foreach (var (name, value) in headers)
                {
                    writer.WriteString(name, value);
                }

                writer.WriteEndObject();
            }

            writer.WriteEndObject();
        }

        var payload = new byte[4 + header.WrittenCount + body.Length];
        BinaryPrimitives.WriteInt32LittleEndian(payload, header.WrittenCount);
        header.WrittenSpan.CopyTo(payload.AsSpan(4));
        body.CopyTo(payload.AsSpan(4 + header.WrittenCount));
        return payload;
    }

    /// <summary>Reads an envelope whose <see cref="Envelope.Payload"/> is the body's bytes (a slice of <paramref name="payload"/>).</summary>
    /// <exception cref="FormatException">The payload is not an encoded outbox message.</exception>
    public static Envelope Decode(ReadOnlyMemory<byte> payload)
    {
        if (payload.Length < 4)
        {
            throw new FormatException($"An outbox payload of {payload.Length} bytes is too short to hold its header length.");
        }

        var length = BinaryPrimitives.ReadInt32LittleEndian(payload.Span);
        if (length <= 0 || length > payload.Length - 4)
        {
            throw new FormatException($"An outbox payload of {payload.Length} bytes declares a header of {length} bytes.");
        }

        try
        {
            var reader = new Utf8JsonReader(payload.Span.Slice(4, length));
            using var json = JsonDocument.ParseValue(ref reader);
            var root = json.RootElement;
            Dictionary<string, string>? headers = null;
            if (root.TryGetProperty("h", out var h))
            {
                headers = new Dictionary<string, string>(StringComparer.Ordinal);
                foreach (var property in h.EnumerateObject())
                {
                    headers[property.Name] = property.Value.GetString()!;
                }
            }

            return new Envelope
            {
                MessageId = root.GetProperty("id").GetGuid(),
                MessageType = root.GetProperty("type").GetString(),
                ContentType = String(root, "ct"),
                CorrelationId = root.TryGetProperty("corr", out var corr) ? corr.GetGuid() : null,
                CausationId = root.TryGetProperty("cause", out var cause) ? cause.GetGuid() : null,
                PartitionKey = String(root, "key"),
                TraceParent = String(root, "tp"),
                TraceState = String(root, "ts"),
                SentAt = root.GetProperty("sent").GetDateTimeOffset(),
                Headers = headers,
                Payload = payload[(4 + length)..],
            };
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new FormatException($"An outbox payload's header is not valid: {ex.Message}", ex);
        }
    }

    private static void Optional(Utf8JsonWriter writer, string name, string? value)
    {
        if (value is not null)
        {
            writer.WriteString(name, value);
        }
    }

    private static string? String(JsonElement root, string name) => root.TryGetProperty(name, out var value) ? value.GetString() : null;
}
