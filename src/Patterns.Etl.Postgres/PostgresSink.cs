using Npgsql;
using NpgsqlTypes;

namespace Patterns.Etl;

/// <summary>
/// Loads batches into PostgreSQL: each batch is one transaction holding a binary COPY (into the table, or into a
/// staging table that is then merged), the bookmark and the quarantined rows.
/// </summary>
internal sealed class PostgresSink<T>(PostgresSinkOptions<T> options) : EtlSink<T>
{
    public override string Name => options.Table;

    public override int PreferredBatchSize => options.BatchSize;

    public override Func<T, long>? RowSize => options.Schema!.EstimateSize;

    public override async ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken)
    {
        var owned = options.DataSource is null ? NpgsqlDataSource.Create(options.ConnectionString!) : null;
        try
        {
            var connection = await (options.DataSource ?? owned!).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            var writer = new Writer(options, context, connection, owned);
            try
            {
                await writer.SetupAsync(cancellationToken).ConfigureAwait(false);
                return writer;
            }
            catch
            {
                await writer.DisposeAsync().ConfigureAwait(false);
                throw;
            }
        }
        catch when (owned is not null)
        {
            await owned.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private sealed class Writer : EtlSinkWriter<T>
    {
        private readonly PostgresSinkOptions<T> _options;
        private readonly EtlSinkContext _context;
        private readonly NpgsqlConnection _connection;
        private readonly NpgsqlDataSource? _owned;
        private readonly PostgresColumnWriter<T>[] _writers;
        private readonly string _table;
        private readonly string _prefix;
        private readonly string _stage;
        private readonly string _seen;
        private readonly string[] _columns;
        private readonly string[] _keys;
        private readonly string _copy;
        private readonly string _merge;
        private readonly Func<T, bool>? _deleted;
        private readonly EtlConsumedPruning _pruning;

        public Writer(PostgresSinkOptions<T> options, EtlSinkContext context, NpgsqlConnection connection, NpgsqlDataSource? owned)
        {
            _options = options;
            _context = context;
            _connection = connection;
            _owned = owned;
            _deleted = options.Deleted;
            _pruning = new EtlConsumedPruning(options.ConsumedRetention);
            var schema = options.Schema!;
            _writers = [.. schema.Columns.Select(PostgresColumnWriter<T>.For)];
            _columns = [.. schema.Columns.Select(c => PgText.Quote(c.Name))];
            _keys = [.. options.Key.Select(k => PgText.Quote(schema.Columns[schema.Ordinal(k)].Name))];
            var dot = options.Table.IndexOf('.', StringComparison.Ordinal);
            var tableName = dot < 0 ? options.Table : options.Table[(dot + 1)..];
            _prefix = dot < 0 ? string.Empty : PgText.Quote(options.Table[..dot]) + ".";
            _table = _prefix + PgText.Quote(tableName);
            _stage = PgText.Quote("etl_stage_" + tableName);
            _seen = _prefix + PgText.Quote(tableName + "_etl_seen");
            var columns = string.Join(", ", _columns);
            _copy = options.Mode == EtlLoadMode.Append
                ? $"COPY {_table} ({columns}) FROM STDIN (FORMAT BINARY)"
                : $"COPY {_stage} ({columns}, etl_seq, etl_delete) FROM STDIN (FORMAT BINARY)";
            var values = _columns.Where(c => !_keys.Contains(c)).ToList();
            var keys = string.Join(", ", _keys);
            var update = values.Count == 0
                ? "DO NOTHING"
                : $"DO UPDATE SET {string.Join(", ", values.Select(c => $"{c} = EXCLUDED.{c}"))} WHERE ({string.Join(", ", values.Select(c => $"t.{c}"))}) IS DISTINCT FROM ({string.Join(", ", values.Select(c => $"EXCLUDED.{c}"))})";
            // The last row of each key in the batch wins; a delete marker deletes its key's row, the others upsert. The
            // deletes and upserts touch different keys, so one statement (one snapshot) does both.
            var match = string.Join(" AND ", _keys.Select(k => $"t.{k} = src.{k}"));
            _merge =
                $"WITH src AS (SELECT DISTINCT ON ({keys}) {columns}, etl_delete FROM {_stage} ORDER BY {keys}, etl_seq DESC), " +
                $"del AS (DELETE FROM {_table} AS t USING src WHERE src.etl_delete AND {match} RETURNING 1), " +
                $"up AS (INSERT INTO {_table} AS t ({columns}) SELECT {columns} FROM src WHERE NOT src.etl_delete ON CONFLICT ({keys}) {update} RETURNING (xmax = 0) AS inserted) " +
                "SELECT (SELECT count(*) FILTER (WHERE inserted) FROM up), (SELECT count(*) FILTER (WHERE NOT inserted) FROM up), (SELECT count(*) FROM del)";
        }

        public override bool StoresBookmarks => true;

        public override bool StoresQuarantine => true;

        private string Bookmarks => _prefix + "patterns_etl_bookmarks";

        private string Quarantine => _prefix + "patterns_etl_quarantine";

        private string Consumed => _prefix + EtlConsumedRecord.Table;

        public override bool StoresConsumed => true;

        public override async ValueTask<IReadOnlySet<string>> ReadConsumedAsync(IReadOnlyList<string> messageIds, CancellationToken cancellationToken)
        {
            // Its own connection: the writer's may be inside a batch's transaction on the loader's task.
            var found = new HashSet<string>(StringComparer.Ordinal);
            var connection = await (_options.DataSource ?? _owned!).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            await using (connection.ConfigureAwait(false))
            {
                var command = new NpgsqlCommand($"SELECT message_id FROM {Consumed} WHERE job = $1 AND partition = $2 AND message_id = ANY($3)", connection);
                await using (command.ConfigureAwait(false))
                {
                    command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _context.Job });
                    command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _context.Partition });
                    command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = [.. messageIds] });
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

        public async Task SetupAsync(CancellationToken cancellationToken)
        {
            var schema = _options.Schema!;
            var definitions = string.Join(", ", schema.Columns.Select(c => $"{PgText.Quote(c.Name)} {PgText.TypeOf(c.Type)}"));
            var primaryKey = _keys.Length > 0 ? $", PRIMARY KEY ({string.Join(", ", _keys)})" : string.Empty;
            // Each object with the name it is looked up by: only the missing ones are created. CREATE ... IF NOT EXISTS
            // is not enough: on an existing table it still needs the schema's CREATE privilege, and on an existing index
            // the table's ownership and a SHARE lock (which waits behind every batch in flight), so a role that only
            // reads and writes the tables could not open a writer.
            var consumedIndex = _prefix + EtlConsumedRecord.Table + "_at";
            var ddl = new List<(string Name, string Sql)>
            {
                (Bookmarks, $"CREATE TABLE IF NOT EXISTS {Bookmarks} (job text NOT NULL, partition text NOT NULL, \"offset\" bigint NOT NULL, line bigint NOT NULL, watermark text, completed boolean NOT NULL, run_id text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (job, partition))"),
                (Quarantine, $"CREATE TABLE IF NOT EXISTS {Quarantine} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id text NOT NULL, job text NOT NULL, partition text NOT NULL, stage text NOT NULL, source text NOT NULL, line bigint NOT NULL, \"offset\" bigint NOT NULL, raw text, column_name text, error text NOT NULL, at timestamptz NOT NULL DEFAULT now())"),
                (Consumed, $"CREATE TABLE IF NOT EXISTS {Consumed} (job text NOT NULL, partition text NOT NULL, message_id text NOT NULL, consumed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (job, partition, message_id))"),
                (consumedIndex, $"CREATE INDEX IF NOT EXISTS {EtlConsumedRecord.Table}_at ON {Consumed} (job, partition, consumed_at)"),
            };
            if (_options.CreateTable)
            {
                ddl.Add((_table, $"CREATE TABLE IF NOT EXISTS {_table} ({definitions}{primaryKey})"));
            }

            if (_options.Mode == EtlLoadMode.Full)
            {
                var keyDefinitions = string.Join(", ", _options.Key.Select(k => schema.Columns[schema.Ordinal(k)]).Select(c => $"{PgText.Quote(c.Name)} {PgText.TypeOf(c.Type)}"));
                ddl.Add((_seen, $"CREATE TABLE IF NOT EXISTS {_seen} (job text NOT NULL, partition text NOT NULL, {keyDefinitions}, PRIMARY KEY (job, partition, {string.Join(", ", _keys)}))"));
            }

            var missing = await MissingAsync(ddl.Select(d => d.Name).ToArray(), cancellationToken).ConfigureAwait(false);
            if (missing.Count > 0)
            {
                var transaction = await _connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
                await using (transaction.ConfigureAwait(false))
                {
                    // Concurrent partitions create the same tables: one at a time.
                    await ExecuteAsync("SELECT pg_advisory_xact_lock(7319001)", cancellationToken).ConfigureAwait(false);
                    foreach (var (_, sql) in ddl.Where(d => missing.Contains(d.Name)))
                    {
                        await ExecuteAsync(sql, cancellationToken).ConfigureAwait(false);
                    }

                    await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
                }
            }

            if (_options.Mode != EtlLoadMode.Append)
            {
                await ExecuteAsync($"CREATE TEMP TABLE IF NOT EXISTS {_stage} ({definitions}, etl_seq bigint NOT NULL, etl_delete boolean NOT NULL) ON COMMIT DELETE ROWS", cancellationToken).ConfigureAwait(false);
            }
        }

        public override async ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken)
        {
            var command = Command($"SELECT \"offset\", line, watermark, completed FROM {Bookmarks} WHERE job = @job AND partition = @partition");
            await using (command.ConfigureAwait(false))
            {
                var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    return await reader.ReadAsync(cancellationToken).ConfigureAwait(false)
                        ? new EtlBookmark(reader.GetInt64(0), reader.GetInt64(1), await reader.IsDBNullAsync(2, cancellationToken).ConfigureAwait(false) ? null : reader.GetString(2), reader.GetBoolean(3))
                        : null;
                }
            }
        }

        public override async ValueTask ResetAsync(CancellationToken cancellationToken)
        {
            if (_options.Mode == EtlLoadMode.Full)
            {
                var command = Command($"DELETE FROM {_seen} WHERE job = @job AND partition = @partition");
                await using (command.ConfigureAwait(false))
                {
                    await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                }
            }
        }

        public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> rows, EtlCommit commit, CancellationToken cancellationToken) =>
            LoadAsync(rows, commit, complete: false, cancellationToken);

        public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) =>
            LoadAsync(ReadOnlyMemory<T>.Empty, commit, complete: true, cancellationToken);

        public override async ValueTask DisposeAsync()
        {
            await _connection.DisposeAsync().ConfigureAwait(false);
            if (_owned is not null)
            {
                await _owned.DisposeAsync().ConfigureAwait(false);
            }

            await base.DisposeAsync().ConfigureAwait(false);
        }

        private async ValueTask<EtlLoadCounts> LoadAsync(ReadOnlyMemory<T> rows, EtlCommit commit, bool complete, CancellationToken cancellationToken)
        {
            var transaction = await _connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            await using (transaction.ConfigureAwait(false))
            {
                long inserted = 0, updated = 0, deleted = 0;
                if (rows.Length > 0)
                {
                    var importer = await _connection.BeginBinaryImportAsync(_copy, cancellationToken).ConfigureAwait(false);
                    await using (importer.ConfigureAwait(false))
                    {
                        Copy(importer, rows.Span, withSequence: _options.Mode != EtlLoadMode.Append);
                        await importer.CompleteAsync(cancellationToken).ConfigureAwait(false);
                    }

                    if (_options.Mode == EtlLoadMode.Append)
                    {
                        inserted = rows.Length;
                    }
                    else
                    {
                        (inserted, updated, deleted) = await MergeAsync(cancellationToken).ConfigureAwait(false);
                        if (_options.Mode == EtlLoadMode.Full)
                        {
                            var keys = string.Join(", ", _keys);
                            var seen = Command($"INSERT INTO {_seen} (job, partition, {keys}) SELECT DISTINCT @job, @partition, {keys} FROM {_stage} ON CONFLICT DO NOTHING");
                            await using (seen.ConfigureAwait(false))
                            {
                                await seen.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                            }
                        }
                    }
                }

                if (complete && _options.Mode == EtlLoadMode.Full)
                {
                    var match = string.Join(" AND ", _keys.Select(k => $"s.{k} = t.{k}"));
                    var delete = Command($"DELETE FROM {_table} AS t WHERE NOT EXISTS (SELECT 1 FROM {_seen} AS s WHERE s.job = @job AND s.partition = @partition AND {match})");
                    await using (delete.ConfigureAwait(false))
                    {
                        deleted += await delete.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                    }

                    var clear = Command($"DELETE FROM {_seen} WHERE job = @job AND partition = @partition");
                    await using (clear.ConfigureAwait(false))
                    {
                        await clear.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                    }
                }

                await SaveAsync(commit, cancellationToken).ConfigureAwait(false);
                await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
                return new EtlLoadCounts(inserted, updated, deleted);
            }
        }

        private void Copy(NpgsqlBinaryImporter importer, ReadOnlySpan<T> rows, bool withSequence)
        {
            var writers = _writers;
            for (var i = 0; i < rows.Length; i++)
            {
                var record = rows[i];
                importer.StartRow();
                foreach (var writer in writers)
                {
                    writer.Write(importer, record);
                }

                if (withSequence)
                {
                    importer.Write((long)i, NpgsqlDbType.Bigint);
                    importer.Write(_deleted is { } deleted && deleted(record), NpgsqlDbType.Boolean);
                }
            }
        }

        private async Task<(long Inserted, long Updated, long Deleted)> MergeAsync(CancellationToken cancellationToken)
        {
            var command = new NpgsqlCommand(_merge, _connection);
            await using (command.ConfigureAwait(false))
            {
                var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                    return (reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2));
                }
            }
        }

        private async Task SaveAsync(EtlCommit commit, CancellationToken cancellationToken)
        {
            var batch = new NpgsqlBatch(_connection);
            NpgsqlBatchCommand? prune = null;
            await using (batch.ConfigureAwait(false))
            {
                if (commit.Bookmark is { } bookmark)
                {
                    var save = new NpgsqlBatchCommand(
                        $"INSERT INTO {Bookmarks} (job, partition, \"offset\", line, watermark, completed, run_id, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now()) " +
                        "ON CONFLICT (job, partition) DO UPDATE SET \"offset\" = EXCLUDED.\"offset\", line = EXCLUDED.line, watermark = EXCLUDED.watermark, completed = EXCLUDED.completed, run_id = EXCLUDED.run_id, updated_at = EXCLUDED.updated_at");
                    save.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _context.Job });
                    save.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _context.Partition });
                    save.Parameters.Add(new NpgsqlParameter<long> { TypedValue = bookmark.Offset });
                    save.Parameters.Add(new NpgsqlParameter<long> { TypedValue = bookmark.Line });
                    save.Parameters.Add(new NpgsqlParameter { Value = (object?)bookmark.Watermark ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text });
                    save.Parameters.Add(new NpgsqlParameter<bool> { TypedValue = bookmark.Completed });
                    save.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _context.RunId });
                    batch.BatchCommands.Add(save);
                }

                if (commit.Consumed.Count > 0)
                {
                    // The messages this batch covers, recorded with it; and, when due, those recorded before the retention go.
                    // A plain insert: an id already recorded means the check before the batch missed it, and the batch
                    // would load its message twice. It fails instead; the messages go back to the queue and the next
                    // check skips that one.
                    // The application's clock, as the cut-off's: stamps and cut-off compare on one clock.
                    var now = _context.Time.GetUtcNow();
                    var record = new NpgsqlBatchCommand($"INSERT INTO {Consumed} (job, partition, message_id, consumed_at) SELECT $1, $2, unnest($3), $4");
                    record.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _context.Job });
                    record.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _context.Partition });
                    record.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = [.. commit.Consumed] });
                    record.Parameters.Add(new NpgsqlParameter<DateTime> { TypedValue = now.UtcDateTime });
                    batch.BatchCommands.Add(record);
                    if (_pruning.Due(now) is { } cutoff)
                    {
                        prune = new NpgsqlBatchCommand(
                            $"DELETE FROM {Consumed} WHERE job = $1 AND partition = $2 AND message_id IN " +
                            $"(SELECT message_id FROM {Consumed} WHERE job = $1 AND partition = $2 AND consumed_at < $3 LIMIT {EtlConsumedPruning.Chunk})");
                        prune.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _context.Job });
                        prune.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _context.Partition });
                        prune.Parameters.Add(new NpgsqlParameter<DateTime> { TypedValue = cutoff.UtcDateTime });
                        batch.BatchCommands.Add(prune);
                    }
                }

                foreach (var row in commit.Quarantined)
                {
                    var insert = new NpgsqlBatchCommand(
                        $"INSERT INTO {Quarantine} (run_id, job, partition, stage, source, line, \"offset\", raw, column_name, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
                    insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = row.RunId });
                    insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _context.Job });
                    insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _context.Partition });
                    insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = row.Stage });
                    insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = row.Source });
                    insert.Parameters.Add(new NpgsqlParameter<long> { TypedValue = row.Line });
                    insert.Parameters.Add(new NpgsqlParameter<long> { TypedValue = row.Offset });
                    insert.Parameters.Add(new NpgsqlParameter { Value = (object?)row.Raw ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text });
                    insert.Parameters.Add(new NpgsqlParameter { Value = (object?)row.Column ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text });
                    insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = row.Error });
                    batch.BatchCommands.Add(insert);
                }

                if (batch.BatchCommands.Count > 0)
                {
                    try
                    {
                        await batch.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                        if (prune is not null)
                        {
                            _pruning.Pruned(prune.RecordsAffected);
                        }
                    }
                    catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UniqueViolation && ex.TableName == EtlConsumedRecord.Table)
                    {
                        throw EtlConsumedRecord.AlreadyConsumed(_context, null, ex);
                    }
                }
            }
        }

        private NpgsqlCommand Command(string sql)
        {
            var command = new NpgsqlCommand(sql, _connection);
            command.Parameters.Add(new NpgsqlParameter<string>("job", _context.Job));
            command.Parameters.Add(new NpgsqlParameter<string>("partition", _context.Partition));
            return command;
        }

        /// <summary>Returns the names (as written in SQL) that name no table or index yet.</summary>
        private async Task<HashSet<string>> MissingAsync(string[] names, CancellationToken cancellationToken)
        {
            var missing = new HashSet<string>(StringComparer.Ordinal);
            var command = new NpgsqlCommand("SELECT n FROM unnest($1) AS n WHERE to_regclass(n) IS NULL", _connection);
            await using (command.ConfigureAwait(false))
            {
                command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = names });
                var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                    {
                        missing.Add(reader.GetString(0));
                    }
                }
            }

            return missing;
        }

        private async Task ExecuteAsync(string sql, CancellationToken cancellationToken)
        {
            var command = new NpgsqlCommand(sql, _connection);
            await using (command.ConfigureAwait(false))
            {
                await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }
}

/// <summary>Writes one column of a record to a binary COPY, typed (no boxing).</summary>
internal abstract class PostgresColumnWriter<T>
{
    public static PostgresColumnWriter<T> For(EtlColumn<T> column) => column.Type switch
    {
        EtlColumnType.Int32 => new Value<int>(column.Getter<int>(), NpgsqlDbType.Integer),
        EtlColumnType.Int64 => new Value<long>(column.Getter<long>(), NpgsqlDbType.Bigint),
        EtlColumnType.Decimal => new Value<decimal>(column.Getter<decimal>(), NpgsqlDbType.Numeric),
        EtlColumnType.Double => new Value<double>(column.Getter<double>(), NpgsqlDbType.Double),
        EtlColumnType.Boolean => new Value<bool>(column.Getter<bool>(), NpgsqlDbType.Boolean),
        EtlColumnType.Guid => new Value<Guid>(column.Getter<Guid>(), NpgsqlDbType.Uuid),
        EtlColumnType.DateTime => new Time(column.Getter<DateTime>()),
        _ => new Text(column.Getter<string?>()),
    };

    public abstract void Write(NpgsqlBinaryImporter importer, T record);

    private sealed class Value<TValue>(Func<T, TValue> get, NpgsqlDbType type) : PostgresColumnWriter<T>
    {
        public override void Write(NpgsqlBinaryImporter importer, T record) => importer.Write(get(record), type);
    }

    private sealed class Time(Func<T, DateTime> get) : PostgresColumnWriter<T>
    {
        public override void Write(NpgsqlBinaryImporter importer, T record) => importer.Write(DateTime.SpecifyKind(get(record), DateTimeKind.Utc), NpgsqlDbType.TimestampTz);
    }

    private sealed class Text(Func<T, string?> get) : PostgresColumnWriter<T>
    {
        public override void Write(NpgsqlBinaryImporter importer, T record)
        {
            if (get(record) is { } value)
            {
                importer.Write(value, NpgsqlDbType.Text);
            }
            else
            {
                importer.WriteNull();
            }
        }
    }
}

internal static class PgText
{
    public static string Quote(string identifier) => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    public static string TypeOf(EtlColumnType type) => type switch
    {
        EtlColumnType.Int32 => "integer",
        EtlColumnType.Int64 => "bigint",
        EtlColumnType.Decimal => "numeric",
        EtlColumnType.Double => "double precision",
        EtlColumnType.Boolean => "boolean",
        EtlColumnType.DateTime => "timestamptz",
        EtlColumnType.Guid => "uuid",
        _ => "text",
    };
}
