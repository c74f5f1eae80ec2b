using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Patterns.Storage;

namespace Patterns.Postgres;

/// <summary>
/// The event store on PostgreSQL: events, snapshots, checkpoints, read-model documents, inbox entries, outbox
/// messages and leases in one schema, behind the store SPI (<see cref="IEventStorage"/>, <see cref="ISnapshotStorage"/>,
/// <see cref="ICheckpointStore"/>, <see cref="IDocumentStorage"/>, <see cref="IInboxStore"/>,
/// <see cref="IUnitOfWorkStorage"/>, <see cref="IOutboxStore"/>, <see cref="ILeaseStore"/>).
/// </summary>
/// <remarks>
/// <para>
/// An acknowledged append is a committed PostgreSQL transaction: with the server's default
/// <c>synchronous_commit = on</c> it survives a crash of the server and of this process. One append is one
/// round trip (a call to the schema's <c>append_events</c> function, which checks the expected version, stores the
/// batch and notifies listeners); an append with inline projections adds the projections' own statements and
/// the commit to the same transaction.
/// </para>
/// <para>
/// Global positions come from a one-row counter that each append updates after its checks; the row lock is held
/// until the append commits, so positions become visible strictly in increasing order: <see cref="ReadAllAsync"/>
/// never returns an event while an event with a lower position can still commit. Transactions that append therefore
/// commit one at a time, and appends made concurrently through one store instance share a transaction (group
/// commit). A rolled-back append restores the counter, so positions are contiguous; only a hard delete leaves
/// holes. See docs/stores/postgres.md.
/// </para>
/// <para>
/// The schema is created on first use, or by <see cref="MigrateAsync"/>. Thread-safe; share one instance per
/// database and schema in a process. Dispose it to close the listening connection (and the data source it built).
/// </para>
/// </remarks>
public sealed partial class PostgresEventStore : IEventStorage, ISnapshotStorage, ICheckpointStore, IDocumentStorage, IInboxStore, IUnitOfWorkStorage, IOutboxStore, ILeaseStore, ILeaseWatch, IAsyncDisposable, IDisposable
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly bool _ownsDataSource;
    private readonly PostgresSchema _schema;
    private readonly int _pageSize;
    private readonly TimeSpan _pollInterval;
    private readonly bool _notifications;
    private readonly bool _autoCreateSchema;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly NotificationListener _listener;
    private readonly Lock _gate = new();
    private Task? _schemaReady;
    private int _disposed;

    /// <summary>Initializes a new instance of the <see cref="PostgresEventStore"/> class.</summary>
    /// <param name="options">The options; they are read once, here.</param>
    /// <param name="logger">Logs migrations and listener failures; none when null.</param>
    /// <exception cref="ArgumentException">The options are invalid (every problem is listed), or the connection string cannot be parsed.</exception>
    public PostgresEventStore(PostgresEventStoreOptions options, ILogger<PostgresEventStore>? logger = null)
        : this(options, null, logger)
    {
    }

    /// <summary>Initializes a new instance with the application's clock as the fallback when the options name none.</summary>
    internal PostgresEventStore(PostgresEventStoreOptions options, TimeProvider? defaultTimeProvider, ILogger? logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        var validation = new PostgresEventStoreOptionsValidator().Validate(null, options);
        if (validation.Failed)
        {
            throw new ArgumentException(validation.FailureMessage, nameof(options));
        }

        _ownsDataSource = options.DataSource is null;
        _dataSource = options.DataSource ?? NpgsqlDataSource.Create(options.ConnectionString!);
        _schema = new PostgresSchema(options.Schema);
        _pageSize = options.PageSize;
        _pollInterval = options.PollInterval;
        _notifications = options.Notifications;
        _autoCreateSchema = options.AutoCreateSchema;
        _timeProvider = options.TimeProvider ?? defaultTimeProvider ?? TimeProvider.System;
        _logger = logger ?? NullLogger.Instance;
        _appendQueue = new GroupQueue<PendingAppend, AppendResult>(RunAppendGroupAsync);
        _unitQueue = new GroupQueue<PendingUnit, UnitOfWorkResult>(RunUnitGroupAsync);
        _listener = new NotificationListener(_dataSource, _schema.Channel, _schema.OutboxChannel, _schema.LeaseChannel, _notifications, _timeProvider, _pollInterval, _logger);
    }

    /// <summary>Gets the schema that holds the store's tables.</summary>
    public string Schema => _schema.Name;

    /// <summary>Gets the listener that wakes <see cref="WaitForEventsAsync"/> (for tests).</summary>
    internal NotificationListener Listener => _listener;

    /// <summary>
    /// Creates the schema, or upgrades it to the version this package expects. Idempotent, and safe when several
    /// processes run it at once: the work runs in one transaction under an advisory lock on the schema.
    /// </summary>
    /// <param name="cancellationToken">Cancels the migration (the transaction rolls back).</param>
    /// <returns>A task that completes when the schema is ready.</returns>
    public async Task MigrateAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            await using (transaction.ConfigureAwait(false))
            {
                await ExecuteAsync(connection, transaction, "SELECT pg_advisory_xact_lock($1)", Parameters.Bigint(_schema.MigrationLockKey), cancellationToken).ConfigureAwait(false);
                await ExecuteAsync(connection, transaction, _schema.CreateSchema, null, cancellationToken).ConfigureAwait(false);
                var applied = await AppliedVersionAsync(connection, transaction, cancellationToken).ConfigureAwait(false);
                foreach (var (version, sql) in _schema.Migrations)
                {
                    if (version > applied)
                    {
                        await ExecuteAsync(connection, transaction, sql, null, cancellationToken).ConfigureAwait(false);
                        await ExecuteAsync(connection, transaction, _schema.RecordMigration, Parameters.Integer(version), cancellationToken).ConfigureAwait(false);
                    }
                }

                await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
                if (applied < _schema.LatestVersion)
                {
                    PostgresLog.Migrated(_logger, _schema.Name, applied, _schema.LatestVersion);
                }
            }
        }

        lock (_gate)
        {
            _schemaReady = Task.CompletedTask;
        }
    }

    /// <summary>Closes the listening connection, and the data source when the store built it from a connection string.</summary>
    /// <returns>A task that completes when everything is closed.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _listener.DisposeAsync().ConfigureAwait(false);
        if (_ownsDataSource)
        {
            await _dataSource.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Closes the listening connection (without waiting for its loop to end), and the data source when the store built it.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _listener.Stop();
        if (_ownsDataSource)
        {
            _dataSource.Dispose();
        }
    }

    /// <summary>Runs one statement on a pooled connection and returns its first column of the first row.</summary>
    private async ValueTask<object?> ScalarAsync(string sql, CancellationToken cancellationToken, params NpgsqlParameter[] parameters)
    {
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = new NpgsqlCommand(sql, connection);
            await using (command.ConfigureAwait(false))
            {
                command.Parameters.AddRange(parameters);
                return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Runs one statement on a pooled connection and returns the number of rows it changed.</summary>
    private async ValueTask<int> NonQueryAsync(string sql, CancellationToken cancellationToken, params NpgsqlParameter[] parameters)
    {
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = new NpgsqlCommand(sql, connection);
            await using (command.ConfigureAwait(false))
            {
                command.Parameters.AddRange(parameters);
                return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private static async ValueTask ExecuteAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction, string sql, NpgsqlParameter? parameter, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(sql, connection, transaction);
        await using (command.ConfigureAwait(false))
        {
            if (parameter is not null)
            {
                command.Parameters.Add(parameter);
            }

            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private async ValueTask<int> AppliedVersionAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(_schema.AppliedVersion, connection, transaction);
        await using (command.ConfigureAwait(false))
        {
            return (int)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
        }
    }

    /// <summary>Opens a pooled connection once the schema is known to be ready.</summary>
    private ValueTask<NpgsqlConnection> OpenAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var ready = Volatile.Read(ref _schemaReady);
        return ready is { IsCompletedSuccessfully: true }
            ? _dataSource.OpenConnectionAsync(cancellationToken)
            : OpenSlowAsync(cancellationToken);
    }

    private async ValueTask<NpgsqlConnection> OpenSlowAsync(CancellationToken cancellationToken)
    {
        Task ready;
        lock (_gate)
        {
            if (_schemaReady is null || _schemaReady.IsFaulted || _schemaReady.IsCanceled)
            {
                _schemaReady = PrepareSchemaAsync();
            }

            ready = _schemaReady;
        }

        await ready.WaitAsync(cancellationToken).ConfigureAwait(false);
        return await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Migrates the schema (when <see cref="PostgresEventStoreOptions.AutoCreateSchema"/>) or checks that it is up to date.</summary>
    private async Task PrepareSchemaAsync()
    {
        if (_autoCreateSchema)
        {
            await MigrateAsync(CancellationToken.None).ConfigureAwait(false);
            return;
        }

        int applied;
        var connection = await _dataSource.OpenConnectionAsync().ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            try
            {
                applied = await AppliedVersionAsync(connection, null, CancellationToken.None).ConfigureAwait(false);
            }
            catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.InvalidSchemaName)
            {
                throw new InvalidOperationException(
                    $"The PostgreSQL schema '{_schema.Name}' of the event store does not exist. Call PostgresEventStore.MigrateAsync() first, or set PostgresEventStoreOptions.AutoCreateSchema.", ex);
            }
        }

        if (applied < _schema.LatestVersion)
        {
            throw new InvalidOperationException(
                $"The PostgreSQL schema '{_schema.Name}' of the event store is at version {applied}, but this version of Patterns.Postgres needs {_schema.LatestVersion}. Call PostgresEventStore.MigrateAsync() first, or set PostgresEventStoreOptions.AutoCreateSchema.");
        }
    }
}
