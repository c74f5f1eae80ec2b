using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Threading.Channels;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Patterns.Storage;
using SQLitePCL;

namespace Patterns.Sqlite;

/// <summary>
/// The store's only writer: one connection fed by a bounded queue, used by one thread at a time. A caller that finds it
/// idle becomes the writer and commits on its own thread; writes queued meanwhile are committed by a background loop
/// that runs while they keep coming. Each group takes every write queued so far (up to the per-commit limits), runs
/// them in one IMMEDIATE transaction, each under its own savepoint so that a failing write is rolled back alone,
/// commits once (one WAL sync), and then completes every caller: group commit.
/// </summary>
/// <remarks>
/// Positions come from the <c>log</c> row read after <c>BEGIN IMMEDIATE</c>, that is, under SQLite's write lock, so they
/// are assigned in commit order even when another process writes to the same file; a reader sees a transaction whole
/// or not at all (WAL snapshots), so the log it reads has no gap that a later commit could fill.
/// </remarks>
internal sealed partial class SqliteWriter : IAsyncDisposable
{
    /// <summary>Rows per multi-row INSERT, largest first; an append is split greedily into these chunks.</summary>
    private static readonly int[] ChunkSizes = [32, 8, 1];

    /// <summary>How many times in all a transaction that finds the database busy runs (the last failure is reported).</summary>
    internal const int BusyAttempts = 8;

    /// <summary>The delay before the first re-run of a busy transaction; it doubles up to <see cref="MaxBusyDelay"/>.</summary>
    internal static readonly TimeSpan FirstBusyDelay = TimeSpan.FromMilliseconds(20);

    /// <summary>The longest delay between two runs of a busy transaction (about 3.5 s over all attempts).</summary>
    internal static readonly TimeSpan MaxBusyDelay = TimeSpan.FromSeconds(1);

    private readonly SqliteConnection _connection;
    private readonly SqliteSql _sql;
    private readonly Channel<WriteOperation> _queue;
    private readonly int _maxWrites;
    private readonly int _maxEvents;
    private readonly Action<long> _committed;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly List<WriteOperation> _batch = [];
    private int _busy;
    private int _lastGroup;
    private TaskCompletionSource? _disposing;

    private readonly SqliteCommand _begin;
    private readonly SqliteCommand _commit;
    private readonly SqliteCommand _rollback;
    private readonly SqliteCommand _savepoint;
    private readonly SqliteCommand _release;
    private readonly SqliteCommand _rollbackTo;
    private readonly SqliteCommand _selectHead;
    private readonly SqliteCommand _selectStream;
    private readonly SqliteCommand _upsertStream;
    private readonly SqliteCommand _findEvent;
    private readonly sqlite3_stmt?[] _inserts = new sqlite3_stmt?[ChunkSizes.Length];
    private readonly Dictionary<string, SqliteCommand> _other = new(StringComparer.Ordinal);

    private long _commits;
    private long _writes;

    private SqliteWriter(SqliteConnection connection, SqliteSql sql, SqliteEventStoreOptions options, long head, Action<long> committed, ILogger logger)
    {
        _connection = connection;
        _sql = sql;
        _maxWrites = options.MaxWritesPerCommit;
        _maxEvents = options.MaxEventsPerCommit;
        _committed = committed;
        _logger = logger;
        _time = options.TimeProvider ?? TimeProvider.System;
        Head = head;
        _queue = Channel.CreateBounded<WriteOperation>(new BoundedChannelOptions(options.WriteQueueCapacity)
        {
            SingleReader = false,
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait,
        });

        _begin = SqliteRows.Command(connection, "BEGIN IMMEDIATE");
        _commit = SqliteRows.Command(connection, "COMMIT");
        _rollback = SqliteRows.Command(connection, "ROLLBACK");
        _savepoint = SqliteRows.Command(connection, "SAVEPOINT write");
        _release = SqliteRows.Command(connection, "RELEASE write");
        _rollbackTo = SqliteRows.Command(connection, "ROLLBACK TO write");
        _selectHead = SqliteRows.Command(connection, sql.SelectHead);
        _selectStream = SqliteRows.Command(connection, sql.SelectStream, "@stream");
        _upsertStream = SqliteRows.Command(connection, sql.UpsertStreamVersion, "@stream", "@version");
        _findEvent = SqliteRows.Command(connection, sql.FindEvent, "@id", "@stream");
    }

    /// <summary>Gets or sets the head position inside the open transaction; appends advance it.</summary>
    public long Head { get; set; }

    /// <summary>Gets the number of transactions committed by the loop.</summary>
    public long Commits => Interlocked.Read(ref _commits);

    /// <summary>Gets the number of writes committed by the loop.</summary>
    public long Writes => Interlocked.Read(ref _writes);

    /// <summary>Gets the current time of the store's clock (lease expiry, outbox and inbox stamps).</summary>
    public DateTimeOffset Now => _time.GetUtcNow();

    /// <summary>Opens the writer's connection in WAL mode with synchronous=FULL, creates the schema and starts the loop.</summary>
    public static SqliteWriter Open(string connectionString, SqliteSql sql, SqliteEventStoreOptions options, Action<long> committed, ILogger logger)
    {
        var connection = SqliteDatabase.OpenConnection(connectionString, options);
        try
        {
            SqliteDatabase.EnableWal(connection);
            SqliteRows.Execute(connection, "PRAGMA synchronous = FULL");

            // Multi-row inserts, upserts and savepoints keep a statement journal for partial rollback; in memory it
            // costs nothing, in a temporary file (the default) it doubled the writes of a batch append.
            SqliteRows.Execute(connection, "PRAGMA temp_store = MEMORY");
            SqliteDatabase.Migrate(connection, sql);
            using var head = SqliteRows.Command(connection, sql.SelectHead);
            return new SqliteWriter(connection, sql, options, Convert.ToInt64(head.ExecuteScalar(), CultureInfo.InvariantCulture), committed, logger);
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Queues a write; the returned task completes when it has committed (or failed). When no commit is in progress the
    /// calling thread runs it at once (no thread hop for a lone writer); otherwise the write waits for the next group.
    /// </summary>
    public ValueTask<T> EnqueueAsync<T>(WriteOperation<T> operation)
    {
        if (!_queue.Writer.TryWrite(operation))
        {
            return EnqueueSlowAsync(operation);
        }

        TryLead();
        return operation.Task;
    }

    /// <summary>Commits what is still queued, then closes the connection.</summary>
    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        var disposing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _disposing, disposing);
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            // The writer in charge hands its role over when its commit is done (see Release).
            await disposing.Task.ConfigureAwait(false);
        }

        while (_queue.Reader.Count > 0)
        {
            await CommitNextAsync().ConfigureAwait(false);
        }

        foreach (var command in _other.Values)
        {
            command.Dispose();
        }

        foreach (var command in _inserts)
        {
            command?.Dispose();
        }

        foreach (var command in new[] { _begin, _commit, _rollback, _savepoint, _release, _rollbackTo, _selectHead, _selectStream, _upsertStream, _findEvent })
        {
            command.Dispose();
        }

        await _connection.DisposeAsync().ConfigureAwait(false);
    }

    // ---- used by operations, inside the open transaction ----

    /// <summary>Reads a stream's row: version, deletion mode (0 none, 1 soft, 2 hard) and truncation.</summary>
    public StreamRow GetStream(string streamId)
    {
        _selectStream.Parameters[0].Value = streamId;
        using var reader = _selectStream.ExecuteReader();
        return reader.Read() ? new StreamRow(reader.GetInt64(0), reader.GetInt32(1), reader.GetInt64(2)) : default;
    }

    /// <summary>
    /// Appends events inside the open transaction: the one append path, for <see cref="AppendOperation"/> and for the appends
    /// of a unit of work. Checks that the stream is not deleted, returns the original result of an exact retry (then
    /// <paramref name="inserted"/> is false and nothing is written), checks the expected version, inserts the events after
    /// <see cref="Head"/>, sets the stream's version and advances <see cref="Head"/>. A later append in the same
    /// transaction sees this one.
    /// </summary>
    public AppendResult Append(string streamId, ExpectedVersion expected, IReadOnlyList<SerializedEvent> events, out bool inserted)
    {
        inserted = false;
        var stream = GetStream(streamId);
        if (stream.Deleted != 0)
        {
            throw new StreamDeletedException(streamId);
        }

        if (stream.Version > 0 && FindRetry(streamId, expected, events) is { } original)
        {
            return original;
        }

        if (!expected.IsSatisfiedBy(stream.Version))
        {
            throw new WrongExpectedVersionException(streamId, expected, stream.Version);
        }

        var firstPosition = Head + 1;
        var lastVersion = stream.Version + events.Count;
        InsertEvents(streamId, stream.Version + 1, firstPosition, events);
        SetStreamVersion(streamId, lastVersion);
        Head += events.Count;
        inserted = true;
        return new AppendResult(streamId, lastVersion, firstPosition, firstPosition + events.Count - 1);
    }

    /// <summary>
    /// Runs an inline projection over the events that <see cref="Append"/> just inserted, with an <see cref="IDocumentWriter"/>
    /// that reads and writes inside the open transaction (and refuses use once the projection has returned).
    /// </summary>
    public async ValueTask ProjectAsync(InlineProjection projection, AppendResult appended, IReadOnlyList<SerializedEvent> events, CancellationToken cancellationToken)
    {
        var stored = StoredEvent.FromAppend(appended.StreamId, appended.Version - events.Count + 1, appended.FirstPosition, events);

        var documents = new TransactionDocumentWriter(this);
        try
        {
            await projection(stored, documents, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            documents.Close();
        }
    }

    /// <summary>
    /// Looks up the append's event ids in the stream. Returns the original result when all of them are stored, in order,
    /// with consecutive versions, at a place the expected version allows (an exact retry); null when none is stored.
    /// </summary>
    /// <exception cref="DuplicateEventException">Some ids are stored, but this is not an exact retry.</exception>
    public AppendResult? FindRetry(string streamId, ExpectedVersion expected, IReadOnlyList<SerializedEvent> events)
    {
        _findEvent.Parameters[1].Value = streamId;
        long firstVersion = 0, firstPosition = 0, lastPosition = 0;
        var found = 0;
        Guid? duplicate = null;
        for (var i = 0; i < events.Count; i++)
        {
            _findEvent.Parameters[0].Value = events[i].EventId.ToByteArray(); // the 16-byte blob InsertEvents writes
            using var reader = _findEvent.ExecuteReader();
            if (!reader.Read())
            {
                continue;
            }

            duplicate ??= events[i].EventId;
            var version = reader.GetInt64(0);
            var position = reader.GetInt64(1);
            if (found == 0)
            {
                firstVersion = version;
                firstPosition = position;
            }

            if (found != i || version != firstVersion + i)
            {
                throw new DuplicateEventException(streamId, duplicate.Value);
            }

            lastPosition = position;
            found++;
        }

        if (found == 0)
        {
            return null;
        }

        if (found != events.Count || !expected.IsRetryAt(firstVersion))
        {
            throw new DuplicateEventException(streamId, duplicate!.Value);
        }

        return new AppendResult(streamId, firstVersion + found - 1, firstPosition, lastPosition);
    }

    /// <summary>
    /// Inserts events with consecutive versions and positions, in multi-row chunks. The statements are prepared once and
    /// bound by index through SQLite's own API: binding hundreds of parameters by name costs more than the insert.
    /// </summary>
    public void InsertEvents(string streamId, long firstVersion, long firstPosition, IReadOnlyList<SerializedEvent> events)
    {
        var index = 0;
        Span<byte> id = stackalloc byte[16];
        for (var c = 0; c < ChunkSizes.Length; c++)
        {
            var rows = ChunkSizes[c];
            while (events.Count - index >= rows)
            {
                var statement = _inserts[c] ??= Prepare(_sql.InsertEvents(rows));
                for (var r = 0; r < rows; r++)
                {
                    var e = events[index + r];
                    var p = (r * 10) + 1;
                    Check(raw.sqlite3_bind_int64(statement, p, firstPosition + index + r));
                    Check(raw.sqlite3_bind_text(statement, p + 1, streamId));
                    Check(raw.sqlite3_bind_int64(statement, p + 2, firstVersion + index + r));
                    e.EventId.TryWriteBytes(id); // the layout Microsoft.Data.Sqlite reads back with GetGuid
                    Check(raw.sqlite3_bind_blob(statement, p + 3, id));
                    Check(raw.sqlite3_bind_text(statement, p + 4, e.EventType));
                    Check(e.Data.IsEmpty ? raw.sqlite3_bind_zeroblob(statement, p + 5, 0) : raw.sqlite3_bind_blob(statement, p + 5, e.Data.Span));
                    Check(e.Metadata.IsEmpty ? raw.sqlite3_bind_null(statement, p + 6) : raw.sqlite3_bind_blob(statement, p + 6, e.Metadata.Span));
                    Check(e.CorrelationId is null ? raw.sqlite3_bind_null(statement, p + 7) : raw.sqlite3_bind_text(statement, p + 7, e.CorrelationId));
                    Check(e.CausationId is null ? raw.sqlite3_bind_null(statement, p + 8) : raw.sqlite3_bind_text(statement, p + 8, e.CausationId));
                    Check(raw.sqlite3_bind_int64(statement, p + 9, e.Timestamp.UtcTicks));
                }

                var rc = raw.sqlite3_step(statement);
                raw.sqlite3_reset(statement);
                if (rc != raw.SQLITE_DONE)
                {
                    SqliteException.ThrowExceptionForRC(rc, _connection.Handle);
                }

                index += rows;
            }
        }
    }

    /// <summary>Sets a stream's version, creating its row on the first append.</summary>
    public void SetStreamVersion(string streamId, long version)
    {
        _upsertStream.Parameters[0].Value = streamId;
        _upsertStream.Parameters[1].Value = version;
        _upsertStream.ExecuteNonQuery();
    }

    /// <summary>Runs one of the store's other statements, prepared once, with its parameters set in order.</summary>
    public SqliteCommand Prepared(string sql, params ReadOnlySpan<string> parameters)
    {
        if (!_other.TryGetValue(sql, out var command))
        {
            command = SqliteRows.Command(_connection, sql, parameters);
            _other.Add(sql, command);
        }

        return command;
    }

    public byte[]? GetDocument(string collection, string id)
    {
        var command = Prepared(_sql.SelectDocument, "@collection", "@id");
        command.Parameters[0].Value = collection;
        command.Parameters[1].Value = id;
        return command.ExecuteScalar() as byte[];
    }

    public void UpsertDocument(string collection, string id, ReadOnlyMemory<byte> document)
    {
        var command = Prepared(_sql.UpsertDocument, "@collection", "@id", "@data");
        command.Parameters[0].Value = collection;
        command.Parameters[1].Value = id;
        command.Parameters[2].Value = SqliteRows.Array(document);
        command.ExecuteNonQuery();
    }

    public bool DeleteDocument(string collection, string id)
    {
        var command = Prepared(_sql.DeleteDocument, "@collection", "@id");
        command.Parameters[0].Value = collection;
        command.Parameters[1].Value = id;
        return command.ExecuteNonQuery() > 0;
    }

    /// <summary>Reads an integer pragma of the writer's connection.</summary>
    public long Pragma(string name)
    {
        using var command = _connection.CreateCommand();
        command.CommandText = "PRAGMA " + name;
        return Convert.ToInt64(command.ExecuteScalar(), CultureInfo.InvariantCulture);
    }

    /// <summary>Creates missing tables inside the open transaction and checks the schema version.</summary>
    public bool CreateSchema(SqliteSql sql)
    {
        SqliteDatabase.CreateSchema(_connection, sql);
        return true;
    }

    /// <summary>Marks a stream deleted (soft or hard); a hard delete also removes its events and its snapshot. The row stays, so the id is never reused.</summary>
    public bool DeleteStream(string streamId, ExpectedVersion expected, StreamDeleteMode mode, SqliteSql sql)
    {
        var row = GetStream(streamId);
        if (!expected.IsSatisfiedBy(row.Version))
        {
            throw new WrongExpectedVersionException(streamId, expected, row.Version);
        }

        var mark = Prepared(sql.MarkStreamDeleted, "@stream", "@version", "@deleted");
        mark.Parameters[0].Value = streamId;
        mark.Parameters[1].Value = row.Version;
        mark.Parameters[2].Value = mode == StreamDeleteMode.Hard ? 2 : 1;
        mark.ExecuteNonQuery();
        if (mode == StreamDeleteMode.Hard)
        {
            Prepared(sql.KeepHead).ExecuteNonQuery(); // the deleted events may hold the highest positions
            var delete = Prepared(sql.DeleteStreamEvents, "@stream");
            delete.Parameters[0].Value = streamId;
            delete.ExecuteNonQuery();
            var snapshot = Prepared(sql.DeleteSnapshot, "@stream");
            snapshot.Parameters[0].Value = streamId;
            snapshot.ExecuteNonQuery();
        }

        return true;
    }

    /// <summary>Raises a stream's truncation point (never lowers it); a stream that does not exist is left alone.</summary>
    public bool TruncateStream(string streamId, long beforeVersion, SqliteSql sql)
    {
        if (GetStream(streamId).Deleted != 0)
        {
            throw new StreamDeletedException(streamId);
        }

        var command = Prepared(sql.TruncateStream, "@stream", "@before");
        command.Parameters[0].Value = streamId;
        command.Parameters[1].Value = beforeVersion;
        return command.ExecuteNonQuery() > 0;
    }

    // ---- the loop ----

    private async ValueTask<T> EnqueueSlowAsync<T>(WriteOperation<T> operation)
    {
        try
        {
            await _queue.Writer.WriteAsync(operation, operation.CancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException)
        {
            throw new ObjectDisposedException(nameof(SqliteEventStore), "The SQLite event store was disposed.");
        }

        TryLead();
        return await operation.Task.ConfigureAwait(false);
    }

    /// <summary>Becomes the writer if nobody is, and commits the queued writes on this thread.</summary>
    private void TryLead()
    {
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            return; // the writer in charge will take this write into its next group
        }

        var commit = CommitNextAsync();
        if (commit.IsCompleted)
        {
            Continue();
        }
        else
        {
            _ = ContinueAfterAsync(commit);
        }
    }

    private async Task ContinueAfterAsync(ValueTask commit)
    {
        await commit.ConfigureAwait(false);
        Continue();
    }

    /// <summary>After a group: hand the writes queued meanwhile to a background loop, or give up the writer role.</summary>
    private void Continue()
    {
        // After a group of several writes, their callers are about to queue their next ones: keep the role (in the
        // background loop) for one more look instead of letting the first of them commit alone.
        if ((_queue.Reader.Count > 0 || _lastGroup > 1) && Volatile.Read(ref _disposing) is null)
        {
            _ = RunAsync();
            return;
        }

        Release();
    }

    /// <summary>Commits group after group while writes keep arriving, off the callers' threads.</summary>
    private async Task RunAsync()
    {
        // Off the caller's thread. The callers just completed were queued to this thread's pool queue: they run (and
        // queue their next writes) before this continues, so they share the next commit instead of trickling in.
        await Task.Yield();
        while (true)
        {
            await CommitNextAsync().ConfigureAwait(false);
            if (_lastGroup > 1)
            {
                await Task.Yield();
            }

            if (_queue.Reader.Count == 0 || Volatile.Read(ref _disposing) is not null)
            {
                break;
            }
        }

        Release();
    }

    /// <summary>Gives up the writer role (to a pending dispose, if any), and takes it back if a write slipped in meanwhile.</summary>
    private void Release()
    {
        if (Volatile.Read(ref _disposing) is { } disposing)
        {
            disposing.TrySetResult(); // the role passes to DisposeAsync
            return;
        }

        Volatile.Write(ref _busy, 0);
        if (Volatile.Read(ref _disposing) is { } late)
        {
            if (Interlocked.CompareExchange(ref _busy, 1, 0) == 0)
            {
                late.TrySetResult();
            }

            return;
        }

        if (_queue.Reader.Count > 0 && Interlocked.CompareExchange(ref _busy, 1, 0) == 0)
        {
            _ = RunAsync();
        }
    }

    /// <summary>Takes the queued writes (up to the per-commit limits) and commits them as one group. Never throws.</summary>
    private ValueTask CommitNextAsync()
    {
        var reader = _queue.Reader;
        var batch = _batch;
        batch.Clear();
        var events = 0;
        while (batch.Count < _maxWrites && events < _maxEvents && reader.TryRead(out var operation))
        {
            if (operation.CancellationToken.IsCancellationRequested)
            {
                operation.Fail(new OperationCanceledException(operation.CancellationToken));
                continue;
            }

            batch.Add(operation);
            events += operation.EventCount;
        }

        _lastGroup = batch.Count;
        return batch.Count == 0 ? ValueTask.CompletedTask : CommitAsync(batch);
    }

    /// <summary>
    /// Commits a group. A transaction that finds the database busy (another connection or process held its lock past
    /// the busy timeout, or SQLite refused to wait) stored nothing: it runs again after a growing delay, up to
    /// <see cref="BusyAttempts"/> times in all, before its writes fail with the busy error.
    /// </summary>
    private async ValueTask CommitAsync(List<WriteOperation> batch)
    {
        var delay = FirstBusyDelay;
        for (var attempt = 1; ; attempt++)
        {
            var outcome = await TryCommitAsync(batch, attempt < BusyAttempts).ConfigureAwait(false);
            if (outcome is null)
            {
                return;
            }

            SqliteLog.Busy(_logger, outcome, batch.Count, delay, attempt);
            await Task.Delay(delay, _time).ConfigureAwait(false);
            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, MaxBusyDelay.Ticks));
        }
    }

    /// <summary>
    /// Runs the group in one transaction and completes its writes; or, when the database was busy and
    /// <paramref name="mayRetry"/>, rolls back, clears the writes' errors and returns the busy error to wait on.
    /// </summary>
    [SuppressMessage("Performance", "CA1849", Justification = "Microsoft.Data.Sqlite has no asynchronous I/O; its async methods run synchronously and only add allocations.")]
    private async ValueTask<SqliteException?> TryCommitAsync(List<WriteOperation> batch, bool mayRetry)
    {
        var startHead = 0L;
        var started = SqliteDiagnostics.CommitDuration.Enabled ? Stopwatch.GetTimestamp() : 0;
        try
        {
            _begin.ExecuteNonQuery();
            startHead = Head = Convert.ToInt64(_selectHead.ExecuteScalar(), CultureInfo.InvariantCulture);
            var savepoints = batch.Count > 1;
            foreach (var operation in batch)
            {
                var before = Head;
                if (savepoints)
                {
                    _savepoint.ExecuteNonQuery();
                }

                try
                {
                    await operation.ExecuteAsync(this).ConfigureAwait(false);
                    if (savepoints)
                    {
                        _release.ExecuteNonQuery();
                    }
                }
                catch (Exception ex) when (ex is not SqliteException || savepoints)
                {
                    // The write fails alone: undo it to its savepoint (a lone write: to the start of the transaction,
                    // which then commits nothing) and carry on with the others.
                    operation.Error = ex;
                    Head = before;
                    if (savepoints)
                    {
                        _rollbackTo.ExecuteNonQuery();
                        _release.ExecuteNonQuery();
                    }
                }
            }

            if (batch.Count == 1 && batch[0].Error is not null)
            {
                _rollback.ExecuteNonQuery();
            }
            else
            {
                _commit.ExecuteNonQuery();
            }
        }
        catch (SqliteException ex) when (mayRetry && SqliteStorageErrorClassifier.IsBusy(ex))
        {
            TryRollback();
            Head = startHead;
            foreach (var operation in batch)
            {
                operation.Error = null;
            }

            return ex;
        }
        catch (Exception ex)
        {
            // The transaction as a whole failed (BEGIN timed out on another process's lock, the disk is full, an I/O
            // error): nothing of it is stored, so every write in it fails.
            SqliteLog.CommitFailed(_logger, ex, batch.Count);
            TryRollback();
            Head = startHead;
            foreach (var operation in batch)
            {
                operation.Fail(operation.Error ?? ex);
            }

            batch.Clear();
            return null;
        }

        Interlocked.Increment(ref _commits);
        Interlocked.Add(ref _writes, batch.Count);
        SqliteDiagnostics.Commits.Add(1);
        SqliteDiagnostics.CommitWrites.Record(batch.Count);
        if (started != 0)
        {
            SqliteDiagnostics.CommitDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds);
        }

        if (Head != startHead)
        {
            _committed(Head);
        }

        foreach (var operation in batch)
        {
            if (operation.Error is { } error)
            {
                operation.Fail(error);
            }
            else
            {
                operation.Complete();
            }
        }

        batch.Clear();
        return null;
    }

    private void TryRollback()
    {
        try
        {
            if (!_connection.IsAutocommit())
            {
                _rollback.ExecuteNonQuery();
            }
        }
        catch (SqliteException ex)
        {
            SqliteLog.RollbackFailed(_logger, ex);
        }
    }

    private sqlite3_stmt Prepare(string sql)
    {
        Check(raw.sqlite3_prepare_v2(_connection.Handle, sql, out var statement));
        return statement;
    }

    private void Check(int rc)
    {
        if (rc != raw.SQLITE_OK)
        {
            SqliteException.ThrowExceptionForRC(rc, _connection.Handle);
        }
    }
}

/// <summary>A stream's row: version, deletion mode (0 none, 1 soft, 2 hard) and the version below which events are hidden.</summary>
internal readonly record struct StreamRow(long Version, int Deleted, long TruncatedBefore);
