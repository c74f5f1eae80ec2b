using Npgsql;
using Patterns.Storage;

namespace Patterns.Postgres;

/// <summary>
/// Reads and writes the documents table on one connection, inside a transaction when one is given: an append's
/// inline projections get one bound to the append's transaction, so their writes commit or roll back with the events.
/// </summary>
internal sealed class PostgresDocumentWriter : IDocumentWriter
{
    private readonly PostgresSchema _schema;
    private readonly NpgsqlConnection _connection;
    private readonly NpgsqlTransaction? _transaction;
    private readonly TimeProvider _timeProvider;
    private bool _completed;

    public PostgresDocumentWriter(PostgresSchema schema, NpgsqlConnection connection, NpgsqlTransaction? transaction, TimeProvider timeProvider)
    {
        _schema = schema;
        _connection = connection;
        _transaction = transaction;
        _timeProvider = timeProvider;
    }

    public async ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default)
    {
        Guard.Key(collection, id);
        var command = CreateCommand(_schema.GetDocument);
        await using (command.ConfigureAwait(false))
        {
            command.Parameters.Add(Parameters.Text(collection));
            command.Parameters.Add(Parameters.Text(id));
            return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) as byte[];
        }
    }

    public async ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default)
    {
        Guard.Key(collection, id);
        var command = CreateCommand(_schema.UpsertDocument);
        await using (command.ConfigureAwait(false))
        {
            command.Parameters.Add(Parameters.Text(collection));
            command.Parameters.Add(Parameters.Text(id));
            command.Parameters.Add(Parameters.Bytes(document));
            command.Parameters.Add(Parameters.Timestamp(_timeProvider.GetUtcNow()));
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default)
    {
        Guard.Key(collection, id);
        var command = CreateCommand(_schema.DeleteDocument);
        await using (command.ConfigureAwait(false))
        {
            command.Parameters.Add(Parameters.Text(collection));
            command.Parameters.Add(Parameters.Text(id));
            return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) > 0;
        }
    }

    /// <summary>Refuses further use: the append that handed this writer out has finished.</summary>
    public void Complete() => _completed = true;

    private NpgsqlCommand CreateCommand(string sql)
    {
        if (_completed)
        {
            throw new InvalidOperationException("This document writer belongs to an inline projection whose append has finished; it cannot be used any more.");
        }

        return new NpgsqlCommand(sql, _connection, _transaction);
    }
}
