using System.Globalization;

namespace Patterns.Postgres;

/// <summary>The store's DDL, versioned migrations and the SQL text of every statement, for one schema.</summary>
/// <remarks>
/// The schema name is validated against <see cref="PostgresEventStoreOptions.SchemaPattern"/> before it gets here,
/// so it is safe to splice into SQL as a quoted identifier.
/// </remarks>
internal sealed class PostgresSchema
{
    /// <summary>The error code the append and delete functions raise when the expected version does not hold; the message ends with the actual version.</summary>
    public const string WrongExpectedVersionState = "PT409";

    /// <summary>The error code the append function raises for a deleted stream.</summary>
    public const string StreamDeletedState = "PT410";

    /// <summary>The unique constraint that makes event ids unique within a stream.</summary>
    public const string EventIdConstraint = "events_stream_event_id";

    /// <summary>The unique constraint on (stream, version).</summary>
    public const string StreamVersionConstraint = "events_stream_version";

    public PostgresSchema(string schema)
    {
        Name = schema;
        var s = $"\"{schema}\"";
        Channel = schema + "_events";
        OutboxChannel = schema + "_outbox";
        LeaseChannel = schema + "_leases";
        MigrationLockKey = StableKey("patterns:migrate:" + schema);
        Migrations = BuildMigrations(s);

        Append = $"SELECT new_version, first_position FROM {s}.append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        CommitUnits = $"""
            SELECT status, new_version, first_position, last_sequence
            FROM {s}.commit_units($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
            """;
        FindEventIds = $"SELECT event_id, version, position FROM {s}.events WHERE stream_id = $1 AND event_id = ANY($2)";
        StreamState = $"SELECT version, deleted, truncated_before FROM {s}.streams WHERE stream_id = $1";
        const string Columns = "event_id, stream_id, version, position, event_type, data, created_at, correlation_id, causation_id, metadata";
        const string Truncation = "(SELECT truncated_before FROM {0}.streams WHERE stream_id = $1)";
        var truncation = string.Format(CultureInfo.InvariantCulture, Truncation, s);
        ReadStreamForward = $"SELECT {Columns} FROM {s}.events WHERE stream_id = $1 AND version >= greatest($2, {truncation}) ORDER BY version LIMIT $3";
        ReadStreamBackward = $"SELECT {Columns} FROM {s}.events WHERE stream_id = $1 AND version <= $2 AND version >= coalesce({truncation}, 0) ORDER BY version DESC LIMIT $3";
        ReadAll = $"SELECT {Columns} FROM {s}.events WHERE position > $1 ORDER BY position LIMIT $2";
        ReadAllByType = $"SELECT {Columns} FROM {s}.events WHERE position > $1 AND event_type = ANY($3) ORDER BY position LIMIT $2";
        ReadAllByPrefix = $"SELECT {Columns} FROM {s}.events WHERE position > $1 AND starts_with(stream_id, $4) ORDER BY position LIMIT $2";
        ReadAllByTypeAndPrefix = $"SELECT {Columns} FROM {s}.events WHERE position > $1 AND event_type = ANY($3) AND starts_with(stream_id, $4) ORDER BY position LIMIT $2";
        HeadPosition = $"SELECT position FROM {s}.log_head";
        Delete = $"SELECT {s}.delete_stream($1, $2, $3)";
        Truncate = $"""
            WITH existing AS (SELECT deleted FROM {s}.streams WHERE stream_id = $1),
                 updated AS (UPDATE {s}.streams SET truncated_before = greatest(truncated_before, $2)
                             WHERE stream_id = $1 AND NOT deleted RETURNING 1)
            SELECT (SELECT deleted FROM existing)
            """;

        LoadCheckpoint = $"SELECT position FROM {s}.checkpoints WHERE name = $1";
        SaveCheckpoint = $"""
            INSERT INTO {s}.checkpoints (name, position, updated_at) VALUES ($1, $2, $3)
            ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
            """;

        LoadSnapshot = $"SELECT version, snapshot_type, schema_version, data, created_at FROM {s}.snapshots WHERE stream_id = $1";
        SaveSnapshot = $"""
            INSERT INTO {s}.snapshots AS t (stream_id, version, snapshot_type, schema_version, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, snapshot_type = excluded.snapshot_type,
                schema_version = excluded.schema_version, data = excluded.data, created_at = excluded.created_at
            WHERE t.version <= excluded.version
            """;

        GetDocument = $"SELECT data FROM {s}.documents WHERE collection = $1 AND id = $2";
        GetDocuments = $"SELECT id, data FROM {s}.documents WHERE collection = $1 AND id = ANY($2)";
        UpsertDocument = $"""
            INSERT INTO {s}.documents (collection, id, data, updated_at) VALUES ($1, $2, $3, $4)
            ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at
            """;
        DeleteDocument = $"DELETE FROM {s}.documents WHERE collection = $1 AND id = $2";
        UpsertDocuments = $"""
            INSERT INTO {s}.documents (collection, id, data, updated_at)
            SELECT u.collection, u.id, u.data, $4 FROM unnest($1::text[], $2::text[], $3::bytea[]) AS u(collection, id, data)
            ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at
            """;
        DeleteDocuments = $"DELETE FROM {s}.documents d USING unnest($1::text[], $2::text[]) AS u(collection, id) WHERE d.collection = u.collection AND d.id = u.id";
        ListDocuments = $"SELECT id, data FROM {s}.documents WHERE collection = $1 AND id > $2 ORDER BY id LIMIT $3";
        ClearDocuments = $"DELETE FROM {s}.documents WHERE collection = $1";

        InboxContains = $"SELECT EXISTS (SELECT 1 FROM {s}.inbox WHERE consumer = $1 AND message_id = $2)";
        InboxContainsMany = $"SELECT message_id FROM {s}.inbox WHERE consumer = $1 AND message_id = ANY($2)";
        InboxMark = $"INSERT INTO {s}.inbox (consumer, message_id, handled_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        InboxPrune = $"DELETE FROM {s}.inbox WHERE handled_at < $1";
        InboxClaim = $"""
            INSERT INTO {s}.inbox (consumer, message_id, handled_at) SELECT u.c, u.m, $3 FROM unnest($1::text[], $2::text[]) AS u(c, m)
            ON CONFLICT DO NOTHING RETURNING consumer, message_id
            """;

        CheckpointCompareFromZero = $"""
            INSERT INTO {s}.checkpoints AS t (name, position, updated_at) VALUES ($1, $2, $3)
            ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at WHERE t.position = 0
            """;
        CheckpointCompare = $"UPDATE {s}.checkpoints SET position = $2, updated_at = $3 WHERE name = $1 AND position = $4";

        LockPositions = $"UPDATE {s}.log_head SET position = position";
        Notify = "SELECT pg_notify($1, $2)";
        Enqueue = $"""
            INSERT INTO {s}.outbox (destination, kind, partition_key, payload, enqueued_at)
            SELECT u.d, u.k, u.p, u.b, $5 FROM unnest($1::text[], $2::smallint[], $3::text[], $4::bytea[]) WITH ORDINALITY AS u(d, k, p, b, ord) ORDER BY u.ord
            RETURNING sequence
            """;
        ReadOutbox = $"SELECT sequence, destination, kind, partition_key, payload, enqueued_at FROM {s}.outbox WHERE sequence > $1 ORDER BY sequence LIMIT $2";
        // Removing handed-over messages commits without waiting for its WAL flush (synchronous_commit off for this
        // transaction only): a removal lost in a server crash only means the messages are sent again, which at least
        // once allows, and the relay's removals no longer queue for the disk behind (and in front of) every commit.
        DeleteOutbox = $"""
            WITH deleted AS (DELETE FROM {s}.outbox WHERE sequence > $2 AND sequence <= $1 RETURNING 1)
            SELECT (SELECT count(*) FROM deleted), set_config('synchronous_commit', 'off', true)
            """;
        DeleteOutboxFenced = $"""
            WITH fence AS (SELECT owner, token FROM {s}.leases WHERE name = $2 FOR SHARE),
                 deleted AS (DELETE FROM {s}.outbox WHERE sequence > $5 AND sequence <= $1 AND EXISTS (SELECT 1 FROM fence WHERE owner = $3 AND token = $4) RETURNING 1)
            SELECT (SELECT owner FROM fence), coalesce((SELECT token FROM fence), 0), (SELECT count(*) FROM deleted),
                   set_config('synchronous_commit', 'off', true)
            """;
        OutboxHead = $"SELECT coalesce(max(sequence), 0) FROM {s}.outbox";

        LeaseFence = $"SELECT owner, token FROM {s}.leases WHERE name = $1 FOR SHARE";
        LeaseAcquire = $"""
            INSERT INTO {s}.leases AS l (name, owner, token, expires_at) VALUES ($1, $2, 1, $4)
            ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at,
                token = CASE WHEN l.owner = excluded.owner THEN l.token ELSE l.token + 1 END
            WHERE l.owner IS NULL OR l.owner = excluded.owner OR l.expires_at <= $3
            RETURNING token
            """;
        LeaseRenew = $"UPDATE {s}.leases SET expires_at = $4 WHERE name = $1 AND owner = $2 AND token = $3";
        LeaseRelease = $"UPDATE {s}.leases SET owner = NULL, expires_at = $4 WHERE name = $1 AND owner = $2 AND token = $3";
        LeaseReleaseNotify = $"""
            WITH released AS ({LeaseRelease} RETURNING name)
            SELECT pg_notify($5, name) FROM released
            """;
        LeaseExpiry = $"SELECT CASE WHEN owner IS NULL THEN NULL ELSE expires_at END FROM {s}.leases WHERE name = $1";

        CreateSchema = $"""
            CREATE SCHEMA IF NOT EXISTS {s};
            CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now());
            """;
        AppliedVersion = $"SELECT coalesce(max(version), 0) FROM {s}.schema_migrations";
        RecordMigration = $"INSERT INTO {s}.schema_migrations (version) VALUES ($1)";
    }

    public string Name { get; }

    /// <summary>The LISTEN/NOTIFY channel appends notify on.</summary>
    public string Channel { get; }

    /// <summary>The LISTEN/NOTIFY channel units of work that enqueue notify on; the payload is the last sequence number.</summary>
    public string OutboxChannel { get; }

    /// <summary>The LISTEN/NOTIFY channel a released lease notifies on; the payload is the lease's name.</summary>
    public string LeaseChannel { get; }

    /// <summary>The transaction-scoped advisory lock key that serializes migrations of this schema.</summary>
    public long MigrationLockKey { get; }

    /// <summary>The migrations, in order: version and SQL. Each runs once, in the migration transaction.</summary>
    public IReadOnlyList<(int Version, string Sql)> Migrations { get; }

    public string Append { get; }

    /// <summary>
    /// Commits whole units of work that hold at most one append (without inline projections), inbox claims and outbox
    /// messages, in one statement; returns one row per unit (status 0 when it committed).
    /// </summary>
    public string CommitUnits { get; }

    public string FindEventIds { get; }

    public string StreamState { get; }

    public string ReadStreamForward { get; }

    public string ReadStreamBackward { get; }

    public string ReadAll { get; }

    public string ReadAllByType { get; }

    public string ReadAllByPrefix { get; }

    public string ReadAllByTypeAndPrefix { get; }

    public string HeadPosition { get; }

    public string Delete { get; }

    public string Truncate { get; }

    public string LoadCheckpoint { get; }

    public string SaveCheckpoint { get; }

    public string LoadSnapshot { get; }

    public string SaveSnapshot { get; }

    public string GetDocument { get; }

    /// <summary>Gets the documents of collection $1 whose ids are in $2: id and data.</summary>
    public string GetDocuments { get; }

    public string UpsertDocument { get; }

    public string DeleteDocument { get; }

    /// <summary>Gets the upsert of the documents $1 (collections), $2 (ids), $3 (data), updated at $4; no document may appear twice.</summary>
    public string UpsertDocuments { get; }

    /// <summary>Gets the delete of the documents $1 (collections), $2 (ids).</summary>
    public string DeleteDocuments { get; }

    public string ListDocuments { get; }

    public string ClearDocuments { get; }

    public string InboxContains { get; }

    public string InboxContainsMany { get; }

    public string InboxMark { get; }

    public string InboxPrune { get; }

    /// <summary>Inserts a unit of work's inbox claims; returns the claims that were new (a missing one is a duplicate).</summary>
    public string InboxClaim { get; }

    /// <summary>Saves a checkpoint expected at 0, which a missing row also counts as; changes no row when it moved.</summary>
    public string CheckpointCompareFromZero { get; }

    /// <summary>Saves a checkpoint expected at a position above 0; changes no row when it is elsewhere or missing.</summary>
    public string CheckpointCompare { get; }

    /// <summary>Takes the position lock (the <c>log_head</c> row) without moving the head, until the transaction ends.</summary>
    public string LockPositions { get; }

    public string Notify { get; }

    public string Enqueue { get; }

    public string ReadOutbox { get; }

    /// <summary>Deletes outbox messages above $2 through $1; returns the count. Commits without waiting for the WAL flush.</summary>
    public string DeleteOutbox { get; }

    public string OutboxHead { get; }

    /// <summary>Deletes outbox messages above $5 through $1 only while lease $2 names owner $3 and token $4 (share-locked); returns the holder and the count. Commits without waiting for the WAL flush.</summary>
    public string DeleteOutboxFenced { get; }

    /// <summary>Reads a lease's owner and token and holds a share lock on its row, so no take-over commits before this transaction does.</summary>
    public string LeaseFence { get; }

    public string LeaseAcquire { get; }

    public string LeaseRenew { get; }

    public string LeaseRelease { get; }

    /// <summary>Releases the lease as <see cref="LeaseRelease"/> does and notifies channel $5 with its name.</summary>
    public string LeaseReleaseNotify { get; }

    /// <summary>Reads when lease $1's holder's lease expires: null when it is free or unknown.</summary>
    public string LeaseExpiry { get; }

    public string CreateSchema { get; }

    public string AppliedVersion { get; }

    public string RecordMigration { get; }

    /// <summary>The version the code expects; a schema at a lower version is migrated.</summary>
    public int LatestVersion => Migrations[^1].Version;

    /// <summary>FNV-1a, 64 bits: a key that is the same in every process and every .NET version.</summary>
    internal static long StableKey(string text)
    {
        var hash = 14695981039346656037UL;
        foreach (var c in text)
        {
            hash = (hash ^ c) * 1099511628211UL;
        }

        return unchecked((long)hash);
    }

    private static (int, string)[] BuildMigrations(string s)
    {
        var v1 = $$"""
            -- The last position given to an event. Appends update this one row, and its row lock (held until the
            -- append commits) is what orders positions; a rolled-back append restores it, so positions have no holes.
            CREATE TABLE {{s}}.log_head (
                id boolean PRIMARY KEY DEFAULT true CHECK (id),
                position bigint NOT NULL);
            INSERT INTO {{s}}.log_head (position) VALUES (0);

            CREATE TABLE {{s}}.streams (
                stream_id text COLLATE "C" PRIMARY KEY,
                version bigint NOT NULL,
                truncated_before bigint NOT NULL DEFAULT 0,
                deleted boolean NOT NULL DEFAULT false);

            CREATE TABLE {{s}}.events (
                position bigint PRIMARY KEY,
                stream_id text COLLATE "C" NOT NULL,
                version bigint NOT NULL,
                event_id uuid NOT NULL,
                event_type text NOT NULL,
                data bytea NOT NULL,
                metadata bytea,
                correlation_id text,
                causation_id text,
                created_at timestamptz NOT NULL,
                CONSTRAINT {{StreamVersionConstraint}} UNIQUE (stream_id, version),
                CONSTRAINT {{EventIdConstraint}} UNIQUE (stream_id, event_id));

            CREATE TABLE {{s}}.snapshots (
                stream_id text COLLATE "C" PRIMARY KEY,
                version bigint NOT NULL,
                snapshot_type text NOT NULL,
                schema_version integer NOT NULL,
                data bytea NOT NULL,
                created_at timestamptz NOT NULL);

            CREATE TABLE {{s}}.checkpoints (
                name text COLLATE "C" PRIMARY KEY,
                position bigint NOT NULL,
                updated_at timestamptz NOT NULL);

            CREATE TABLE {{s}}.documents (
                collection text COLLATE "C" NOT NULL,
                id text COLLATE "C" NOT NULL,
                data bytea NOT NULL,
                updated_at timestamptz NOT NULL,
                PRIMARY KEY (collection, id));

            CREATE TABLE {{s}}.inbox (
                consumer text COLLATE "C" NOT NULL,
                message_id text COLLATE "C" NOT NULL,
                handled_at timestamptz NOT NULL,
                PRIMARY KEY (consumer, message_id));
            CREATE INDEX inbox_handled_at ON {{s}}.inbox (handled_at);

            -- Appends one batch of events. Raises PT409 (wrong expected version; the message ends with the actual
            -- version) or PT410 (deleted stream); a reused event id violates events_stream_event_id. p_expected is
            -- ExpectedVersion.Value: -1 any, -2 stream exists, otherwise the exact version (0 = no stream).
            CREATE FUNCTION {{s}}.append_events(
                p_stream_id text, p_expected bigint, p_event_ids uuid[], p_event_types text[], p_data bytea[],
                p_metadata bytea[], p_correlation_ids text[], p_causation_ids text[], p_created_at timestamptz[],
                p_channel text, OUT new_version bigint, OUT first_position bigint)
            LANGUAGE plpgsql AS $fn$
            DECLARE
                v_count integer := cardinality(p_event_ids);
                v_version bigint;
                v_deleted boolean;
                v_created boolean := false;
            BEGIN
                SELECT s.version, s.deleted INTO v_version, v_deleted
                  FROM {{s}}.streams s WHERE s.stream_id = p_stream_id FOR UPDATE;
                IF NOT FOUND THEN
                    IF p_expected > 0 OR p_expected = -2 THEN
                        RAISE EXCEPTION USING ERRCODE = 'PT409', MESSAGE = 'wrong expected version, actual 0';
                    END IF;
                    -- A new stream's row is written once, with its final version; it rolls back with the append.
                    INSERT INTO {{s}}.streams (stream_id, version) VALUES (p_stream_id, v_count) ON CONFLICT (stream_id) DO NOTHING;
                    IF FOUND THEN
                        v_version := 0;
                        v_deleted := false;
                        v_created := true;
                    ELSE
                        SELECT s.version, s.deleted INTO v_version, v_deleted
                          FROM {{s}}.streams s WHERE s.stream_id = p_stream_id FOR UPDATE;
                    END IF;
                END IF;
                IF v_deleted THEN
                    RAISE EXCEPTION USING ERRCODE = 'PT410', MESSAGE = 'stream deleted';
                END IF;
                IF (p_expected = -2 AND v_version = 0) OR (p_expected >= 0 AND p_expected <> v_version) THEN
                    RAISE EXCEPTION USING ERRCODE = 'PT409', MESSAGE = 'wrong expected version, actual ' || v_version;
                END IF;

                -- Positions are taken under a row lock held until this transaction commits, so positions become
                -- visible in increasing order and a reader never skips a lower position that commits later.
                UPDATE {{s}}.log_head SET position = position + v_count RETURNING position - v_count + 1 INTO first_position;

                INSERT INTO {{s}}.events (position, stream_id, version, event_id, event_type, data, metadata,
                                          correlation_id, causation_id, created_at)
                SELECT first_position + u.ord - 1, p_stream_id, v_version + u.ord, u.event_id, u.event_type, u.data,
                       u.metadata, u.correlation_id, u.causation_id, u.created_at
                  FROM unnest(p_event_ids, p_event_types, p_data, p_metadata, p_correlation_ids, p_causation_ids, p_created_at)
                       WITH ORDINALITY AS u(event_id, event_type, data, metadata, correlation_id, causation_id, created_at, ord);

                new_version := v_version + v_count;
                IF NOT v_created THEN
                    UPDATE {{s}}.streams SET version = new_version WHERE stream_id = p_stream_id;
                END IF;
                IF p_channel IS NOT NULL THEN
                    PERFORM pg_notify(p_channel, (first_position + v_count - 1)::text);
                END IF;
            END
            $fn$;

            -- Appends several batches in one transaction (group commit). The batches come sorted by stream id, so
            -- concurrent groups lock stream rows in one order, and every stream row is locked before log_head, as in
            -- append_events. Batch i holds p_counts[i] events of the flattened event arrays. Returns one row per batch,
            -- in input order: status 0 appended (new_version, first_position), 1 wrong expected version (new_version
            -- is the actual version), 2 deleted stream, 3 an event id is already in the stream (or earlier in this
            -- group). Nothing is stored for a batch that does not get status 0.
            CREATE FUNCTION {{s}}.append_group(
                p_stream_ids text[], p_expected bigint[], p_counts integer[], p_event_ids uuid[], p_event_types text[],
                p_data bytea[], p_metadata bytea[], p_correlation_ids text[], p_causation_ids text[],
                p_created_at timestamptz[], p_channel text)
            RETURNS TABLE (status integer, new_version bigint, first_position bigint)
            LANGUAGE plpgsql AS $fn$
            DECLARE
                n integer := cardinality(p_stream_ids);
                v_status integer[] := array_fill(0, ARRAY[n]);
                v_version bigint[] := array_fill(0::bigint, ARRAY[n]);
                v_first bigint[] := array_fill(0::bigint, ARRAY[n]);
                v_start integer[] := array_fill(0, ARRAY[n]);
                v_stream text;
                v_current bigint;
                v_deleted boolean;
                v_exists boolean;
                v_ids uuid[];
                v_batch uuid[];
                v_offset integer := 1;
                v_total integer := 0;
                v_position bigint;
                i integer;
            BEGIN
                FOR i IN 1 .. n LOOP
                    IF v_stream IS DISTINCT FROM p_stream_ids[i] THEN
                        v_stream := p_stream_ids[i];
                        v_ids := ARRAY[]::uuid[];
                        SELECT s.version, s.deleted INTO v_current, v_deleted
                          FROM {{s}}.streams s WHERE s.stream_id = v_stream FOR UPDATE;
                        v_exists := FOUND;
                        IF NOT v_exists THEN
                            v_current := 0;
                            v_deleted := false;
                        END IF;
                    END IF;

                    v_start[i] := v_offset;
                    v_batch := p_event_ids[v_offset : v_offset + p_counts[i] - 1];
                    v_offset := v_offset + p_counts[i];

                    IF NOT v_exists AND p_expected[i] IN (-1, 0) THEN
                        -- Create the stream row (and lock it); another transaction may have created it meanwhile.
                        INSERT INTO {{s}}.streams (stream_id, version) VALUES (v_stream, 0) ON CONFLICT (stream_id) DO NOTHING;
                        IF NOT FOUND THEN
                            SELECT s.version, s.deleted INTO v_current, v_deleted
                              FROM {{s}}.streams s WHERE s.stream_id = v_stream FOR UPDATE;
                        END IF;
                        v_exists := true;
                    END IF;

                    IF v_deleted THEN
                        v_status[i] := 2;
                    ELSIF (p_expected[i] = -2 AND v_current = 0) OR (p_expected[i] >= 0 AND p_expected[i] <> v_current) THEN
                        v_status[i] := 1;
                        v_version[i] := v_current;
                    ELSIF v_batch && v_ids
                          OR (v_current > 0 AND EXISTS (SELECT 1 FROM {{s}}.events e WHERE e.stream_id = v_stream AND e.event_id = ANY (v_batch))) THEN
                        v_status[i] := 3;
                    ELSE
                        v_version[i] := v_current + p_counts[i];
                        v_current := v_version[i];
                        v_ids := v_ids || v_batch;
                        v_total := v_total + p_counts[i];
                    END IF;
                END LOOP;

                IF v_total > 0 THEN
                    -- The position lock, taken after every stream row lock; held until commit, as in append_events.
                    UPDATE {{s}}.log_head SET position = position + v_total RETURNING position - v_total + 1 INTO v_position;
                    FOR i IN 1 .. n LOOP
                        IF v_status[i] = 0 THEN
                            v_first[i] := v_position;
                            INSERT INTO {{s}}.events (position, stream_id, version, event_id, event_type, data, metadata,
                                                      correlation_id, causation_id, created_at)
                            SELECT v_position + u.ord - 1, p_stream_ids[i], v_version[i] - p_counts[i] + u.ord, u.event_id,
                                   u.event_type, u.data, u.metadata, u.correlation_id, u.causation_id, u.created_at
                              FROM unnest(p_event_ids[v_start[i] : v_start[i] + p_counts[i] - 1],
                                          p_event_types[v_start[i] : v_start[i] + p_counts[i] - 1],
                                          p_data[v_start[i] : v_start[i] + p_counts[i] - 1],
                                          p_metadata[v_start[i] : v_start[i] + p_counts[i] - 1],
                                          p_correlation_ids[v_start[i] : v_start[i] + p_counts[i] - 1],
                                          p_causation_ids[v_start[i] : v_start[i] + p_counts[i] - 1],
                                          p_created_at[v_start[i] : v_start[i] + p_counts[i] - 1])
                                   WITH ORDINALITY AS u(event_id, event_type, data, metadata, correlation_id, causation_id, created_at, ord);
                            UPDATE {{s}}.streams SET version = v_version[i] WHERE stream_id = p_stream_ids[i];
                            v_position := v_position + p_counts[i];
                        END IF;
                    END LOOP;
                    IF p_channel IS NOT NULL THEN
                        PERFORM pg_notify(p_channel, (v_position - 1)::text);
                    END IF;
                END IF;

                RETURN QUERY SELECT u.s, u.v, u.f FROM unnest(v_status, v_version, v_first) WITH ORDINALITY AS u(s, v, f, ord) ORDER BY u.ord;
            END
            $fn$;

            -- Marks a stream deleted (a tombstone row when it never existed); p_hard also removes its events and snapshot.
            CREATE FUNCTION {{s}}.delete_stream(p_stream_id text, p_expected bigint, p_hard boolean)
            RETURNS void LANGUAGE plpgsql AS $fn$
            DECLARE
                v_version bigint;
            BEGIN
                SELECT s.version INTO v_version FROM {{s}}.streams s WHERE s.stream_id = p_stream_id FOR UPDATE;
                IF NOT FOUND THEN
                    INSERT INTO {{s}}.streams (stream_id, version) VALUES (p_stream_id, 0) ON CONFLICT (stream_id) DO NOTHING;
                    SELECT s.version INTO v_version FROM {{s}}.streams s WHERE s.stream_id = p_stream_id FOR UPDATE;
                END IF;
                IF (p_expected = -2 AND v_version = 0) OR (p_expected >= 0 AND p_expected <> v_version) THEN
                    RAISE EXCEPTION USING ERRCODE = 'PT409', MESSAGE = 'wrong expected version, actual ' || v_version;
                END IF;
                UPDATE {{s}}.streams SET deleted = true WHERE stream_id = p_stream_id;
                IF p_hard THEN
                    DELETE FROM {{s}}.events WHERE stream_id = p_stream_id;
                    DELETE FROM {{s}}.snapshots WHERE stream_id = p_stream_id;
                END IF;
            END
            $fn$;
            """;
        var v2 = $"""
            -- Outgoing messages of units of work. Units that enqueue hold the log_head row lock while they insert (as
            -- appends do), so sequence numbers become visible in increasing order; the identity never reuses a number.
            CREATE TABLE {s}.outbox (
                sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                destination text NOT NULL,
                kind smallint NOT NULL,
                partition_key text,
                payload bytea NOT NULL,
                enqueued_at timestamptz NOT NULL);

            -- Leases for single active ownership. owner is null once released; token grows with each new owner.
            CREATE TABLE {s}.leases (
                name text COLLATE "C" PRIMARY KEY,
                owner text COLLATE "C",
                token bigint NOT NULL,
                expires_at timestamptz NOT NULL);
            """;
        var v3 = $$"""
            -- Commits units of work that each hold at most one append (no inline projection), inbox claims and outbox
            -- messages: one statement for a whole group instead of a savepoint and several statements per unit. Unit i
            -- appends p_counts[i] events of the flattened event arrays to p_stream_ids[i] (null: no append); units come
            -- sorted by stream id, so stream rows are locked in one order and before log_head, as in append_group.
            -- Claim j and message j belong to unit p_claim_units[j] / p_message_units[j]. Returns one row per unit, in
            -- input order: status 0 committed (new_version, first_position, last_sequence), 1 wrong expected version,
            -- 2 deleted stream, 3 an event id already stored, 4 an inbox claim already recorded. Nothing of a unit with
            -- another status than 0 is stored; the caller runs it again on its own to learn its exact outcome.
            CREATE FUNCTION {{s}}.commit_units(
                p_stream_ids text[], p_expected bigint[], p_counts integer[], p_event_ids uuid[], p_event_types text[],
                p_data bytea[], p_metadata bytea[], p_correlation_ids text[], p_causation_ids text[],
                p_created_at timestamptz[], p_channel text, p_claim_units integer[], p_claim_consumers text[],
                p_claim_ids text[], p_message_units integer[], p_destinations text[], p_kinds smallint[], p_keys text[],
                p_payloads bytea[], p_now timestamptz, p_outbox_channel text)
            RETURNS TABLE (status integer, new_version bigint, first_position bigint, last_sequence bigint)
            LANGUAGE plpgsql AS $fn$
            DECLARE
                n integer := cardinality(p_stream_ids);
                v_claims integer := cardinality(p_claim_units);
                v_messages integer := cardinality(p_message_units);
                v_status integer[] := array_fill(0, ARRAY[n]);
                v_version bigint[] := array_fill(0::bigint, ARRAY[n]);
                v_first bigint[] := array_fill(0::bigint, ARRAY[n]);
                v_last bigint[] := array_fill(0::bigint, ARRAY[n]);
                v_start integer[] := array_fill(0, ARRAY[n]);
                v_claimed boolean[] := array_fill(false, ARRAY[v_claims]);
                v_stream text;
                v_current bigint;
                v_deleted boolean;
                v_exists boolean;
                v_ids uuid[];
                v_batch uuid[];
                v_offset integer := 1;
                v_total integer := 0;
                v_position bigint;
                v_sequence bigint;
                i integer;
                j integer;
            BEGIN
                -- Inbox claims first: a claim that another transaction holds waits for it, and fails the unit if it commits.
                FOR j IN 1 .. v_claims LOOP
                    IF v_status[p_claim_units[j]] = 0 THEN
                        INSERT INTO {{s}}.inbox (consumer, message_id, handled_at) VALUES (p_claim_consumers[j], p_claim_ids[j], p_now)
                        ON CONFLICT DO NOTHING;
                        IF FOUND THEN
                            v_claimed[j] := true;
                        ELSE
                            v_status[p_claim_units[j]] := 4;
                        END IF;
                    END IF;
                END LOOP;

                FOR i IN 1 .. n LOOP
                    IF p_stream_ids[i] IS NULL THEN
                        CONTINUE;
                    END IF;
                    v_start[i] := v_offset;
                    v_batch := p_event_ids[v_offset : v_offset + p_counts[i] - 1];
                    v_offset := v_offset + p_counts[i];
                    IF v_status[i] <> 0 THEN
                        CONTINUE;
                    END IF;

                    IF v_stream IS DISTINCT FROM p_stream_ids[i] THEN
                        v_stream := p_stream_ids[i];
                        v_ids := ARRAY[]::uuid[];
                        SELECT s.version, s.deleted INTO v_current, v_deleted
                          FROM {{s}}.streams s WHERE s.stream_id = v_stream FOR UPDATE;
                        v_exists := FOUND;
                        IF NOT v_exists THEN
                            v_current := 0;
                            v_deleted := false;
                        END IF;
                    END IF;

                    IF NOT v_exists AND p_expected[i] IN (-1, 0) THEN
                        INSERT INTO {{s}}.streams (stream_id, version) VALUES (v_stream, 0) ON CONFLICT (stream_id) DO NOTHING;
                        IF NOT FOUND THEN
                            SELECT s.version, s.deleted INTO v_current, v_deleted
                              FROM {{s}}.streams s WHERE s.stream_id = v_stream FOR UPDATE;
                        END IF;
                        v_exists := true;
                    END IF;

                    IF v_deleted THEN
                        v_status[i] := 2;
                    ELSIF (p_expected[i] = -2 AND v_current = 0) OR (p_expected[i] >= 0 AND p_expected[i] <> v_current) THEN
                        v_status[i] := 1;
                        v_version[i] := v_current;
                    ELSIF v_batch && v_ids
                          OR (v_current > 0 AND EXISTS (SELECT 1 FROM {{s}}.events e WHERE e.stream_id = v_stream AND e.event_id = ANY (v_batch))) THEN
                        v_status[i] := 3;
                    ELSE
                        v_version[i] := v_current + p_counts[i];
                        v_current := v_version[i];
                        v_ids := v_ids || v_batch;
                        v_total := v_total + p_counts[i];
                    END IF;
                END LOOP;

                -- A unit refused for its append gives back the claims it made.
                FOR j IN 1 .. v_claims LOOP
                    IF v_claimed[j] AND v_status[p_claim_units[j]] <> 0 THEN
                        DELETE FROM {{s}}.inbox WHERE consumer = p_claim_consumers[j] AND message_id = p_claim_ids[j];
                    END IF;
                END LOOP;

                -- The position lock, after every stream row lock; held until commit, so positions and outbox sequence
                -- numbers become visible in increasing order.
                IF v_total > 0 THEN
                    UPDATE {{s}}.log_head SET position = position + v_total RETURNING position - v_total + 1 INTO v_position;
                    FOR i IN 1 .. n LOOP
                        IF v_status[i] = 0 AND p_stream_ids[i] IS NOT NULL THEN
                            v_first[i] := v_position;
                            INSERT INTO {{s}}.events (position, stream_id, version, event_id, event_type, data, metadata,
                                                      correlation_id, causation_id, created_at)
                            SELECT v_position + u.ord - 1, p_stream_ids[i], v_version[i] - p_counts[i] + u.ord, u.event_id,
                                   u.event_type, u.data, u.metadata, u.correlation_id, u.causation_id, u.created_at
                              FROM unnest(p_event_ids[v_start[i] : v_start[i] + p_counts[i] - 1],
                                          p_event_types[v_start[i] : v_start[i] + p_counts[i] - 1],
                                          p_data[v_start[i] : v_start[i] + p_counts[i] - 1],
                                          p_metadata[v_start[i] : v_start[i] + p_counts[i] - 1],
                                          p_correlation_ids[v_start[i] : v_start[i] + p_counts[i] - 1],
                                          p_causation_ids[v_start[i] : v_start[i] + p_counts[i] - 1],
                                          p_created_at[v_start[i] : v_start[i] + p_counts[i] - 1])
                                   WITH ORDINALITY AS u(event_id, event_type, data, metadata, correlation_id, causation_id, created_at, ord);
                            UPDATE {{s}}.streams SET version = v_version[i] WHERE stream_id = p_stream_ids[i];
                            v_position := v_position + p_counts[i];
                        END IF;
                    END LOOP;
                    IF p_channel IS NOT NULL THEN
                        PERFORM pg_notify(p_channel, (v_position - 1)::text);
                    END IF;
                ELSIF v_messages > 0 THEN
                    UPDATE {{s}}.log_head SET position = position;
                END IF;

                FOR j IN 1 .. v_messages LOOP
                    IF v_status[p_message_units[j]] = 0 THEN
                        INSERT INTO {{s}}.outbox (destination, kind, partition_key, payload, enqueued_at)
                        VALUES (p_destinations[j], p_kinds[j], p_keys[j], p_payloads[j], p_now) RETURNING sequence INTO v_sequence;
                        v_last[p_message_units[j]] := v_sequence;
                    END IF;
                END LOOP;
                IF v_sequence IS NOT NULL AND p_outbox_channel IS NOT NULL THEN
                    PERFORM pg_notify(p_outbox_channel, v_sequence::text);
                END IF;

                RETURN QUERY SELECT u.s, u.v, u.f, u.l FROM unnest(v_status, v_version, v_first, v_last) WITH ORDINALITY AS u(s, v, f, l, ord) ORDER BY u.ord;
            END
            $fn$;
            """;
        var v4 = $$"""
            -- commit_units again, set-based: a group of units costs a few statements instead of four per unit (a stream
            -- row lock, an event-id check, an event insert and a stream update each), and the position lock is taken
            -- last, just before the one insert of every event, so it is held for the insert, the outbox messages and the
            -- commit only. Same arguments, results and outcomes as version 3. Stream rows are locked in stream id order
            -- (a missing one that an append may create is created where it comes in that order), then log_head.
            CREATE OR REPLACE FUNCTION {{s}}.commit_units(
                p_stream_ids text[], p_expected bigint[], p_counts integer[], p_event_ids uuid[], p_event_types text[],
                p_data bytea[], p_metadata bytea[], p_correlation_ids text[], p_causation_ids text[],
                p_created_at timestamptz[], p_channel text, p_claim_units integer[], p_claim_consumers text[],
                p_claim_ids text[], p_message_units integer[], p_destinations text[], p_kinds smallint[], p_keys text[],
                p_payloads bytea[], p_now timestamptz, p_outbox_channel text)
            RETURNS TABLE (status integer, new_version bigint, first_position bigint, last_sequence bigint)
            LANGUAGE plpgsql AS $fn$
            DECLARE
                n integer := cardinality(p_stream_ids);
                v_claims integer := cardinality(p_claim_units);
                v_messages integer := cardinality(p_message_units);
                v_status integer[] := array_fill(0, ARRAY[n]);
                v_version bigint[] := array_fill(0::bigint, ARRAY[n]);
                v_first bigint[] := array_fill(0::bigint, ARRAY[n]);
                v_last bigint[] := array_fill(0::bigint, ARRAY[n]);
                v_start integer[] := array_fill(0, ARRAY[n]);
                v_claimed boolean[] := array_fill(false, ARRAY[v_claims]);
                v_event_unit integer[];
                v_collides boolean[] := array_fill(false, ARRAY[n]);
                v_collided integer[];
                v_create text[];
                v_lock text[];
                v_sids text[];
                v_versions bigint[];
                v_deleteds boolean[];
                v_stream text;
                v_id text;
                v_current bigint;
                v_deleted boolean;
                v_ids uuid[];
                v_batch uuid[];
                v_offset integer := 1;
                v_total integer := 0;
                v_position bigint;
                v_sequence bigint;
                k integer;
                i integer;
                j integer;
            BEGIN
                -- Inbox claims first: a claim that another transaction holds waits for it, and fails the unit if it commits.
                FOR j IN 1 .. v_claims LOOP
                    IF v_status[p_claim_units[j]] = 0 THEN
                        INSERT INTO {{s}}.inbox (consumer, message_id, handled_at) VALUES (p_claim_consumers[j], p_claim_ids[j], p_now)
                        ON CONFLICT DO NOTHING;
                        IF FOUND THEN
                            v_claimed[j] := true;
                        ELSE
                            v_status[p_claim_units[j]] := 4;
                        END IF;
                    END IF;
                END LOOP;

                -- Where each unit's events start in the flattened arrays, and the streams to lock (and maybe create).
                v_lock := ARRAY[]::text[];
                v_create := ARRAY[]::text[];
                FOR i IN 1 .. n LOOP
                    IF p_stream_ids[i] IS NOT NULL THEN
                        v_start[i] := v_offset;
                        v_offset := v_offset + p_counts[i];
                        IF v_status[i] = 0 THEN
                            v_lock := v_lock || p_stream_ids[i];
                            IF p_expected[i] IN (-1, 0) THEN
                                v_create := v_create || p_stream_ids[i];
                            END IF;
                        END IF;
                    END IF;
                END LOOP;

                IF cardinality(v_lock) > 0 THEN
                    -- Stream rows are taken in stream id order, as append_events and append_group take them. When every
                    -- stream an append may create has its row (rows are never deleted), every row is locked and read in
                    -- one statement. Otherwise each stream is locked, or created (version 0, as an empty stream), where it
                    -- comes in that order: creating first would hold a new row while waiting for a row before it, which
                    -- a group holding that row and then creating this one would wait for in turn (a deadlock).
                    IF cardinality(v_create) > 0 AND EXISTS (
                        SELECT 1 FROM unnest(v_create) AS c(id)
                         WHERE NOT EXISTS (SELECT 1 FROM {{s}}.streams s WHERE s.stream_id = c.id)) THEN
                        v_sids := ARRAY[]::text[];
                        v_versions := ARRAY[]::bigint[];
                        v_deleteds := ARRAY[]::boolean[];
                        FOR v_id IN SELECT l.id FROM unnest(v_lock) AS l(id) GROUP BY l.id ORDER BY l.id COLLATE "C" LOOP
                            SELECT s.version, s.deleted INTO v_current, v_deleted
                              FROM {{s}}.streams s WHERE s.stream_id = v_id FOR UPDATE;
                            IF NOT FOUND AND v_id = ANY (v_create) THEN
                                INSERT INTO {{s}}.streams (stream_id, version) VALUES (v_id, 0) ON CONFLICT (stream_id) DO NOTHING;
                                SELECT s.version, s.deleted INTO v_current, v_deleted
                                  FROM {{s}}.streams s WHERE s.stream_id = v_id FOR UPDATE;
                            END IF;
                            IF FOUND THEN
                                v_sids := v_sids || v_id;
                                v_versions := v_versions || v_current;
                                v_deleteds := v_deleteds || v_deleted;
                            END IF;
                        END LOOP;
                    ELSE
                        SELECT coalesce(array_agg(l.stream_id ORDER BY l.stream_id), ARRAY[]::text[]),
                               coalesce(array_agg(l.version ORDER BY l.stream_id), ARRAY[]::bigint[]),
                               coalesce(array_agg(l.deleted ORDER BY l.stream_id), ARRAY[]::boolean[])
                          INTO v_sids, v_versions, v_deleteds
                          FROM (SELECT s.stream_id, s.version, s.deleted FROM {{s}}.streams s
                                 WHERE s.stream_id = ANY (v_lock) ORDER BY s.stream_id FOR UPDATE) AS l;
                    END IF;

                    -- The unit of each event, and the units with an event id their stream already holds (one look).
                    SELECT coalesce(array_agg(u.ord ORDER BY u.ord, g.g), ARRAY[]::integer[]) INTO v_event_unit
                      FROM unnest(p_counts) WITH ORDINALITY AS u(c, ord), generate_series(1, u.c) AS g(g);
                    SELECT coalesce(array_agg(DISTINCT v_event_unit[x.ord]), ARRAY[]::integer[]) INTO v_collided
                      FROM unnest(p_event_ids) WITH ORDINALITY AS x(event_id, ord)
                     WHERE EXISTS (SELECT 1 FROM {{s}}.events e
                                    WHERE e.stream_id = p_stream_ids[v_event_unit[x.ord]] AND e.event_id = x.event_id);
                    FOREACH k IN ARRAY v_collided LOOP
                        v_collides[k] := true;
                    END LOOP;
                ELSE
                    v_sids := ARRAY[]::text[];
                END IF;

                FOR i IN 1 .. n LOOP
                    IF p_stream_ids[i] IS NULL OR v_status[i] <> 0 THEN
                        CONTINUE;
                    END IF;
                    v_batch := p_event_ids[v_start[i] : v_start[i] + p_counts[i] - 1];

                    IF v_stream IS DISTINCT FROM p_stream_ids[i] THEN
                        v_stream := p_stream_ids[i];
                        v_ids := ARRAY[]::uuid[];
                        k := array_position(v_sids, v_stream);
                        IF k IS NULL THEN
                            v_current := 0;
                            v_deleted := false;
                        ELSE
                            v_current := v_versions[k];
                            v_deleted := v_deleteds[k];
                        END IF;
                    END IF;

                    IF v_deleted THEN
                        v_status[i] := 2;
                    ELSIF (p_expected[i] = -2 AND v_current = 0) OR (p_expected[i] >= 0 AND p_expected[i] <> v_current) THEN
                        v_status[i] := 1;
                        v_version[i] := v_current;
                    ELSIF v_batch && v_ids OR v_collides[i] THEN
                        v_status[i] := 3;
                    ELSE
                        v_version[i] := v_current + p_counts[i];
                        v_current := v_version[i];
                        v_ids := v_ids || v_batch;
                        v_total := v_total + p_counts[i];
                    END IF;
                END LOOP;

                -- A unit refused for its append gives back the claims it made.
                FOR j IN 1 .. v_claims LOOP
                    IF v_claimed[j] AND v_status[p_claim_units[j]] <> 0 THEN
                        DELETE FROM {{s}}.inbox WHERE consumer = p_claim_consumers[j] AND message_id = p_claim_ids[j];
                    END IF;
                END LOOP;

                IF v_total > 0 THEN
                    -- Each appended stream's new version (the last of its units), before the position lock.
                    UPDATE {{s}}.streams s SET version = u.v
                      FROM (SELECT a.id, max(a.v) AS v FROM unnest(p_stream_ids, v_version, v_status) AS a(id, v, st)
                             WHERE a.st = 0 AND a.id IS NOT NULL GROUP BY a.id) AS u
                     WHERE s.stream_id = u.id;

                    -- The position lock, after every stream row lock and as late as it can be; held until commit, so
                    -- positions and outbox sequence numbers become visible in increasing order.
                    UPDATE {{s}}.log_head SET position = position + v_total RETURNING position - v_total + 1 INTO v_position;
                    FOR i IN 1 .. n LOOP
                        IF v_status[i] = 0 AND p_stream_ids[i] IS NOT NULL THEN
                            v_first[i] := v_position;
                            v_position := v_position + p_counts[i];
                        END IF;
                    END LOOP;
                    INSERT INTO {{s}}.events (position, stream_id, version, event_id, event_type, data, metadata,
                                              correlation_id, causation_id, created_at)
                    SELECT v_first[m.u] + (x.ord - v_start[m.u]), p_stream_ids[m.u],
                           v_version[m.u] - p_counts[m.u] + 1 + (x.ord - v_start[m.u]), x.event_id, x.event_type, x.data,
                           x.metadata, x.correlation_id, x.causation_id, x.created_at
                      FROM unnest(p_event_ids, p_event_types, p_data, p_metadata, p_correlation_ids, p_causation_ids, p_created_at)
                           WITH ORDINALITY AS x(event_id, event_type, data, metadata, correlation_id, causation_id, created_at, ord)
                           CROSS JOIN LATERAL (SELECT v_event_unit[x.ord] AS u) AS m
                     WHERE v_status[m.u] = 0
                     ORDER BY x.ord;
                    IF p_channel IS NOT NULL THEN
                        PERFORM pg_notify(p_channel, (v_position - 1)::text);
                    END IF;
                ELSIF v_messages > 0 THEN
                    UPDATE {{s}}.log_head SET position = position;
                END IF;

                FOR j IN 1 .. v_messages LOOP
                    IF v_status[p_message_units[j]] = 0 THEN
                        INSERT INTO {{s}}.outbox (destination, kind, partition_key, payload, enqueued_at)
                        VALUES (p_destinations[j], p_kinds[j], p_keys[j], p_payloads[j], p_now) RETURNING sequence INTO v_sequence;
                        v_last[p_message_units[j]] := v_sequence;
                    END IF;
                END LOOP;
                IF v_sequence IS NOT NULL AND p_outbox_channel IS NOT NULL THEN
                    PERFORM pg_notify(p_outbox_channel, v_sequence::text);
                END IF;

                RETURN QUERY SELECT u.s, u.v, u.f, u.l FROM unnest(v_status, v_version, v_first, v_last) WITH ORDINALITY AS u(s, v, f, l, ord) ORDER BY u.ord;
            END
            $fn$;
            """;
        return [(1, v1), (2, v2), (3, v3), (4, v4)];
    }
}
