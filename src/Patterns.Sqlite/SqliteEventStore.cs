using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Patterns.Storage;

namespace Patterns.Sqlite;

/// <summary>
/// The embedded durable event store: events, snapshots, checkpoints, read-model documents, the inbox, the outbox and
/// leases in one SQLite file, in WAL journal mode with <c>synchronous=FULL</c>.
/// </summary>
/// <remarks>
/// <para>
/// <b>Durability.</b> An append is acknowledged (its task completes) only after the transaction that holds it has
/// committed, and with <c>synchronous=FULL</c> SQLite syncs the write-ahead log to disk at every commit. So an
/// acknowledged append survives the process being killed, and the operating system or machine failing, as far as the disk
/// honours the sync.
/// </para>
/// <para>
/// <b>Group commit.</b> Every write (appends, units of work, deletes, checkpoints, documents, inbox marks, leases) goes
/// through one writer connection fed by a bounded queue. A write that finds the writer idle commits at once on the
/// caller's thread; writes queued while a commit is being synced share the next transaction and its one sync. Each runs
/// under its own savepoint, so a write that fails (a version conflict, a throwing inline projection, any failing part of
/// a unit of work) is rolled back alone and fails alone. An inline projection runs on the writer: it must not call the
/// store.
/// </para>
/// <para>
/// <b>Ordering.</b> Positions are taken under SQLite's write lock in commit order, and readers (separate connections,
/// concurrent thanks to WAL) see whole transactions only, so the global log is gap-free: a reader that remembers the
/// last position it saw never skips an event. Hard deletes are the exception: they remove positions, which are never
/// reused.
/// </para>
/// <para>
/// The schema is created on first use, or by <see cref="MigrateAsync"/>. Several processes may open the same file:
/// SQLite serializes their writers, and <see cref="WaitForEventsAsync"/> and <see cref="WaitForOutboxAsync"/> notice
/// their commits through a cheap check of the file's version (<see cref="SqliteEventStoreOptions.ChangeCheckInterval"/>),
/// with <see cref="SqliteEventStoreOptions.PollInterval"/> as the fallback.
/// </para>
/// </remarks>
public sealed partial class SqliteEventStore : IEventStorage, ISnapshotStorage, ICheckpointStore, IDocumentStorage, IInboxStore, IUnitOfWorkStorage, IOutboxStore, ILeaseStore, IAsyncDisposable, IDisposable
{
    private readonly SqliteEventStoreOptions _options;
    private readonly SqliteSql _sql;
    private readonly string _connectionString;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly SqliteReaders _readers;
    private readonly SqliteChangeWatch? _watch;
    private long _watchedOutbox;
    private readonly Lock _gate = new();
    private SqliteWriter? _writer;
    private long _knownHead;
    private TaskCompletionSource _appended = NewSignal();
    private int _disposed;

    /// <summary>Initializes a new instance of the <see cref="SqliteEventStore"/> class. The database is opened on first use.</summary>
    /// <param name="options">The options; copied, so later changes have no effect.</param>
    /// <param name="loggerFactory">Logs opening and failed commits; null logs nothing.</param>
    /// <exception cref="ArgumentException">The options are invalid; the message lists every problem.</exception>
    public SqliteEventStore(SqliteEventStoreOptions options, ILoggerFactory? loggerFactory = null)
        : this(options, TimeProvider.System, loggerFactory)
    {
    }

    private SqliteEventStore(SqliteEventStoreOptions options, TimeProvider defaultTime, ILoggerFactory? loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        SqliteEventStoreOptionsValidator.ThrowIfInvalid(options);
        _options = new SqliteEventStoreOptions
        {
            ConnectionString = options.ConnectionString,
            TablePrefix = options.TablePrefix,
            PageSize = options.PageSize,
            BusyTimeout = options.BusyTimeout,
            MaxWritesPerCommit = options.MaxWritesPerCommit,
            MaxEventsPerCommit = options.MaxEventsPerCommit,
            WriteQueueCapacity = options.WriteQueueCapacity,
            PollInterval = options.PollInterval,
            ChangeCheckInterval = options.ChangeCheckInterval,
            TimeProvider = options.TimeProvider ?? defaultTime,
        };
        _time = _options.TimeProvider;
        _sql = new SqliteSql(_options.TablePrefix);
        _connectionString = SqliteConnectionStrings.ForStore(_options);
        _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Patterns.Sqlite.SqliteEventStore");
        _readers = new SqliteReaders(_connectionString, _options, _sql);
        _watch = _options.ChangeCheckInterval > TimeSpan.Zero ? new SqliteChangeWatch(_connectionString, _options, OnOtherCommit, _logger) : null;
    }

    /// <summary>Initializes a new instance of the <see cref="SqliteEventStore"/> class on a file or connection string with default options.</summary>
    /// <param name="connectionString">A connection string (<c>Data Source=events.db</c>) or a file path.</param>
    /// <exception cref="ArgumentException">The connection string is invalid.</exception>
    public SqliteEventStore(string connectionString)
        : this(new SqliteEventStoreOptions { ConnectionString = connectionString })
    {
    }

    /// <summary>Creates a store that falls back to the application's clock when the options name none (the host builder path).</summary>
    internal static SqliteEventStore Create(SqliteEventStoreOptions options, TimeProvider defaultTime, ILoggerFactory? loggerFactory) =>
        new(options, defaultTime, loggerFactory);

    /// <summary>Gets what this store supports: hard deletes, inline projections in the append's transaction, and durability.</summary>
    public EventStorageCapabilities Capabilities =>
        EventStorageCapabilities.HardDelete | EventStorageCapabilities.TransactionalProjections | EventStorageCapabilities.Durable;

    /// <summary>Gets the number of transactions the writer has committed (for tests of group commit).</summary>
    internal long CommitCount => Volatile.Read(ref _writer)?.Commits ?? 0;

    /// <summary>Gets the number of writes the writer has committed.</summary>
    internal long CommittedWrites => Volatile.Read(ref _writer)?.Writes ?? 0;

    /// <summary>Reads a pragma on the writer's connection (for tests of the durability settings).</summary>
    internal ValueTask<long> WriterPragmaAsync(string name) =>
        Writer().EnqueueAsync(new DelegateWrite<string, long>(name, static (w, n) => w.Pragma(n), CancellationToken.None));

    /// <summary>
    /// Opens the database and creates every missing table and index (idempotent: running it again changes nothing).
    /// The store also does this on first use; call it at deployment or start-up to fail early.
    /// </summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the schema is in place.</returns>
    /// <exception cref="InvalidOperationException">The file cannot be opened, cannot use WAL, or holds a newer schema version.</exception>
    public async ValueTask MigrateAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (Volatile.Read(ref _writer) is { } writer)
        {
            // Already open (and migrated then): run it again through the writer, in case the tables were dropped since.
            await writer.EnqueueAsync(new DelegateWrite<SqliteSql, bool>(_sql, static (w, sql) => w.CreateSchema(sql), cancellationToken)).ConfigureAwait(false);
            return;
        }

        Open();
    }

    /// <inheritdoc />
    public ValueTask<AppendResult> AppendAsync(
        string streamId,
        ExpectedVersion expectedVersion,
        IReadOnlyList<SerializedEvent> events,
        InlineProjection? inlineProjection = null,
        CancellationToken cancellationToken = default)
    {
        SqliteArguments.Append(streamId, events);
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<AppendResult>(cancellationToken);
        }

        return Writer().EnqueueAsync(new AppendOperation(streamId, expectedVersion, events, inlineProjection, cancellationToken));
    }

    /// <inheritdoc />
    public IAsyncEnumerable<StoredEvent> ReadStreamAsync(
        string streamId,
        ReadDirection direction = ReadDirection.Forward,
        long? fromVersion = null,
        long maxCount = long.MaxValue,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        if (direction is not (ReadDirection.Forward or ReadDirection.Backward))
        {
            throw new ArgumentOutOfRangeException(nameof(direction), direction, "The direction must be Forward or Backward.");
        }

        return ReadStreamCoreAsync(streamId, direction, fromVersion, maxCount, cancellationToken);
    }

    /// <inheritdoc />
    public IAsyncEnumerable<StoredEvent> ReadAllAsync(
        long afterPosition = 0,
        EventFilter? filter = null,
        long maxCount = long.MaxValue,
        CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(afterPosition);
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        return ReadAllCoreAsync(afterPosition, filter is null || filter.IsAll ? null : filter, maxCount, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<StreamState> GetStreamStateAsync(string streamId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        cancellationToken.ThrowIfCancellationRequested();
        var row = Read(streamId, static (session, id) => SelectStream(session, id));
        return new(new StreamState(streamId, row.Version, row.Deleted != 0, row.TruncatedBefore));
    }

    /// <inheritdoc />
    public ValueTask<long> GetHeadPositionAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var head = Read(_sql, static (session, sql) => (long)session.Command(sql.SelectHead).ExecuteScalar()!);
        Advance(head);
        return new(head);
    }

    /// <inheritdoc />
    public ValueTask DeleteStreamAsync(
        string streamId,
        ExpectedVersion expectedVersion,
        StreamDeleteMode mode = StreamDeleteMode.Soft,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        if (mode is not (StreamDeleteMode.Soft or StreamDeleteMode.Hard))
        {
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "The delete mode must be Soft or Hard.");
        }

        return Discard(Writer().EnqueueAsync(new DelegateWrite<(string, ExpectedVersion, StreamDeleteMode, SqliteSql), bool>(
            (streamId, expectedVersion, mode, _sql), static (w, s) => w.DeleteStream(s.Item1, s.Item2, s.Item3, s.Item4), cancellationToken)));
    }

    /// <inheritdoc />
    public ValueTask TruncateStreamAsync(string streamId, long beforeVersion, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        ArgumentOutOfRangeException.ThrowIfNegative(beforeVersion);
        return Discard(Writer().EnqueueAsync(new DelegateWrite<(string, long, SqliteSql), bool>(
            (streamId, beforeVersion, _sql), static (w, s) => w.TruncateStream(s.Item1, s.Item2, s.Item3), cancellationToken)));
    }

    /// <inheritdoc />
    /// <remarks>
    /// Appends by this store instance wake waiters at once; appends by other processes (or store instances) within
    /// <see cref="SqliteEventStoreOptions.ChangeCheckInterval"/>, or at <see cref="SqliteEventStoreOptions.PollInterval"/>
    /// when the checks are off.
    /// </remarks>
    public async ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Writer();
        _watch?.EnsureStarted();
        var signal = Volatile.Read(ref _appended);
        if (Volatile.Read(ref _knownHead) > afterPosition || _disposed != 0)
        {
            return;
        }

        await SignalOrPollAsync(signal, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    ValueTask<StoredSnapshot?> ISnapshotStorage.LoadAsync(string streamId, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        cancellationToken.ThrowIfCancellationRequested();
        return new(Read((streamId, _sql), static (session, s) =>
        {
            var command = session.Command(s._sql.SelectSnapshot, "@stream");
            command.Parameters[0].Value = s.streamId;
            using var reader = command.ExecuteReader();
            return reader.Read()
                ? new StoredSnapshot(s.streamId, reader.GetInt64(0), reader.GetString(1), reader.GetInt32(2), (byte[])reader.GetValue(3), new DateTimeOffset(reader.GetInt64(4), TimeSpan.Zero))
                : null;
        }));
    }

    /// <inheritdoc />
    ValueTask ISnapshotStorage.SaveAsync(StoredSnapshot snapshot, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        ArgumentException.ThrowIfNullOrEmpty(snapshot.StreamId, nameof(snapshot));
        ArgumentException.ThrowIfNullOrEmpty(snapshot.SnapshotType, nameof(snapshot));
        ArgumentOutOfRangeException.ThrowIfNegative(snapshot.Version, nameof(snapshot));
        return Discard(Writer().EnqueueAsync(new DelegateWrite<(StoredSnapshot, SqliteSql), bool>((snapshot, _sql), static (w, s) =>
        {
            var command = w.Prepared(s.Item2.UpsertSnapshot, "@stream", "@version", "@type", "@schema", "@data", "@timestamp");
            var p = command.Parameters;
            p[0].Value = s.Item1.StreamId;
            p[1].Value = s.Item1.Version;
            p[2].Value = s.Item1.SnapshotType;
            p[3].Value = s.Item1.SchemaVersion;
            p[4].Value = SqliteRows.Array(s.Item1.Data);
            p[5].Value = s.Item1.Timestamp.UtcTicks;
            return command.ExecuteNonQuery() > 0;
        }, cancellationToken)));
    }

    /// <inheritdoc />
    ValueTask<long?> ICheckpointStore.LoadAsync(string name, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        cancellationToken.ThrowIfCancellationRequested();
        return new(Read((name, _sql), static (session, s) =>
        {
            var command = session.Command(s._sql.SelectCheckpoint, "@name");
            command.Parameters[0].Value = s.name;
            return command.ExecuteScalar() is long position ? position : (long?)null;
        }));
    }

    /// <inheritdoc />
    ValueTask ICheckpointStore.SaveAsync(string name, long position, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentOutOfRangeException.ThrowIfNegative(position);
        return Discard(Writer().EnqueueAsync(new DelegateWrite<(string, long), bool>((name, position), static (w, s) =>
        {
            w.SaveCheckpoint(s.Item1, s.Item2);
            return true;
        }, cancellationToken)));
    }

    /// <inheritdoc />
    ValueTask<byte[]?> IDocumentWriter.GetAsync(string collection, string id, CancellationToken cancellationToken)
    {
        SqliteArguments.Key(collection, nameof(collection));
        SqliteArguments.Key(id, nameof(id));
        cancellationToken.ThrowIfCancellationRequested();
        return new(Read((collection, id, _sql), static (session, s) =>
        {
            var command = session.Command(s._sql.SelectDocument, "@collection", "@id");
            command.Parameters[0].Value = s.collection;
            command.Parameters[1].Value = s.id;
            return command.ExecuteScalar() as byte[];
        }));
    }

    /// <inheritdoc />
    ValueTask IDocumentWriter.UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken)
    {
        SqliteArguments.Key(collection, nameof(collection));
        SqliteArguments.Key(id, nameof(id));
        return Discard(Writer().EnqueueAsync(new DelegateWrite<(string, string, ReadOnlyMemory<byte>), bool>((collection, id, document), static (w, s) =>
        {
            w.UpsertDocument(s.Item1, s.Item2, s.Item3);
            return true;
        }, cancellationToken)));
    }

    /// <inheritdoc />
    ValueTask<bool> IDocumentWriter.DeleteAsync(string collection, string id, CancellationToken cancellationToken)
    {
        SqliteArguments.Key(collection, nameof(collection));
        SqliteArguments.Key(id, nameof(id));
        return Writer().EnqueueAsync(new DelegateWrite<(string, string), bool>((collection, id), static (w, s) => w.DeleteDocument(s.Item1, s.Item2), cancellationToken));
    }

    /// <inheritdoc />
    IAsyncEnumerable<KeyValuePair<string, byte[]>> IDocumentStorage.ListAsync(string collection, CancellationToken cancellationToken)
    {
        SqliteArguments.Key(collection, nameof(collection));
        return ListDocumentsAsync(collection, cancellationToken);
    }

    /// <inheritdoc />
    ValueTask IDocumentStorage.ClearAsync(string collection, CancellationToken cancellationToken)
    {
        SqliteArguments.Key(collection, nameof(collection));
        return Discard(Writer().EnqueueAsync(new DelegateWrite<(string, SqliteSql), bool>((collection, _sql), static (w, s) =>
        {
            var command = w.Prepared(s.Item2.ClearDocuments, "@collection");
            command.Parameters[0].Value = s.Item1;
            return command.ExecuteNonQuery() > 0;
        }, cancellationToken)));
    }

    /// <inheritdoc />
    ValueTask<bool> IInboxStore.ContainsAsync(string consumer, string messageId, CancellationToken cancellationToken)
    {
        SqliteArguments.Key(consumer, nameof(consumer));
        SqliteArguments.Key(messageId, nameof(messageId));
        cancellationToken.ThrowIfCancellationRequested();
        return new(Read((consumer, messageId, _sql), static (session, s) =>
        {
            var command = session.Command(s._sql.InboxContains, "@consumer", "@id");
            command.Parameters[0].Value = s.consumer;
            command.Parameters[1].Value = s.messageId;
            return command.ExecuteScalar() is not null;
        }));
    }

    /// <inheritdoc />
    /// <remarks>One read session: the prepared lookup runs once per id, in process, with no round trip between them.</remarks>
    ValueTask<IReadOnlySet<string>> IInboxStore.ContainsManyAsync(string consumer, IReadOnlyCollection<string> messageIds, CancellationToken cancellationToken)
    {
        SqliteArguments.Key(consumer, nameof(consumer));
        ArgumentNullException.ThrowIfNull(messageIds);
        foreach (var id in messageIds)
        {
            SqliteArguments.Key(id, nameof(messageIds));
        }

        cancellationToken.ThrowIfCancellationRequested();
        if (messageIds.Count == 0)
        {
            return new(new HashSet<string>(StringComparer.Ordinal));
        }

        return new(Read((consumer, messageIds, _sql, cancellationToken), static (session, s) =>
        {
            var found = new HashSet<string>(StringComparer.Ordinal);
            var command = session.Command(s._sql.InboxContains, "@consumer", "@id");
            command.Parameters[0].Value = s.consumer;
            foreach (var id in s.messageIds)
            {
                s.cancellationToken.ThrowIfCancellationRequested();
                command.Parameters[1].Value = id;
                if (command.ExecuteScalar() is not null)
                {
                    found.Add(id);
                }
            }

            return found;
        }));
    }

    /// <inheritdoc />
    /// <remarks>The mark is stamped with <see cref="SqliteEventStoreOptions.TimeProvider"/>'s current time, which <see cref="IInboxStore.PruneAsync"/> compares.</remarks>
    ValueTask<bool> IInboxStore.TryMarkHandledAsync(string consumer, string messageId, CancellationToken cancellationToken)
    {
        SqliteArguments.Key(consumer, nameof(consumer));
        SqliteArguments.Key(messageId, nameof(messageId));
        return Writer().EnqueueAsync(new DelegateWrite<(string, string, long), bool>(
            (consumer, messageId, _time.GetUtcNow().UtcTicks), static (w, s) => w.MarkHandled(s.Item1, s.Item2, s.Item3), cancellationToken));
    }

    /// <inheritdoc />
    ValueTask<long> IInboxStore.PruneAsync(DateTimeOffset olderThan, CancellationToken cancellationToken) =>
        Writer().EnqueueAsync(new DelegateWrite<(long, SqliteSql), long>((olderThan.UtcTicks, _sql), static (w, s) =>
        {
            var command = w.Prepared(s.Item2.InboxPrune, "@before");
            command.Parameters[0].Value = s.Item1;
            return command.ExecuteNonQuery();
        }, cancellationToken));

    /// <summary>Commits the queued writes, then closes every connection. The data stays in the file.</summary>
    /// <returns>A task that completes when the store is closed.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        SqliteWriter? writer;
        lock (_gate)
        {
            writer = _writer;
        }

        if (_watch is not null)
        {
            await _watch.DisposeAsync().ConfigureAwait(false);
        }

        if (writer is not null)
        {
            await writer.DisposeAsync().ConfigureAwait(false);
        }

        _readers.Dispose();
        Interlocked.Exchange(ref _appended, NewSignal()).TrySetResult();
        Interlocked.Exchange(ref _enqueued, NewSignal()).TrySetResult();
    }

    /// <summary>Commits the queued writes, then closes every connection (blocking; prefer <see cref="DisposeAsync"/>).</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private static async ValueTask Discard<T>(ValueTask<T> task) => await task.ConfigureAwait(false);

    /// <summary>Waits for an in-process signal, or for <see cref="SqliteEventStoreOptions.PollInterval"/> so that other processes' commits are noticed.</summary>
    private async ValueTask SignalOrPollAsync(TaskCompletionSource signal, CancellationToken cancellationToken)
    {
        using var poll = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var delay = Task.Delay(_options.PollInterval, _time, poll.Token);
        await Task.WhenAny(signal.Task, delay).ConfigureAwait(false);
        await poll.CancelAsync().ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
    }

    private static StreamRow SelectStream(ReadSession session, string streamId)
    {
        var command = session.Command(session.Sql.SelectStream, "@stream");
        command.Parameters[0].Value = streamId;
        using var reader = command.ExecuteReader();
        return reader.Read() ? new StreamRow(reader.GetInt64(0), reader.GetInt32(1), reader.GetInt64(2)) : default;
    }

    private SqliteWriter Writer() => Volatile.Read(ref _writer) ?? Open();

    private SqliteWriter Open()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            if (_writer is { } existing)
            {
                return existing;
            }

            var writer = SqliteWriter.Open(_connectionString, _sql, _options, Advance, _logger);
            Advance(writer.Head);
            SqliteLog.Opened(_logger, new SqliteConnectionStringBuilder(_connectionString).DataSource, _options.TablePrefix, writer.Head);
            Volatile.Write(ref _writer, writer);
            return writer;
        }
    }

    /// <summary>
    /// Called by the change watch when another connection committed (or when the watch starts): reads the heads of the
    /// log and the outbox and wakes the waits of whichever moved. This store's own commits change the file's version too;
    /// they moved the known head already, so they wake no event waiter twice.
    /// </summary>
    private void OnOtherCommit()
    {
        if (_disposed != 0)
        {
            return;
        }

        var (head, outbox) = Read(_sql, static (session, sql) => ((long)session.Command(sql.SelectHead).ExecuteScalar()!, (long)session.Command(sql.SelectOutboxHead).ExecuteScalar()!));
        Advance(head);
        if (outbox > Interlocked.Exchange(ref _watchedOutbox, outbox))
        {
            Interlocked.Exchange(ref _enqueued, NewSignal()).TrySetResult();
        }
    }

    /// <summary>Records a head position seen or committed, and wakes <see cref="WaitForEventsAsync"/> when it moved.</summary>
    private void Advance(long head)
    {
        var known = Volatile.Read(ref _knownHead);
        while (head > known)
        {
            var seen = Interlocked.CompareExchange(ref _knownHead, head, known);
            if (seen == known)
            {
                Interlocked.Exchange(ref _appended, NewSignal()).TrySetResult();
                return;
            }

            known = seen;
        }
    }

    /// <summary>Runs a read on a pooled connection (opening the store first if needed).</summary>
    private T Read<TState, T>(TState state, Func<ReadSession, TState, T> read)
    {
        Writer();
        var session = _readers.Rent();
        try
        {
            return read(session, state);
        }
        finally
        {
            _readers.Return(session);
        }
    }

    private IAsyncEnumerable<StoredEvent> ReadStreamCoreAsync(
        string streamId, ReadDirection direction, long? fromVersion, long maxCount, CancellationToken cancellationToken)
    {
        var forward = direction == ReadDirection.Forward;
        long floor = 0, next = 0;
        var first = true;
        return PagesAsync<StoredEvent>(maxCount, (session, limit, page) =>
        {
            if (first)
            {
                first = false;
                var row = SelectStream(session, streamId);
                if (row.Deleted != 0)
                {
                    throw new StreamDeletedException(streamId);
                }

                if (row.Version == 0)
                {
                    return;
                }

                floor = Math.Max(1, row.TruncatedBefore);
                next = forward ? Math.Max(fromVersion ?? 1, floor) : Math.Min(fromVersion ?? row.Version, row.Version);
            }

            if (forward)
            {
                var command = session.Command(_sql.ReadStreamForward, "@stream", "@from", "@limit");
                command.Parameters[0].Value = streamId;
                command.Parameters[1].Value = next;
                command.Parameters[2].Value = limit;
                ReadPage(command, streamId, page);
            }
            else if (next >= floor)
            {
                var command = session.Command(_sql.ReadStreamBackward, "@stream", "@from", "@floor", "@limit");
                command.Parameters[0].Value = streamId;
                command.Parameters[1].Value = next;
                command.Parameters[2].Value = floor;
                command.Parameters[3].Value = limit;
                ReadPage(command, streamId, page);
            }

            if (page.Count > 0)
            {
                next = forward ? page[^1].Version + 1 : page[^1].Version - 1;
            }
        }, cancellationToken);
    }

    private IAsyncEnumerable<StoredEvent> ReadAllCoreAsync(long afterPosition, EventFilter? filter, long maxCount, CancellationToken cancellationToken)
    {
        var after = afterPosition;
        var types = filter?.EventTypes is { Count: > 0 } t ? t.ToArray() : [];
        var prefix = filter?.StreamPrefix is { } p ? Encoding.UTF8.GetBytes(p) : null;
        var filteredSql = filter is null ? null : _sql.ReadAllFiltered(types.Length, prefix is not null);
        return PagesAsync<StoredEvent>(maxCount, (session, limit, page) =>
        {
            if (filteredSql is null)
            {
                var command = session.Command(_sql.ReadAll, "@after", "@limit");
                command.Parameters[0].Value = after;
                command.Parameters[1].Value = limit;
                ReadPage(command, null, page);
            }
            else
            {
                using var command = session.OneOff(filteredSql);
                command.Parameters.AddWithValue("@after", after);
                command.Parameters.AddWithValue("@limit", limit);
                for (var i = 0; i < types.Length; i++)
                {
                    command.Parameters.AddWithValue("@type" + i.ToString(System.Globalization.CultureInfo.InvariantCulture), types[i]);
                }

                if (prefix is not null)
                {
                    command.Parameters.AddWithValue("@prefix", prefix);
                }

                ReadPage(command, null, page);
            }

            if (page.Count > 0)
            {
                after = page[^1].Position;
            }
        }, cancellationToken);
    }

    private IAsyncEnumerable<KeyValuePair<string, byte[]>> ListDocumentsAsync(string collection, CancellationToken cancellationToken)
    {
        string? after = null;
        return PagesAsync<KeyValuePair<string, byte[]>>(long.MaxValue, (session, limit, page) =>
        {
            var command = after is null
                ? session.Command(_sql.ListDocumentsFirst, "@collection", "@limit")
                : session.Command(_sql.ListDocuments, "@collection", "@limit", "@after");
            command.Parameters[0].Value = collection;
            command.Parameters[1].Value = limit;
            if (after is not null)
            {
                command.Parameters[2].Value = after;
            }

            ReadDocuments(command, page);
            if (page.Count > 0)
            {
                after = page[^1].Key;
            }
        }, cancellationToken);
    }

    /// <summary>
    /// Pages through a query: each page is fetched on a pooled connection (a fresh snapshot, held only while the page
    /// is read), then yielded; a short page ends the read. Memory is bounded by one page.
    /// </summary>
    /// <param name="maxCount">The most items to return.</param>
    /// <param name="fetch">Reads at most <c>limit</c> items after the previous page into the list, and moves its own cursor.</param>
    /// <param name="cancellationToken">Checked between pages.</param>
    private async IAsyncEnumerable<T> PagesAsync<T>(long maxCount, Action<ReadSession, int, List<T>> fetch, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var page = new List<T>();
        var remaining = maxCount;
        while (remaining > 0)
        {
            var limit = (int)Math.Min(remaining, _options.PageSize);
            page.Clear();
            Writer();
            var session = _readers.Rent();
            try
            {
                fetch(session, limit, page);
            }
            finally
            {
                _readers.Return(session);
            }

            foreach (var item in page)
            {
                yield return item;
            }

            if (page.Count < limit)
            {
                yield break;
            }

            remaining -= page.Count;
            cancellationToken.ThrowIfCancellationRequested();
            await Task.Yield();
        }
    }

    private static void ReadDocuments(SqliteCommand command, List<KeyValuePair<string, byte[]>> page)
    {
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            page.Add(new(reader.GetString(0), (byte[])reader.GetValue(1)));
        }
    }

    private static void ReadPage(SqliteCommand command, string? streamId, List<StoredEvent> page)
    {
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            page.Add(SqliteRows.ReadEvent(reader, streamId));
        }
    }
}
