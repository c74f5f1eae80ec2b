using Patterns.Storage;

namespace Patterns.Sqlite;

/// <summary>An append on its own: the writer's append (<see cref="SqliteWriter.Append"/>) and then its inline projection.</summary>
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
        Result = writer.Append(streamId, expectedVersion, events, out var inserted);
        if (inserted && projection is not null)
        {
            await writer.ProjectAsync(projection, Result, events, CancellationToken).ConfigureAwait(false);
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
