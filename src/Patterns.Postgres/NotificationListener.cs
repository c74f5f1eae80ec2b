using System.Globalization;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Patterns.Postgres;

/// <summary>
/// Wakes <see cref="PostgresEventStore.WaitForEventsAsync"/> callers: on this store's own appends at once, and on
/// appends from other processes through a dedicated connection that LISTENs on the schema's channel and
/// reconnects when it fails. The payload of each notification is the last position the append committed.
/// </summary>
internal sealed class NotificationListener : IAsyncDisposable
{
    private static readonly TimeSpan MaxReconnectDelay = TimeSpan.FromSeconds(30);

    // While idle, the connection is checked this often so a dead server is noticed and the listener reconnects.
    private static readonly TimeSpan IdleCheck = TimeSpan.FromSeconds(30);

    private readonly NpgsqlDataSource _dataSource;
    private readonly string _channel;
    private readonly bool _listen;
    private readonly TimeProvider _timeProvider;
    private readonly TimeSpan _reconnectDelay;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();
    private TaskCompletionSource _signal = NewSignal();
    private TaskCompletionSource _connected = NewSignal();
    private long _knownHead;
    private int _failures;
    private bool _stopped;
    private Task? _loop;

    public NotificationListener(NpgsqlDataSource dataSource, string channel, bool listen, TimeProvider timeProvider, TimeSpan reconnectDelay, ILogger logger)
    {
        _dataSource = dataSource;
        _channel = channel;
        _listen = listen;
        _timeProvider = timeProvider;
        _reconnectDelay = reconnectDelay;
        _logger = logger;
    }

    /// <summary>Gets the highest position this process knows to be committed (from its own appends or a notification).</summary>
    public long KnownHead => Volatile.Read(ref _knownHead);

    /// <summary>Gets a task that completes at the next append signal. Take it before checking for new events, then wait on it.</summary>
    public Task NextSignal => Volatile.Read(ref _signal).Task;

    /// <summary>Gets a task that completes the next time the listening connection has run LISTEN (for tests).</summary>
    internal Task NextConnection => Volatile.Read(ref _connected).Task;

    /// <summary>Gets the server process id of the listening connection, 0 before the first connection (for tests).</summary>
    internal int ProcessId { get; private set; }

    /// <summary>Records that events up to <paramref name="position"/> are committed and wakes every waiter.</summary>
    public void Publish(long position)
    {
        Observe(position);
        Interlocked.Exchange(ref _signal, NewSignal()).TrySetResult();
    }

    /// <summary>Records that events up to <paramref name="position"/> are committed, without waking anyone.</summary>
    public void Observe(long position)
    {
        var known = Volatile.Read(ref _knownHead);
        while (position > known)
        {
            var seen = Interlocked.CompareExchange(ref _knownHead, position, known);
            if (seen == known)
            {
                break;
            }

            known = seen;
        }
    }

    /// <summary>Starts the listening connection on first use; a no-op when notifications are off or it runs already.</summary>
    public void EnsureStarted()
    {
        if (!_listen || Volatile.Read(ref _loop) is not null)
        {
            return;
        }

        lock (_gate)
        {
            if (_loop is null && !_stopped)
            {
                _loop = Task.Run(RunAsync);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (TryStop() is { } loop)
        {
            await _stopping.CancelAsync().ConfigureAwait(false);
            await loop.ConfigureAwait(false);
            _stopping.Dispose();
            _signal.TrySetResult();
        }
    }

    /// <summary>Stops the listening loop without waiting for it to end (synchronous disposal).</summary>
    public void Stop()
    {
        if (TryStop() is not null)
        {
            _stopping.Cancel();
            _signal.TrySetResult();
        }
    }

    /// <summary>Marks the listener stopped; returns the loop to wait for (a completed task when none ran), or null when already stopped.</summary>
    private Task? TryStop()
    {
        lock (_gate)
        {
            if (_stopped)
            {
                return null;
            }

            _stopped = true;
            return _loop ?? Task.CompletedTask;
        }
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private async Task RunAsync()
    {
        var token = _stopping.Token;
        var reconnecting = false;
        while (!token.IsCancellationRequested)
        {
            try
            {
                await ListenAsync(reconnecting, token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or IOException or TimeoutException)
            {
                reconnecting = true;
                var delay = ReconnectDelay(_failures++);
                PostgresLog.ListenerFailed(_logger, ex, _channel, delay);
                try
                {
                    await Task.Delay(delay, _timeProvider, token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    private async Task ListenAsync(bool reconnecting, CancellationToken token)
    {
        var connection = await _dataSource.OpenConnectionAsync(token).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            connection.Notification += OnNotification;
            var listen = new NpgsqlCommand($"LISTEN \"{_channel}\"", connection);
            await using (listen.ConfigureAwait(false))
            {
                await listen.ExecuteNonQueryAsync(token).ConfigureAwait(false);
            }

            PostgresLog.Listening(_logger, _channel);
            _failures = 0;
            ProcessId = connection.ProcessID;
            Interlocked.Exchange(ref _connected, NewSignal()).TrySetResult();
            if (reconnecting)
            {
                // Notifications sent while the connection was down are lost: wake every waiter to re-read.
                Publish(KnownHead);
            }

            while (true)
            {
                if (!await connection.WaitAsync(IdleCheck, token).ConfigureAwait(false))
                {
                    var ping = new NpgsqlCommand("SELECT 1", connection);
                    await using (ping.ConfigureAwait(false))
                    {
                        await ping.ExecuteScalarAsync(token).ConfigureAwait(false);
                    }
                }
            }
        }
    }

    private void OnNotification(object sender, NpgsqlNotificationEventArgs e)
    {
        if (long.TryParse(e.Payload, NumberStyles.None, CultureInfo.InvariantCulture, out var position))
        {
            Publish(position);
        }
        else
        {
            PostgresLog.BadNotification(_logger, _channel, e.Payload);
            Publish(KnownHead);
        }
    }

    private TimeSpan ReconnectDelay(int failures)
    {
        var delay = _reconnectDelay * Math.Pow(2, Math.Min(failures, 10));
        return delay > MaxReconnectDelay ? MaxReconnectDelay : delay;
    }
}
