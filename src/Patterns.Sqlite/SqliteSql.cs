namespace Patterns.Sqlite;

/// <summary>The schema and every statement the store runs, with the table prefix applied.</summary>
/// <remarks>
/// Tables: <c>events</c> (the global log; <c>position</c> is the rowid), <c>streams</c> (version, deletion and truncation
/// of each stream), <c>log</c> (one row: the highest position, kept across hard deletes), <c>snapshots</c>, <c>checkpoints</c>, <c>documents</c>,
/// <c>inbox</c>, <c>outbox</c> (messages stored by units of work; the sequence is an AUTOINCREMENT rowid, so it is
/// never reused, even after deletes), <c>leases</c> (owner, fencing token and expiry per name) and <c>schema</c> (one
/// row: the schema version). Positions are assigned by the writer after the highest
/// one given so far, inside the write transaction, so they follow commit order even with several writing processes;
/// the <c>log</c> row remembers the highest position when a hard delete removes it, so positions are never reused.
/// </remarks>
internal sealed class SqliteSql
{
    /// <summary>The schema version this code creates and understands.</summary>
    /// <remarks>Version 2 added the <c>outbox</c> and <c>leases</c> tables; a version 1 file gets them in place when it is opened.</remarks>
    public const int SchemaVersion = 2;

    /// <summary>
    /// The columns every event query selects, in the order <see cref="SqliteRows.ReadEvent"/> reads them; the last one says
    /// whether any optional column is set, so a bare event costs one column read instead of three.
    /// </summary>
    public const string EventColumns =
        "position, stream_id, version, event_id, event_type, data, metadata, correlation_id, causation_id, timestamp, "
        + "metadata IS NOT NULL OR correlation_id IS NOT NULL OR causation_id IS NOT NULL";

    public SqliteSql(string prefix)
    {
        var events = prefix + "events";
        var streams = prefix + "streams";
        var log = prefix + "log";
        var snapshots = prefix + "snapshots";
        var checkpoints = prefix + "checkpoints";
        var documents = prefix + "documents";
        var inbox = prefix + "inbox";
        var outbox = prefix + "outbox";
        var leases = prefix + "leases";
        var schema = prefix + "schema";
        Events = events;

        CreateSchema = $"""
            CREATE TABLE IF NOT EXISTS {schema} (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
            INSERT OR IGNORE INTO {schema} (id, version) VALUES (1, {SchemaVersion});
            CREATE TABLE IF NOT EXISTS {events} (
                position INTEGER PRIMARY KEY,
                stream_id TEXT NOT NULL,
                version INTEGER NOT NULL,
                event_id BLOB NOT NULL,
                event_type TEXT NOT NULL,
                data BLOB NOT NULL,
                metadata BLOB,
                correlation_id TEXT,
                causation_id TEXT,
                timestamp INTEGER NOT NULL);
            CREATE UNIQUE INDEX IF NOT EXISTS {events}_stream ON {events} (stream_id, version);
            CREATE INDEX IF NOT EXISTS {events}_event_id ON {events} (event_id);
            CREATE TABLE IF NOT EXISTS {streams} (
                stream_id TEXT PRIMARY KEY,
                version INTEGER NOT NULL,
                deleted INTEGER NOT NULL DEFAULT 0,
                truncated_before INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS {log} (id INTEGER PRIMARY KEY CHECK (id = 1), head INTEGER NOT NULL);
            INSERT OR IGNORE INTO {log} (id, head) VALUES (1, 0);
            CREATE TABLE IF NOT EXISTS {snapshots} (
                stream_id TEXT PRIMARY KEY,
                version INTEGER NOT NULL,
                snapshot_type TEXT NOT NULL,
                schema_version INTEGER NOT NULL,
                data BLOB NOT NULL,
                timestamp INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS {checkpoints} (name TEXT PRIMARY KEY, position INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS {documents} (
                collection TEXT NOT NULL,
                id TEXT NOT NULL,
                data BLOB NOT NULL,
                PRIMARY KEY (collection, id)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS {inbox} (
                consumer TEXT NOT NULL,
                message_id TEXT NOT NULL,
                handled_at INTEGER NOT NULL,
                PRIMARY KEY (consumer, message_id)) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS {inbox}_handled_at ON {inbox} (handled_at);
            CREATE TABLE IF NOT EXISTS {outbox} (
                sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                destination TEXT NOT NULL,
                kind INTEGER NOT NULL,
                partition_key TEXT,
                payload BLOB NOT NULL,
                enqueued_at INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS {leases} (
                name TEXT PRIMARY KEY,
                owner TEXT,
                token INTEGER NOT NULL,
                expires_at INTEGER NOT NULL) WITHOUT ROWID;
            UPDATE {schema} SET version = {SchemaVersion} WHERE id = 1 AND version = 1;
            """;
        SelectSchemaVersion = $"SELECT version FROM {schema} WHERE id = 1";
        SchemaTableExists = $"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{schema}'";

        // The head is the highest position in the log, or higher when a hard delete removed the top of the log: the
        // log row then keeps the highest position ever given, so that positions are never reused.
        SelectHead = $"SELECT max(coalesce((SELECT max(position) FROM {events}), 0), (SELECT head FROM {log} WHERE id = 1))";
        KeepHead = $"UPDATE {log} SET head = max(head, coalesce((SELECT max(position) FROM {events}), 0)) WHERE id = 1";

        SelectStream = $"SELECT version, deleted, truncated_before FROM {streams} WHERE stream_id = @stream";
        UpsertStreamVersion = $"INSERT INTO {streams} (stream_id, version) VALUES (@stream, @version) ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version";
        MarkStreamDeleted = $"INSERT INTO {streams} (stream_id, version, deleted) VALUES (@stream, @version, @deleted) ON CONFLICT (stream_id) DO UPDATE SET deleted = max(deleted, excluded.deleted)";
        DeleteStreamEvents = $"DELETE FROM {events} WHERE stream_id = @stream";
        DeleteSnapshot = $"DELETE FROM {snapshots} WHERE stream_id = @stream";
        TruncateStream = $"UPDATE {streams} SET truncated_before = @before WHERE stream_id = @stream AND truncated_before < @before";
        FindEvent = $"SELECT version, position FROM {events} WHERE event_id = @id AND stream_id = @stream";

        InsertEvent = InsertEvents(1);

        ReadStreamForward = $"SELECT {EventColumns} FROM {events} WHERE stream_id = @stream AND version >= @from ORDER BY version LIMIT @limit";
        ReadStreamBackward = $"SELECT {EventColumns} FROM {events} WHERE stream_id = @stream AND version <= @from AND version >= @floor ORDER BY version DESC LIMIT @limit";
        ReadAll = $"SELECT {EventColumns} FROM {events} WHERE position > @after ORDER BY position LIMIT @limit";

        SelectSnapshot = $"SELECT version, snapshot_type, schema_version, data, timestamp FROM {snapshots} WHERE stream_id = @stream";
        UpsertSnapshot = $"""
            INSERT INTO {snapshots} (stream_id, version, snapshot_type, schema_version, data, timestamp)
            VALUES (@stream, @version, @type, @schema, @data, @timestamp)
            ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, snapshot_type = excluded.snapshot_type,
                schema_version = excluded.schema_version, data = excluded.data, timestamp = excluded.timestamp
            WHERE excluded.version >= {snapshots}.version
            """;

        SelectCheckpoint = $"SELECT position FROM {checkpoints} WHERE name = @name";
        UpsertCheckpoint = $"INSERT INTO {checkpoints} (name, position) VALUES (@name, @position) ON CONFLICT (name) DO UPDATE SET position = excluded.position";

        SelectDocument = $"SELECT data FROM {documents} WHERE collection = @collection AND id = @id";
        UpsertDocument = $"INSERT INTO {documents} (collection, id, data) VALUES (@collection, @id, @data) ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data";
        DeleteDocument = $"DELETE FROM {documents} WHERE collection = @collection AND id = @id";
        ClearDocuments = $"DELETE FROM {documents} WHERE collection = @collection";
        ListDocuments = $"SELECT id, data FROM {documents} WHERE collection = @collection AND id > @after ORDER BY id LIMIT @limit";
        ListDocumentsFirst = $"SELECT id, data FROM {documents} WHERE collection = @collection ORDER BY id LIMIT @limit";

        InboxContains = $"SELECT 1 FROM {inbox} WHERE consumer = @consumer AND message_id = @id";
        InboxMark = $"INSERT INTO {inbox} (consumer, message_id, handled_at) VALUES (@consumer, @id, @at) ON CONFLICT (consumer, message_id) DO NOTHING";
        InboxPrune = $"DELETE FROM {inbox} WHERE handled_at < @before";

        InsertOutbox = $"INSERT INTO {outbox} (destination, kind, partition_key, payload, enqueued_at) VALUES (@destination, @kind, @key, @payload, @at) RETURNING sequence";
        ReadOutbox = $"SELECT sequence, destination, kind, partition_key, payload, enqueued_at FROM {outbox} WHERE sequence > @after ORDER BY sequence LIMIT @limit";
        DeleteOutbox = $"DELETE FROM {outbox} WHERE sequence <= @through";
        SelectOutboxHead = $"SELECT coalesce(max(sequence), 0) FROM {outbox}";

        SelectLease = $"SELECT owner, token FROM {leases} WHERE name = @name";

        // Free, expired or already the caller's: take it. The token goes up unless the owner stays the same (a renewal);
        // SET reads the row's old values, so the CASE compares with the previous owner. A row that another owner holds
        // and that has not expired fails the WHERE, and RETURNING then yields no row.
        AcquireLease = $"""
            INSERT INTO {leases} (name, owner, token, expires_at) VALUES (@name, @owner, 1, @expires)
            ON CONFLICT (name) DO UPDATE SET
                token = CASE WHEN owner IS excluded.owner THEN token ELSE token + 1 END,
                owner = excluded.owner,
                expires_at = excluded.expires_at
            WHERE owner IS NULL OR owner = excluded.owner OR expires_at <= @now
            RETURNING token
            """;
        RenewLease = $"UPDATE {leases} SET expires_at = @expires WHERE name = @name AND owner = @owner AND token = @token";

        // The token stays, so whoever takes the lease next gets a greater one.
        ReleaseLease = $"UPDATE {leases} SET owner = NULL, expires_at = @expires WHERE name = @name AND owner = @owner AND token = @token";
    }

    public string Events { get; }

    public string CreateSchema { get; }

    public string SelectSchemaVersion { get; }

    public string SchemaTableExists { get; }

    public string SelectHead { get; }

    public string KeepHead { get; }

    public string SelectStream { get; }

    public string UpsertStreamVersion { get; }

    public string MarkStreamDeleted { get; }

    public string DeleteStreamEvents { get; }

    public string DeleteSnapshot { get; }

    public string TruncateStream { get; }

    public string FindEvent { get; }

    public string InsertEvent { get; }

    public string ReadStreamForward { get; }

    public string ReadStreamBackward { get; }

    public string ReadAll { get; }

    public string SelectSnapshot { get; }

    public string UpsertSnapshot { get; }

    public string SelectCheckpoint { get; }

    public string UpsertCheckpoint { get; }

    public string SelectDocument { get; }

    public string UpsertDocument { get; }

    public string DeleteDocument { get; }

    public string ClearDocuments { get; }

    public string ListDocuments { get; }

    public string ListDocumentsFirst { get; }

    public string InboxContains { get; }

    public string InboxMark { get; }

    public string InboxPrune { get; }

    public string InsertOutbox { get; }

    public string ReadOutbox { get; }

    public string DeleteOutbox { get; }

    public string SelectOutboxHead { get; }

    public string SelectLease { get; }

    public string AcquireLease { get; }

    public string RenewLease { get; }

    public string ReleaseLease { get; }

    /// <summary>An INSERT of <paramref name="rows"/> events; row <c>i</c> binds parameters <c>@pN_i</c>.</summary>
    public string InsertEvents(int rows)
    {
        var text = new System.Text.StringBuilder(160 + (rows * 80));
        text.Append("INSERT INTO ").Append(Events)
            .Append(" (position, stream_id, version, event_id, event_type, data, metadata, correlation_id, causation_id, timestamp) VALUES ");
        for (var i = 0; i < rows; i++)
        {
            if (i > 0)
            {
                text.Append(',');
            }

            text.Append(System.Globalization.CultureInfo.InvariantCulture,
                $"(@p{i},@s{i},@v{i},@i{i},@t{i},@d{i},@m{i},@c{i},@k{i},@ts{i})");
        }

        return text.ToString();
    }

    /// <summary>A page of the global log with a filter; <c>@type0</c>.. bind the event types, <c>@prefix</c> the stream prefix as UTF-8 bytes.</summary>
    public string ReadAllFiltered(int eventTypes, bool streamPrefix)
    {
        var text = new System.Text.StringBuilder(256);
        text.Append("SELECT ").Append(EventColumns).Append(" FROM ").Append(Events).Append(" WHERE position > @after");
        if (eventTypes > 0)
        {
            text.Append(" AND event_type IN (");
            for (var i = 0; i < eventTypes; i++)
            {
                text.Append(i == 0 ? "@type" : ",@type").Append(i.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }

            text.Append(')');
        }

        if (streamPrefix)
        {
            // Byte-wise prefix of the UTF-8 text: the same as an ordinal prefix match on the .NET string.
            text.Append(" AND substr(CAST(stream_id AS BLOB), 1, length(@prefix)) = @prefix");
        }

        text.Append(" ORDER BY position LIMIT @limit");
        return text.ToString();
    }
}
