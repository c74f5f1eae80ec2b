using System.Buffers;
using System.Collections.ObjectModel;
using System.Text.Json;
using Patterns.Serialization;

namespace Patterns.EventSourcing;

/// <summary>Writes and reads event headers as the stored metadata: a flat JSON object of strings, without reflection.</summary>
internal static class EventHeaders
{
    public static ReadOnlyMemory<byte> Write(IReadOnlyDictionary<string, string>? headers)
    {
        if (headers is null || headers.Count == 0)
        {
            return default;
        }

        var buffer = new ArrayBufferWriter<byte>(64);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            foreach (var (key, value) in headers)
            {
                writer.WriteString(key, value);
            }

            writer.WriteEndObject();
        }

        return buffer.WrittenMemory;
    }

    public static IReadOnlyDictionary<string, string> Read(ReadOnlyMemory<byte> metadata)
    {
        if (metadata.IsEmpty)
        {
            return ReadOnlyDictionary<string, string>.Empty;
        }

        try
        {
            var reader = new Utf8JsonReader(metadata.Span);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                throw new MessageDeserializationException("Event metadata must be a JSON object.");
            }

            var headers = new Dictionary<string, string>(StringComparer.Ordinal);
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var key = reader.GetString()!;
                reader.Read();
                if (reader.TokenType == JsonTokenType.String)
                {
                    headers[key] = reader.GetString()!;
                }
                else
                {
                    // Metadata written by other tools may hold numbers or objects; keep their JSON text.
                    var start = reader.TokenStartIndex;
                    reader.Skip();
                    headers[key] = System.Text.Encoding.UTF8.GetString(metadata.Span[(int)start..(int)(reader.BytesConsumed)]);
                }
            }

            return headers;
        }
        catch (JsonException ex)
        {
            throw new MessageDeserializationException($"Event metadata ({metadata.Length} bytes) is not valid JSON: {ex.Message}", ex);
        }
    }
}
