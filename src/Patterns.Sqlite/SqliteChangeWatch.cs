using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;

namespace Patterns.Sqlite;

/// <summary>
/// Notices commits made through other connections to the file (other processes, other store instances): every
/// <see cref="SqliteEventStoreOptions.ChangeCheckInterval"/> it runs <c>PRAGMA data_version</c> on a connection of its
/// own, which reads SQLite's shared-memory WAL index only (no disk read, no lock), and calls back when the number
/// changed. SQLite has no notifications; this is the cheapest prompt substitute. It starts with the first wait, so a
/// store nobody waits on runs nothing, and it keeps no read transaction open, so checkpoints are never held back.
/// </summary>
/// <remarks>
/// The interval is on the system clock, not the store's <see cref="TimeProvider"/>: it is how often the file is looked
/// at (as PostgreSQL's notifications arrive whatever a test clock says), not a time the store's logic depends on.
/// </remarks>
internal sealed class SqliteChangeWatch : IAsyncDisposable
{
    private readonly string _connectionString;
    private readonly SqliteEventStoreOptions _options;
    private readonly Action _changed;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;
    private int _started;

    public SqliteChangeWatch(string connectionString, SqliteEventStoreOptions options, Action changed, ILogger logger)
    {
        _connectionString = connectionString;
        _options = options;
        _changed = changed;
        _logger = logger;
    }

    /// <summary>Gets how many changes by other connections the watch has seen (for tests).</summary>
    public long Changes => Interlocked.Read(ref _changes);

    private long _changes;

    /// <summary>Starts the watch loop unless it runs already.</summary>
    public void EnsureStarted()
    {
        if (Volatile.Read(ref _started) == 0 && Interlocked.Exchange(ref _started, 1) == 0)
        {
            _loop = Task.Run(() => RunAsync(_stop.Token));
        }
    }

    public async ValueTask DisposeAsync()
    {
        Interlocked.Exchange(ref _started, 1); // no start after this
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_loop is { } loop)
        {
            await loop.ConfigureAwait(false);
        }

        _stop.Dispose();
    }

    private async Task RunAsync(CancellationToken stop)
    {
        SqliteConnection? connection = null;
        SqliteCommand? command = null;
        long last = 0;
        using var timer = new PeriodicTimer(_options.ChangeCheckInterval);
        try
        {
            do
            {
                try
                {
                    if (command is null)
                    {
                        connection = SqliteDatabase.OpenConnection(_connectionString, _options);
                        command = connection.CreateCommand();
                        command.CommandText = "PRAGMA data_version";
                        last = Version(command);

                        // Whatever was committed while the watch was not looking (before its start, or after a failure)
                        // is announced once: a spurious wake-up only makes a waiter read again.
                        _changed();
                        continue;
                    }

                    var version = Version(command);
                    if (version != last)
                    {
                        last = version;
                        Interlocked.Increment(ref _changes);
                        _changed();
                    }
                }
                catch (Exception ex) when (ex is SqliteException or InvalidOperationException)
                {
                    // The file may be busy or briefly unavailable: open a new connection at the next tick. Waiters still
                    // wake at the poll interval meanwhile.
                    SqliteLog.ChangeWatchFailed(_logger, ex, _options.ChangeCheckInterval);
                    command?.Dispose();
                    connection?.Dispose();
                    (command, connection) = (null, null);
                }
            }
            while (await timer.WaitForNextTickAsync(stop).ConfigureAwait(false));
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        finally
        {
            command?.Dispose();
            connection?.Dispose();
        }
    }

    // Microsoft.Data.Sqlite runs every command synchronously (its async methods do too); this one reads shared memory only.
    private static long Version(SqliteCommand command) => (long)command.ExecuteScalar()!;
}
