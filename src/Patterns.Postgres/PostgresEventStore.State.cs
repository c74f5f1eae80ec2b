using System.Runtime.CompilerServices;
using Npgsql;
using NpgsqlTypes;
using Patterns.Storage;

namespace Patterns.Postgres;

public sealed partial class PostgresEventStore
{
    /// <inheritdoc />
    async ValueTask<long?> ICheckpointStore.LoadAsync(string name, CancellationToken cancellationToken)
    {
        Guard.Text(name, nameof(name));
        return await ScalarAsync(_schema.LoadCheckpoint, cancellationToken, Parameters.Text(name)).ConfigureAwait(false) is long position ? position : null;
    }

    /// <inheritdoc />
    async ValueTask ICheckpointStore.SaveAsync(string name, long position, CancellationToken cancellationToken)
    {
        Guard.Text(name, nameof(name));
        ArgumentOutOfRangeException.ThrowIfNegative(position);
        await NonQueryAsync(_schema.SaveCheckpoint, cancellationToken, Parameters.Text(name), Parameters.Bigint(position), Parameters.Timestamp(_timeProvider.GetUtcNow())).ConfigureAwait(false);
    }

    /// <inheritdoc />
    async ValueTask<StoredSnapshot?> ISnapshotStorage.LoadAsync(string streamId, CancellationToken cancellationToken)
    {
        Guard.Text(streamId, nameof(streamId));
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = new NpgsqlCommand(_schema.LoadSnapshot, connection);
            await using (command.ConfigureAwait(false))
            {
                command.Parameters.Add(Parameters.Text(streamId));
                var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                    {
                        return null;
                    }

                    return ReadSnapshot(reader, streamId);
                }
            }
        }
    }

    /// <inheritdoc />
    async ValueTask ISnapshotStorage.SaveAsync(StoredSnapshot snapshot, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        Guard.Text(snapshot.StreamId, nameof(snapshot));
        Guard.Text(snapshot.SnapshotType, nameof(snapshot));
        ArgumentOutOfRangeException.ThrowIfNegative(snapshot.Version, nameof(snapshot));
        await NonQueryAsync(
            _schema.SaveSnapshot,
            cancellationToken,
            Parameters.Text(snapshot.StreamId),
            Parameters.Bigint(snapshot.Version),
            Parameters.Text(snapshot.SnapshotType),
            Parameters.Integer(snapshot.SchemaVersion),
            Parameters.Bytes(snapshot.Data),
            Parameters.Timestamp(snapshot.Timestamp)).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default)
    {
        Guard.Key(collection, id);
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            return await Documents(connection).GetAsync(collection, id, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    /// <remarks>One round trip, however many ids.</remarks>
    public async ValueTask<IReadOnlyDictionary<string, byte[]>> GetManyAsync(string collection, IReadOnlyCollection<string> ids, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var keys = new string[ids.Count];
        var index = 0;
        foreach (var id in ids)
        {
            Guard.Key(collection, id);
            keys[index++] = id;
        }

        var found = new Dictionary<string, byte[]>(keys.Length, StringComparer.Ordinal);
        if (keys.Length == 0)
        {
            return found;
        }

        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = new NpgsqlCommand(_schema.GetDocuments, connection);
            await using (command.ConfigureAwait(false))
            {
                command.Parameters.Add(Parameters.Text(collection));
                command.Parameters.Add(Parameters.Array(keys, NpgsqlDbType.Text));
                var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                    {
                        var (id, document) = ReadDocument(reader);
                        found[id] = document;
                    }
                }
            }
        }

        return found;
    }

    /// <inheritdoc />
    public async ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default)
    {
        Guard.Key(collection, id);
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            await Documents(connection).UpsertAsync(collection, id, document, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public async ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default)
    {
        Guard.Key(collection, id);
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            return await Documents(connection).DeleteAsync(collection, id, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    /// <remarks>Ids are ordered by ordinal (byte-wise) comparison; each page is one keyset query.</remarks>
    public async IAsyncEnumerable<KeyValuePair<string, byte[]>> ListAsync(string collection, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        Guard.Text(collection, nameof(collection));
        var after = string.Empty;
        while (true)
        {
            var count = 0;
            var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
            await using (connection.ConfigureAwait(false))
            {
                var command = new NpgsqlCommand(_schema.ListDocuments, connection);
                await using (command.ConfigureAwait(false))
                {
                    command.Parameters.Add(Parameters.Text(collection));
                    command.Parameters.Add(Parameters.Text(after));
                    command.Parameters.Add(Parameters.Integer(_pageSize));
                    var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                    await using (reader.ConfigureAwait(false))
                    {
                        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                        {
                            var document = ReadDocument(reader);
                            after = document.Key;
                            count++;
                            yield return document;
                        }
                    }
                }
            }

            if (count < _pageSize)
            {
                yield break;
            }
        }
    }

    /// <inheritdoc />
    public async ValueTask ClearAsync(string collection, CancellationToken cancellationToken = default)
    {
        Guard.Text(collection, nameof(collection));
        await NonQueryAsync(_schema.ClearDocuments, cancellationToken, Parameters.Text(collection)).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<bool> ContainsAsync(string consumer, string messageId, CancellationToken cancellationToken = default)
    {
        Guard.Text(consumer, nameof(consumer));
        Guard.Text(messageId, nameof(messageId));
        return (bool)(await ScalarAsync(_schema.InboxContains, cancellationToken, Parameters.Text(consumer), Parameters.Text(messageId)).ConfigureAwait(false))!;
    }

    /// <inheritdoc />
    /// <remarks>One round trip, however many ids.</remarks>
    public async ValueTask<IReadOnlySet<string>> ContainsManyAsync(string consumer, IReadOnlyCollection<string> messageIds, CancellationToken cancellationToken = default)
    {
        Guard.Text(consumer, nameof(consumer));
        ArgumentNullException.ThrowIfNull(messageIds);
        var ids = new string[messageIds.Count];
        var index = 0;
        foreach (var id in messageIds)
        {
            Guard.Text(id, nameof(messageIds));
            ids[index++] = id;
        }

        var found = new HashSet<string>(StringComparer.Ordinal);
        if (ids.Length == 0)
        {
            return found;
        }

        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = new NpgsqlCommand(_schema.InboxContainsMany, connection);
            await using (command.ConfigureAwait(false))
            {
                command.Parameters.Add(Parameters.Text(consumer));
                command.Parameters.Add(Parameters.Array(ids, NpgsqlDbType.Text));
                var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                    {
                        found.Add(reader.GetString(0));
                    }
                }
            }
        }

        return found;
    }

    /// <inheritdoc />
    /// <remarks>The entry is stamped with the store's <see cref="TimeProvider"/>; <see cref="PruneAsync"/> compares against that stamp.</remarks>
    public async ValueTask<bool> TryMarkHandledAsync(string consumer, string messageId, CancellationToken cancellationToken = default)
    {
        Guard.Text(consumer, nameof(consumer));
        Guard.Text(messageId, nameof(messageId));
        var marked = await NonQueryAsync(
            _schema.InboxMark, cancellationToken, Parameters.Text(consumer), Parameters.Text(messageId), Parameters.Timestamp(_timeProvider.GetUtcNow())).ConfigureAwait(false);
        return marked == 1;
    }

    /// <inheritdoc />
    public async ValueTask<long> PruneAsync(DateTimeOffset olderThan, CancellationToken cancellationToken = default) =>
        await NonQueryAsync(_schema.InboxPrune, cancellationToken, Parameters.Timestamp(olderThan)).ConfigureAwait(false);

    // Rows are buffered whole (no sequential access), so reading columns synchronously does not block.
    private static StoredSnapshot ReadSnapshot(NpgsqlDataReader reader, string streamId) =>
        new(streamId, reader.GetInt64(0), reader.GetString(1), reader.GetInt32(2), reader.GetFieldValue<byte[]>(3), reader.GetFieldValue<DateTimeOffset>(4));

    private static KeyValuePair<string, byte[]> ReadDocument(NpgsqlDataReader reader) =>
        new(reader.GetString(0), reader.GetFieldValue<byte[]>(1));

    private PostgresDocumentWriter Documents(NpgsqlConnection connection) => new(_schema, connection, null, _timeProvider);
}
