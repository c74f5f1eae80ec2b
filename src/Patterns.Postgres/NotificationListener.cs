using System.Globalization;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Patterns.Postgres;

/// <summary>
/// Wakes <see cref="PostgresEventStore.WaitForEventsAsync"/> and <see cref="PostgresEventStore.WaitForOutboxAsync"/>
/// callers: on this store's own commits at once, and on commits from other processes through a dedicated connection
/// that LISTENs on the schema's event and outbox channels and reconnects when it fails. The payload of each
/// notification is the last position (events) or sequence number (outbox) the transaction committed.
/// </summary>
internal sealed class NotificationListener : IAsyncDisposable
{
    private static readonly TimeSpan MaxReconnectDelay = TimeSpan.FromSeconds(30);

    // While idle, the connection is checked this often so a dead server is noticed and the listener reconnects.
    private static readonly TimeSpan IdleCheck = TimeSpan.FromSeconds(30);

    private readonly NpgsqlDataSource _dataSource;
    private readonly string _channel;
    private readonly string _outboxChannel;
    private readonly bool _listen;
    private readonly TimeProvider _timeProvider;
    private readonly TimeSpan _reconnectDelay;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();
    private TaskCompletionSource _connected = Signal.NewSource();
    private int _failures;
    private bool _stopped;
    private Task? _loop;

    public NotificationListener(NpgsqlDataSource dataSource, string channel, string outboxChannel, bool listen, TimeProvider timeProvider, TimeSpan reconnectDelay, ILogger logger)
    {
        _dataSource = dataSource;
        _channel = channel;
        _outboxChannel = outboxChannel;
        _listen = listen;
        _timeProvider = timeProvider;
        _reconnectDelay = reconnectDelay;
        _logger = logger;
    }

    /// <summary>Gets the signal for appended events; its value is the highest position known to be committed.</summary>
    public Signal Events { get; } = new();

    /// <summary>Gets the signal for outbox messages; its value is the highest sequence number known to be committed.</summary>
    public Signal Outbox { get; } = new();

    /// <summary>Gets the highest position this process knows to be committed (from its own appends or a notification).</summary>
    public long KnownHead => Events.Known;

    /// <summary>Gets a task that completes at the next append signal. Take it before checking for new events, then wait on it.</summary>
    public Task NextSignal => Events.Next;

    /// <summary>Gets a task that completes the next time the listening connection has run LISTEN (for tests).</summary>
    internal Task NextConnection => Volatile.Read(ref _connected).Task;

    /// <summary>Gets the server process id of the listening connection, 0 before the first connection (for tests).</summary>
    internal int ProcessId { get; private set; }

    /// <summary>Records that events up to <paramref name="position"/> are committed and wakes every waiter.</summary>
    public void Publish(long position) => Events.Publish(position);

    /// <summary>Records that events up to <paramref name="position"/> are committed, without waking anyone.</summary>
    public void Observe(long position) => Events.Observe(position);

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
            WakeAll();
        }
    }

    /// <summary>Stops the listening loop without waiting for it to end (synchronous disposal).</summary>
    public void Stop()
    {
        if (TryStop() is not null)
        {
            _stopping.Cancel();
            WakeAll();
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

    private void WakeAll()
    {
        Events.Wake();
        Outbox.Wake();
    }

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
            var listen = new NpgsqlCommand($"LISTEN \"{_channel}\"; LISTEN \"{_outboxChannel}\"", connection);
            await using (listen.ConfigureAwait(false))
            {
                await listen.ExecuteNonQueryAsync(token).ConfigureAwait(false);
            }

            PostgresLog.Listening(_logger, _channel);
            _failures = 0;
            ProcessId = connection.ProcessID;
            Interlocked.Exchange(ref _connected, Signal.NewSource()).TrySetResult();
            if (reconnecting)
            {
                // Notifications sent while the connection was down are lost: wake every waiter to re-read.
                WakeAll();
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
        var signal = e.Channel == _outboxChannel ? Outbox : Events;
        if (long.TryParse(e.Payload, NumberStyles.None, CultureInfo.InvariantCulture, out var value))
        {
            signal.Publish(value);
        }
        else
        {
            PostgresLog.BadNotification(_logger, e.Channel, e.Payload);
            signal.Wake();
        }
    }

    private TimeSpan ReconnectDelay(int failures)
    {
        var delay = _reconnectDelay * Math.Pow(2, Math.Min(failures, 10));
        return delay > MaxReconnectDelay ? MaxReconnectDelay : delay;
    }

    /// <summary>The highest committed value (position or sequence number) known to this process, and a task for its next change.</summary>
    internal sealed class Signal
    {
        private TaskCompletionSource _next = NewSource();
        private long _known;

        /// <summary>Gets the highest value known to be committed.</summary>
        public long Known => Volatile.Read(ref _known);

        /// <summary>Gets a task that completes at the next signal. Take it before checking for new data, then wait on it.</summary>
        public Task Next => Volatile.Read(ref _next).Task;

        public static TaskCompletionSource NewSource() => new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Records that values up to <paramref name="value"/> are committed and wakes every waiter.</summary>
        public void Publish(long value)
        {
            Observe(value);
            Wake();
        }

        /// <summary>Records that values up to <paramref name="value"/> are committed, without waking anyone.</summary>
        public void Observe(long value)
        {
            var known = Volatile.Read(ref _known);
            while (value > known)
            {
                var seen = Interlocked.CompareExchange(ref _known, value, known);
                if (seen == known)
                {
                    break;
                }

                known = seen;
            }
        }

        /// <summary>Wakes every waiter so it re-reads.</summary>
        public void Wake() => Interlocked.Exchange(ref _next, NewSource()).TrySetResult();
    }
}
