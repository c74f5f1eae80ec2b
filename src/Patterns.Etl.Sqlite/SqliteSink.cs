using System.Globalization;
using System.Text;
using Microsoft.Data.Sqlite;

namespace Patterns.Etl;

/// <summary>
/// Loads batches into SQLite: each batch is one transaction holding the rows (prepared multi-row INSERTs, bound
/// through SQLite's own API with no boxing), the merge statements, the bookmark and the quarantined rows.
/// </summary>
internal sealed class SqliteSink<T>(SqliteSinkOptions<T> options) : EtlSink<T>
{
    public override string Name => options.Table;

    public override int PreferredBatchSize => options.BatchSize;

    public override Func<T, long>? RowSize => options.Schema!.EstimateSize;

    public override ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) =>
        new(new Writer(options, context));

    private sealed class Writer : EtlSinkWriter<T>
    {
        private readonly SqliteSinkOptions<T> _options;
        private readonly EtlSinkContext _context;
        private readonly SqliteConnection _connection;
        private readonly SqliteRowInserter<T> _inserter;
        private readonly string _table;
        private readonly string _stage;
        private readonly string _seen;
        private readonly string[] _columns;
        private readonly string[] _keys;
        private readonly EtlConsumedPruning _pruning;
        private SqliteConnection? _reader;

        public Writer(SqliteSinkOptions<T> options, EtlSinkContext context)
        {
            _options = options;
            _context = context;
            var schema = options.Schema!;
            _columns = [.. schema.Columns.Select(c => SqliteText.Quote(c.Name))];
            _keys = [.. options.Key.Select(k => SqliteText.Quote(schema.Columns[schema.Ordinal(k)].Name))];
            _table = SqliteText.Quote(options.Table);
            _stage = "temp." + SqliteText.Quote("etl_stage_" + options.Table);
            _seen = SqliteText.Quote("etl_seen_" + options.Table);
            _pruning = new EtlConsumedPruning(options.ConsumedRetention);
            _connection = new SqliteConnection(options.ConnectionString);
            _connection.Open();
            try
            {
                Execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;");
                Setup(schema);
                _inserter = new SqliteRowInserter<T>(
                    _connection,
                    options.Mode == EtlLoadMode.Append
                        ? "INSERT INTO " + _table + " (" + string.Join(", ", _columns) + ") VALUES "
                        : "INSERT OR REPLACE INTO " + _stage + " (" + string.Join(", ", _columns) + ", etl_delete) VALUES ",
                    schema,
                    options.RowsPerStatement,
                    options.Mode == EtlLoadMode.Append ? null : options.Deleted ?? (static _ => false));
            }
            catch
            {
                _connection.Dispose();
                throw;
            }
        }

        public override bool StoresBookmarks => true;

        public override bool StoresQuarantine => true;

        public override bool StoresConsumed => true;

        public override async ValueTask<IReadOnlySet<string>> ReadConsumedAsync(IReadOnlyList<string> messageIds, CancellationToken cancellationToken)
        {
            // Its own connection: the writer's may be inside a batch's transaction on the loader's task.
            if (_reader is null)
            {
                _reader = new SqliteConnection(_options.ConnectionString);
                await _reader.OpenAsync(cancellationToken).ConfigureAwait(false);
                using var setup = _reader.CreateCommand();
                setup.CommandText = "PRAGMA busy_timeout=30000;";
                await setup.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }

            var found = new HashSet<string>(StringComparer.Ordinal);
            using var command = _reader.CreateCommand();
            var names = new StringBuilder();
            for (var i = 0; i < messageIds.Count; i++)
            {
                var name = "@m" + i.ToString(CultureInfo.InvariantCulture);
                names.Append(i == 0 ? name : "," + name);
                command.Parameters.AddWithValue(name, messageIds[i]);
            }

            command.CommandText = $"SELECT message_id FROM {EtlConsumedRecord.Table} WHERE job = @job AND partition = @partition AND message_id IN ({names})";
            command.Parameters.AddWithValue("@job", _context.Job);
            command.Parameters.AddWithValue("@partition", _context.Partition);
            using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                found.Add(reader.GetString(0));
            }

            return found;
        }

        public override ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken) => new(ReadBookmark());

        private EtlBookmark? ReadBookmark()
        {
            using var command = Command("SELECT \"offset\", line, watermark, completed FROM patterns_etl_bookmarks WHERE job = @job AND partition = @partition");
            using var reader = command.ExecuteReader();
            return reader.Read()
                ? new EtlBookmark(reader.GetInt64(0), reader.GetInt64(1), reader.IsDBNull(2) ? null : reader.GetString(2), reader.GetInt64(3) != 0)
                : null;
        }

        public override ValueTask ResetAsync(CancellationToken cancellationToken)
        {
            if (_options.Mode == EtlLoadMode.Full)
            {
                Execute($"DELETE FROM {_seen}");
            }

            return default;
        }

        public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> rows, EtlCommit commit, CancellationToken cancellationToken) =>
            new(Write(rows.Span, commit, complete: false));

        public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) =>
            new(Write([], commit, complete: true));

        public override ValueTask DisposeAsync()
        {
            _inserter?.Dispose();
            _connection.Dispose();
            _reader?.Dispose();
            return base.DisposeAsync();
        }

        private EtlLoadCounts Write(ReadOnlySpan<T> rows, EtlCommit commit, bool complete)
        {
            using var transaction = _connection.BeginTransaction();
            long inserted = 0, updated = 0, deleted = 0;
            if (rows.Length > 0)
            {
                _inserter.Insert(rows);
                if (_options.Mode == EtlLoadMode.Append)
                {
                    inserted = rows.Length;
                }
                else
                {
                    var columns = string.Join(", ", _columns);
                    var match = string.Join(" AND ", _keys.Select(k => $"t.{k} = s.{k}"));
                    var values = _columns.Where(c => !_keys.Contains(c)).ToList();

                    // The staging table keeps the last row of each key; a delete marker deletes its key's row, the others upsert.
                    if (_options.Deleted is not null)
                    {
                        deleted = Execute($"DELETE FROM {_table} AS t WHERE EXISTS (SELECT 1 FROM {_stage} AS s WHERE s.etl_delete AND {match})");
                    }

                    if (values.Count > 0)
                    {
                        updated = Execute(
                            $"UPDATE {_table} AS t SET {string.Join(", ", values.Select(c => $"{c} = s.{c}"))} FROM {_stage} AS s WHERE {match} AND NOT s.etl_delete AND NOT ({string.Join(" AND ", values.Select(c => $"t.{c} IS s.{c}"))})");
                    }

                    inserted = Execute($"INSERT INTO {_table} ({columns}) SELECT {columns} FROM {_stage} AS s WHERE NOT s.etl_delete AND NOT EXISTS (SELECT 1 FROM {_table} AS t WHERE {match})");
                    if (_options.Mode == EtlLoadMode.Full)
                    {
                        Execute($"INSERT OR IGNORE INTO {_seen} ({string.Join(", ", _keys)}) SELECT {string.Join(", ", _keys)} FROM {_stage}");
                    }

                    Execute($"DELETE FROM {_stage}");
                }
            }

            if (complete && _options.Mode == EtlLoadMode.Full)
            {
                var match = string.Join(" AND ", _keys.Select(k => $"s.{k} = t.{k}"));
                deleted += Execute($"DELETE FROM {_table} AS t WHERE NOT EXISTS (SELECT 1 FROM {_seen} AS s WHERE {match})");
                Execute($"DELETE FROM {_seen}");
            }

            if (commit.Bookmark is { } bookmark)
            {
                using var command = Command(
                    "INSERT INTO patterns_etl_bookmarks (job, partition, \"offset\", line, watermark, completed, run_id, updated_at) VALUES (@job, @partition, @offset, @line, @watermark, @completed, @run, @at) " +
                    "ON CONFLICT (job, partition) DO UPDATE SET \"offset\" = excluded.\"offset\", line = excluded.line, watermark = excluded.watermark, completed = excluded.completed, run_id = excluded.run_id, updated_at = excluded.updated_at");
                command.Parameters.AddWithValue("@offset", bookmark.Offset);
                command.Parameters.AddWithValue("@line", bookmark.Line);
                command.Parameters.AddWithValue("@watermark", (object?)bookmark.Watermark ?? DBNull.Value);
                command.Parameters.AddWithValue("@completed", bookmark.Completed ? 1 : 0);
                command.Parameters.AddWithValue("@run", _context.RunId);
                command.Parameters.AddWithValue("@at", _context.Time.GetUtcNow().UtcDateTime.ToString("O", CultureInfo.InvariantCulture));
                command.ExecuteNonQuery();
            }

            if (commit.Consumed.Count > 0)
            {
                RecordConsumed(commit.Consumed);
            }

            if (commit.Quarantined.Count > 0)
            {
                using var command = Command(
                    "INSERT INTO patterns_etl_quarantine (run_id, job, partition, stage, source, line, \"offset\", raw, column_name, error) VALUES (@run, @job, @partition, @stage, @source, @line, @offset, @raw, @column, @error)");
                var parameters = new[] { "@run", "@stage", "@source", "@line", "@offset", "@raw", "@column", "@error" }.Select(n => command.Parameters.Add(n, SqliteType.Text)).ToArray();
                command.Prepare();
                foreach (var row in commit.Quarantined)
                {
                    parameters[0].Value = row.RunId;
                    parameters[1].Value = row.Stage;
                    parameters[2].Value = row.Source;
                    parameters[3].Value = row.Line;
                    parameters[4].Value = row.Offset;
                    parameters[5].Value = (object?)row.Raw ?? DBNull.Value;
                    parameters[6].Value = (object?)row.Column ?? DBNull.Value;
                    parameters[7].Value = row.Error;
                    command.ExecuteNonQuery();
                }
            }

            transaction.Commit();
            return new EtlLoadCounts(inserted, updated, deleted);
        }

        /// <summary>SQLITE_CONSTRAINT_PRIMARYKEY: the id is recorded already (not another constraint, or a NOT NULL).</summary>
        private const int PrimaryKeyConflict = 1555;

        /// <summary>Records the messages the batch covers, in its transaction, and removes those older than the retention when due.</summary>
        private void RecordConsumed(IReadOnlyList<string> ids)
        {
            var now = _context.Time.GetUtcNow();

            // A plain insert: an id already recorded means the check before the batch missed it, and the batch would load
            // its message twice. It fails instead; the messages go back to the queue and the next check skips that one.
            using (var command = Command($"INSERT INTO {EtlConsumedRecord.Table} (job, partition, message_id, consumed_at) VALUES (@job, @partition, @id, @at)"))
            {
                var id = command.Parameters.Add("@id", SqliteType.Text);
                command.Parameters.AddWithValue("@at", now.ToUnixTimeMilliseconds());
                command.Prepare();
                foreach (var messageId in ids)
                {
                    id.Value = messageId;
                    try
                    {
                        command.ExecuteNonQuery();
                    }
                    catch (SqliteException ex) when (ex.SqliteExtendedErrorCode == PrimaryKeyConflict)
                    {
                        throw EtlConsumedRecord.AlreadyConsumed(_context, messageId, ex);
                    }
                }
            }

            if (_pruning.Due(now) is { } cutoff)
            {
                using var prune = Command(
                    $"DELETE FROM {EtlConsumedRecord.Table} WHERE job = @job AND partition = @partition AND message_id IN " +
                    $"(SELECT message_id FROM {EtlConsumedRecord.Table} WHERE job = @job AND partition = @partition AND consumed_at < @cutoff LIMIT {EtlConsumedPruning.Chunk})");
                prune.Parameters.AddWithValue("@cutoff", cutoff.ToUnixTimeMilliseconds());
                _pruning.Pruned(prune.ExecuteNonQuery());
            }
        }

        private void Setup(EtlSchema<T> schema)
        {
            var definitions = string.Join(", ", schema.Columns.Select(c => $"{SqliteText.Quote(c.Name)} {SqliteText.TypeOf(c.Type)}"));
            var primaryKey = _keys.Length > 0 ? $", PRIMARY KEY ({string.Join(", ", _keys)})" : string.Empty;
            if (_options.CreateTable)
            {
                Execute($"CREATE TABLE IF NOT EXISTS {_table} ({definitions}{primaryKey})");
            }

            Execute(
                "CREATE TABLE IF NOT EXISTS patterns_etl_bookmarks (job TEXT NOT NULL, partition TEXT NOT NULL, \"offset\" INTEGER NOT NULL, line INTEGER NOT NULL, watermark TEXT, completed INTEGER NOT NULL, run_id TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (job, partition));" +
                "CREATE TABLE IF NOT EXISTS patterns_etl_quarantine (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, job TEXT NOT NULL, partition TEXT NOT NULL, stage TEXT NOT NULL, source TEXT NOT NULL, line INTEGER NOT NULL, \"offset\" INTEGER NOT NULL, raw TEXT, column_name TEXT, error TEXT NOT NULL);" +
                $"CREATE TABLE IF NOT EXISTS {EtlConsumedRecord.Table} (job TEXT NOT NULL, partition TEXT NOT NULL, message_id TEXT NOT NULL, consumed_at INTEGER NOT NULL, PRIMARY KEY (job, partition, message_id)) WITHOUT ROWID;" +
                $"CREATE INDEX IF NOT EXISTS {EtlConsumedRecord.Table}_at ON {EtlConsumedRecord.Table} (job, partition, consumed_at);");
            if (_options.Mode != EtlLoadMode.Append)
            {
                Execute($"CREATE TEMP TABLE IF NOT EXISTS {_stage["temp.".Length..]} ({definitions}, etl_delete INTEGER NOT NULL{primaryKey})");
            }

            if (_options.Mode == EtlLoadMode.Full)
            {
                var keyDefinitions = string.Join(", ", _options.Key.Select(k => schema.Columns[schema.Ordinal(k)]).Select(c => $"{SqliteText.Quote(c.Name)} {SqliteText.TypeOf(c.Type)}"));
                Execute($"CREATE TABLE IF NOT EXISTS {_seen} ({keyDefinitions}, PRIMARY KEY ({string.Join(", ", _keys)}))");
            }
        }

        private SqliteCommand Command(string sql)
        {
            var command = _connection.CreateCommand();
            command.CommandText = sql;
            command.Parameters.AddWithValue("@job", _context.Job);
            command.Parameters.AddWithValue("@partition", _context.Partition);
            return command;
        }

        private int Execute(string sql)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = sql;
            return command.ExecuteNonQuery();
        }
    }
}

internal static class SqliteText
{
    public static string Quote(string identifier) => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    public static string TypeOf(EtlColumnType type) => type switch
    {
        EtlColumnType.Int32 or EtlColumnType.Int64 or EtlColumnType.Boolean => "INTEGER",
        EtlColumnType.Double => "REAL",
        _ => "TEXT",
    };

    public static string Values(int rows, int columns)
    {
        var text = new StringBuilder();
        var n = 1;
        for (var r = 0; r < rows; r++)
        {
            text.Append(r == 0 ? "(" : ",(");
            for (var c = 0; c < columns; c++)
            {
                text.Append(c == 0 ? "?" : ",?").Append(n++.ToString(CultureInfo.InvariantCulture));
            }

            text.Append(')');
        }

        return text.ToString();
    }
}
