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
    private const int LengthPrefix = 4;
    private const int MaxKeptBuffer = 64 * 1024;

    [ThreadStatic]
    private static ArrayBufferWriter<byte>? t_buffer;

    [ThreadStatic]
    private static Utf8JsonWriter? t_writer;

    // The last message type and content type decoded on this thread: a relay decodes the same few over and over.
    [ThreadStatic]
    private static string? t_lastType;

    [ThreadStatic]
    private static string? t_lastContentType;

    /// <summary>Builds the outbox message that carries <paramref name="message"/> in <paramref name="envelope"/> (the body serialized apart).</summary>
    /// <remarks>
    /// The header and the body are written into one buffer kept per thread (with its JSON writer), so the payload array
    /// is the only allocation of the encoding.
    /// </remarks>
    public static Storage.OutboxMessage ToOutboxMessage(string destination, Storage.OutboxMessageKind kind, in Envelope envelope, object message, Serialization.IMessageSerializer serializer)
    {
        var stored = envelope with { Body = null, ContentType = envelope.ContentType ?? serializer.ContentType };
        var buffer = t_buffer ??= new ArrayBufferWriter<byte>(1024);
        buffer.ResetWrittenCount();
        buffer.Advance(LengthPrefix);
        var writer = t_writer;
        if (writer is null)
        {
            writer = t_writer = new Utf8JsonWriter(buffer);
        }
        else
        {
            writer.Reset(buffer);
        }

        WriteHeader(writer, stored);
        writer.Flush();
        var headerLength = buffer.WrittenCount - LengthPrefix;
        serializer.Serialize(buffer, message, message.GetType());
        var payload = buffer.WrittenSpan.ToArray();
        BinaryPrimitives.WriteInt32LittleEndian(payload, headerLength);
        if (buffer.Capacity > MaxKeptBuffer)
        {
            // A rare large message: its buffer is not kept for the thread's life.
            t_buffer = null;
            t_writer = null;
        }

        return new Storage.OutboxMessage(destination, kind, payload) { PartitionKey = envelope.PartitionKey };
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
            WriteHeader(writer, envelope);
        }

        var payload = new byte[LengthPrefix + header.WrittenCount + body.Length];
        BinaryPrimitives.WriteInt32LittleEndian(payload, header.WrittenCount);
        header.WrittenSpan.CopyTo(payload.AsSpan(LengthPrefix));
        body.CopyTo(payload.AsSpan(LengthPrefix + header.WrittenCount));
        return payload;
    }

    private static void WriteHeader(Utf8JsonWriter writer, in Envelope envelope)
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
            // Read field by field: no document, no copy of the header.
            var reader = new Utf8JsonReader(payload.Span.Slice(4, length));
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                throw new JsonException("The header is not a JSON object.");
            }

            Guid? id = null, correlation = null, causation = null;
            string? type = null, contentType = null, key = null, traceParent = null, traceState = null;
            DateTimeOffset? sent = null;
            var hasType = false;
            Dictionary<string, string>? headers = null;
            while (Next(ref reader) != JsonTokenType.EndObject)
            {
                if (reader.ValueTextEquals("h"u8))
                {
                    headers = ReadHeaders(ref reader);
                    continue;
                }

                var name = reader;
                Next(ref reader);
                if (name.ValueTextEquals("id"u8))
                {
                    id = reader.GetGuid();
                }
                else if (name.ValueTextEquals("type"u8))
                {
                    type = Repeated(ref reader, ref t_lastType);
                    hasType = true;
                }
                else if (name.ValueTextEquals("ct"u8))
                {
                    contentType = Repeated(ref reader, ref t_lastContentType);
                }
                else if (name.ValueTextEquals("corr"u8))
                {
                    correlation = reader.GetGuid();
                }
                else if (name.ValueTextEquals("cause"u8))
                {
                    causation = reader.GetGuid();
                }
                else if (name.ValueTextEquals("key"u8))
                {
                    key = reader.GetString();
                }
                else if (name.ValueTextEquals("tp"u8))
                {
                    traceParent = reader.GetString();
                }
                else if (name.ValueTextEquals("ts"u8))
                {
                    traceState = reader.GetString();
                }
                else if (name.ValueTextEquals("sent"u8))
                {
                    sent = reader.GetDateTimeOffset();
                }
                else
                {
                    reader.Skip();
                }
            }

            return new Envelope
            {
                MessageId = id ?? throw new KeyNotFoundException("The header has no 'id'."),
                MessageType = hasType ? type : throw new KeyNotFoundException("The header has no 'type'."),
                ContentType = contentType,
                CorrelationId = correlation,
                CausationId = causation,
                PartitionKey = key,
                TraceParent = traceParent,
                TraceState = traceState,
                SentAt = sent ?? throw new KeyNotFoundException("The header has no 'sent'."),
                Headers = headers,
                Payload = payload[(4 + length)..],
            };
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new FormatException($"An outbox payload's header is not valid: {ex.Message}", ex);
        }
    }

    /// <summary>Reads a string that is usually the same as the last one read here (a message type, a content type): that one is reused.</summary>
    private static string? Repeated(ref Utf8JsonReader reader, ref string? last)
    {
        if (reader.TokenType == JsonTokenType.String && last is not null && reader.ValueTextEquals(last))
        {
            return last;
        }

        var value = reader.GetString();
        last = value ?? last;
        return value;
    }

    private static JsonTokenType Next(ref Utf8JsonReader reader) =>
        reader.Read() ? reader.TokenType : throw new JsonException("The header ends early.");

    /// <summary>Reads the "h" object (the reader is on its name); leaves the reader on its end.</summary>
    private static Dictionary<string, string> ReadHeaders(ref Utf8JsonReader reader)
    {
        if (Next(ref reader) != JsonTokenType.StartObject)
        {
            throw new JsonException("The header's 'h' is not an object.");
        }

        var headers = new Dictionary<string, string>(StringComparer.Ordinal);
        while (Next(ref reader) != JsonTokenType.EndObject)
        {
            var name = reader.GetString()!;
            Next(ref reader);
            headers[name] = reader.GetString()!;
        }

        return headers;
    }

    private static void Optional(Utf8JsonWriter writer, string name, string? value)
    {
        if (value is not null)
        {
            writer.WriteString(name, value);
        }
    }
}
