using System.Buffers;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.Batching;

/// <summary>
/// Where a batcher registered on the host records the items it dead-letters when it has no <c>onDeadLetter</c> of its
/// own and a store is configured (<c>AddEventSourcing</c>): one document per item, in <see cref="Collection"/>.
/// </summary>
/// <remarks>
/// Each document is JSON: <c>batcher</c>, <c>failedAt</c>, <c>attempts</c>, <c>exceptionType</c>, <c>error</c>, and the
/// item written by the <see cref="IMessageSerializer"/>: as JSON under <c>item</c> when the serializer writes JSON,
/// otherwise base64 under <c>itemBytes</c>. Ids are <c>{batcher}/{unique}</c>.
/// </remarks>
public static class BatchDeadLetters
{
    /// <summary>The document collection of dead-lettered batch items.</summary>
    public const string Collection = "patterns.batch-dead-letters";

    /// <summary>The host's default dead-letter target: the store's documents, or <see langword="null"/> (logged and counted) without a store.</summary>
    internal static Func<FailedItem<T>, CancellationToken, ValueTask>? Default<T>(IServiceProvider services)
    {
        if (services.GetService<IDocumentStorage>() is not { } documents)
        {
            return null;
        }

        var serializer = services.GetRequiredService<IMessageSerializer>();
        return (failed, cancellationToken) => documents.UpsertAsync(
            Collection,
            failed.Batcher + "/" + Guid.NewGuid().ToString("N"),
            Write(failed, serializer),
            cancellationToken);
    }

    private static ReadOnlyMemory<byte> Write<T>(FailedItem<T> failed, IMessageSerializer serializer)
    {
        var item = new ArrayBufferWriter<byte>();
        if (failed.Item is not null)
        {
            serializer.Serialize(item, failed.Item, typeof(T));
        }

        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("batcher", failed.Batcher);
            json.WriteString("failedAt", failed.FailedAt);
            json.WriteNumber("attempts", failed.Attempts);
            json.WriteString("exceptionType", failed.Exception.GetType().FullName);
            json.WriteString("error", failed.Exception.Message);
            if (failed.Item is null)
            {
                json.WriteNull("item");
            }
            else if (string.Equals(serializer.ContentType, "application/json", StringComparison.OrdinalIgnoreCase))
            {
                json.WritePropertyName("item");
                json.WriteRawValue(item.WrittenSpan);
            }
            else
            {
                json.WriteBase64String("itemBytes", item.WrittenSpan);
            }

            json.WriteEndObject();
        }

        return buffer.WrittenMemory;
    }
}
