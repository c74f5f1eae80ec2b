using System.Buffers;
using System.Text.Json;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.Streaming;

/// <summary>
/// Keeps snapshots durably in the event store's documents (collection <see cref="Collection"/>, one document per
/// pipeline), written through a <see cref="UnitOfWork"/>, so it works on every store with units of work (in memory,
/// SQLite, PostgreSQL). Each stage's state is written by the <see cref="IMessageSerializer"/>; the envelope is written
/// without reflection. A stage's state is read back only by the stage that restores it, which knows its type.
/// </summary>
/// <remarks>
/// With a source-generated serializer context, add the window states the pipelines save (for example
/// <c>WindowOperatorState&lt;string, long&gt;</c>) to the context.
/// </remarks>
public sealed class StoreStreamSnapshotStore : IStreamSnapshotStore
{
    /// <summary>The document collection that holds the snapshots, one document per pipeline name.</summary>
    public const string Collection = "patterns.stream-snapshots";

    private readonly IDocumentStorage _documents;
    private readonly IUnitOfWorkStorage _units;
    private readonly IMessageSerializer _serializer;

    /// <summary>Initializes a new instance of the <see cref="StoreStreamSnapshotStore"/> class.</summary>
    /// <param name="documents">Where snapshots are read from.</param>
    /// <param name="units">Where snapshots are committed.</param>
    /// <param name="serializer">Writes and reads each stage's state.</param>
    public StoreStreamSnapshotStore(IDocumentStorage documents, IUnitOfWorkStorage units, IMessageSerializer serializer)
    {
        ArgumentNullException.ThrowIfNull(documents);
        ArgumentNullException.ThrowIfNull(units);
        ArgumentNullException.ThrowIfNull(serializer);
        _documents = documents;
        _units = units;
        _serializer = serializer;
    }

    /// <summary>Gets where snapshots are committed.</summary>
    internal IUnitOfWorkStorage Units => _units;

    /// <summary>Gets the store's inbox, where a transport source records the messages its committed snapshots include; null when the store has none.</summary>
    internal IInboxStore? Inbox => _units as IInboxStore ?? _documents as IInboxStore;

    /// <summary>Gets the serializer of stage states (and of the documents of a transactional sink).</summary>
    internal IMessageSerializer Serializer => _serializer;

    /// <inheritdoc />
    public async ValueTask<StreamSnapshot?> LoadAsync(string pipeline, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(pipeline);
        var bytes = await _documents.GetAsync(Collection, pipeline, cancellationToken).ConfigureAwait(false);
        return bytes is null ? null : Read(pipeline, bytes, _serializer);
    }

    /// <inheritdoc />
    public async ValueTask SaveAsync(StreamSnapshot snapshot, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        await _units.CommitAsync(Write(new UnitOfWork(), snapshot), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask DeleteAsync(string pipeline, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(pipeline);
        await _units.CommitAsync(new UnitOfWork().Delete(Collection, pipeline), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Adds the upsert of <paramref name="snapshot"/> to <paramref name="work"/>, so it commits with whatever else the unit holds.</summary>
    internal UnitOfWork Write(UnitOfWork work, StreamSnapshot snapshot)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("pipeline", snapshot.Pipeline);
            json.WriteString("takenAt", snapshot.TakenAt);
            json.WriteStartObject("operators");
            var state = new ArrayBufferWriter<byte>();
            foreach (var (stage, value) in snapshot.Operators.OrderBy(o => o.Key, StringComparer.Ordinal))
            {
                state.ResetWrittenCount();
                if (value is SerializedStageState serialized)
                {
                    state.Write(serialized.Payload.Span);
                }
                else
                {
                    _serializer.Serialize(state, value, value.GetType());
                }

                json.WriteBase64String(stage, state.WrittenSpan);
            }

            json.WriteEndObject();
            json.WriteEndObject();
        }

        return work.Upsert(Collection, snapshot.Pipeline, buffer.WrittenMemory);
    }

    private static StreamSnapshot Read(string pipeline, byte[] bytes, IMessageSerializer serializer)
    {
        try
        {
            var reader = new Utf8JsonReader(bytes);
            var takenAt = DateTimeOffset.MinValue;
            var operators = new Dictionary<string, object>(StringComparer.Ordinal);
            Expect(ref reader, JsonTokenType.StartObject);
            while (Next(ref reader) == JsonTokenType.PropertyName)
            {
                var property = reader.GetString();
                Next(ref reader);
                switch (property)
                {
                    case "takenAt":
                        takenAt = reader.GetDateTimeOffset();
                        break;
                    case "operators":
                        while (Next(ref reader) == JsonTokenType.PropertyName)
                        {
                            var stage = reader.GetString()!;
                            Next(ref reader);
                            operators[stage] = new SerializedStageState(reader.GetBytesFromBase64(), serializer);
                        }

                        break;
                    default:
                        reader.Skip();
                        break;
                }
            }

            return new StreamSnapshot(pipeline, takenAt, operators);
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException)
        {
            throw new StreamSnapshotMismatchException(
                pipeline,
                string.Empty,
                $"Stream '{pipeline}' cannot resume: its snapshot in document collection '{Collection}' is not readable ({ex.Message}). Delete the document to start empty.");
        }

        static JsonTokenType Next(ref Utf8JsonReader reader) =>
            reader.Read() ? reader.TokenType : throw new JsonException("The snapshot document ends early.");

        static void Expect(ref Utf8JsonReader reader, JsonTokenType type)
        {
            if (Next(ref reader) != type)
            {
                throw new JsonException($"Expected {type}, found {reader.TokenType}.");
            }
        }
    }
}

/// <summary>A stage's state as read from a durable snapshot: bytes that only the stage that restores it can type.</summary>
internal sealed class SerializedStageState(ReadOnlyMemory<byte> payload, IMessageSerializer serializer)
{
    public ReadOnlyMemory<byte> Payload { get; } = payload;

    public object Deserialize(Type type) => serializer.Deserialize(Payload, type);
}
