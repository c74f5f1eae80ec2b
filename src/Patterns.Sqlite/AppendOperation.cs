using Patterns.Storage;

namespace Patterns.Sqlite;

/// <summary>An append: checks the stream's version and the event ids, inserts the events, runs the inline projection.</summary>
internal sealed class AppendOperation(
    string streamId,
    ExpectedVersion expectedVersion,
    IReadOnlyList<SerializedEvent> events,
    InlineProjection? projection,
    CancellationToken cancellationToken) : WriteOperation<AppendResult>(cancellationToken)
{
    public override int EventCount => events.Count;

    public override async ValueTask ExecuteAsync(SqliteWriter writer)
    {
        var stream = writer.GetStream(streamId);
        if (stream.Deleted != 0)
        {
            throw new StreamDeletedException(streamId);
        }

        if (stream.Version > 0 && writer.FindRetry(streamId, expectedVersion, events) is { } original)
        {
            Result = original;
            return;
        }

        if (!expectedVersion.IsSatisfiedBy(stream.Version))
        {
            throw new WrongExpectedVersionException(streamId, expectedVersion, stream.Version);
        }

        var firstPosition = writer.Head + 1;
        var firstVersion = stream.Version + 1;
        writer.InsertEvents(streamId, firstVersion, firstPosition, events);
        var lastVersion = stream.Version + events.Count;
        writer.SetStreamVersion(streamId, lastVersion);
        writer.Head += events.Count;
        Result = new AppendResult(streamId, lastVersion, firstPosition, firstPosition + events.Count - 1);

        if (projection is not null)
        {
            var appended = new StoredEvent[events.Count];
            for (var i = 0; i < appended.Length; i++)
            {
                var e = events[i];
                appended[i] = new StoredEvent(e.EventId, streamId, firstVersion + i, firstPosition + i, e.EventType, e.Data, e.Timestamp)
                {
                    CorrelationId = e.CorrelationId,
                    CausationId = e.CausationId,
                    Metadata = e.Metadata,
                };
            }

            var documents = new TransactionDocumentWriter(writer);
            try
            {
                await projection(appended, documents, CancellationToken).ConfigureAwait(false);
            }
            finally
            {
                documents.Close();
            }
        }
    }
}

/// <summary>The <see cref="IDocumentWriter"/> an inline projection gets: it reads and writes inside the append's transaction.</summary>
internal sealed class TransactionDocumentWriter(SqliteWriter writer) : IDocumentWriter
{
    private bool _closed;

    public ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default)
    {
        Check(collection, id);
        return new(writer.GetDocument(collection, id));
    }

    public ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default)
    {
        Check(collection, id);
        writer.UpsertDocument(collection, id, document);
        return ValueTask.CompletedTask;
    }

    public ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default)
    {
        Check(collection, id);
        return new(writer.DeleteDocument(collection, id));
    }

    public void Close() => _closed = true;

    private void Check(string collection, string id)
    {
        if (_closed)
        {
            throw new InvalidOperationException("The document writer of an inline projection can only be used while the projection runs: its transaction has moved on.");
        }

        SqliteArguments.Key(collection, nameof(collection));
        SqliteArguments.Key(id, nameof(id));
    }
}
