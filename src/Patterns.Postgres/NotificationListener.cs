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
    private readonly string _leaseChannel;
    private readonly bool _listen;
    private readonly TimeProvider _timeProvider;
    private readonly TimeSpan _reconnectDelay;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();
    private TaskCompletionSource _connected = Signal.NewSource();
    private TaskCompletionSource _notified = Signal.NewSource();
    private int _failures;
    private long _connections;
    private long _listening;
    private bool _stopped;
    private Task? _loop;

    public NotificationListener(NpgsqlDataSource dataSource, string channel, string outboxChannel, string leaseChannel, bool listen, TimeProvider timeProvider, TimeSpan reconnectDelay, ILogger logger)
    {
        _leaseChannel = leaseChannel;
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

    /// <summary>Gets the signal for released leases (any lease: waiters try theirs again).</summary>
    public Signal Leases { get; } = new();

    /// <summary>Gets the highest position this process knows to be committed (from its own appends or a notification).</summary>
    public long KnownHead => Events.Known;

    /// <summary>Gets a task that completes at the next append signal. Take it before checking for new events, then wait on it.</summary>
    public Task NextSignal => Events.Next;

    /// <summary>Gets a task that completes the next time the listening connection has run LISTEN (for tests).</summary>
    internal Task NextConnection => Volatile.Read(ref _connected).Task;

    /// <summary>
    /// Gets the number of the listening connection while it listens (each connection gets a new one), 0 while there is
    /// none. A head read while it listens, together with the notifications that arrive on it, accounts for every commit:
    /// a commit before LISTEN is in the head, and a commit after it is notified.
    /// </summary>
    public long Listening => Volatile.Read(ref _listening);

    /// <summary>Gets a task that completes once the next notification has been handled (for tests).</summary>
    internal Task NextNotification => Volatile.Read(ref _notified).Task;

    /// <summary>Gets the server process id of the listening connection, 0 before the first connection (for tests).</summary>
    internal int ProcessId { get; private set; }

    /// <summary>Records that events up to <paramref name="position"/> are committed and wakes every waiter.</summary>
    public void Publish(long position) => Events.Publish(position);

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
        Leases.Wake();
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
                Volatile.Write(ref _listening, 0);
                return;
            }
            catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or IOException or TimeoutException)
            {
                // Notifications may be lost from here on: waiters read the head again once a new connection listens.
                Volatile.Write(ref _listening, 0);
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
            var listen = new NpgsqlCommand($"LISTEN \"{_channel}\"; LISTEN \"{_outboxChannel}\"; LISTEN \"{_leaseChannel}\"", connection);
            await using (listen.ConfigureAwait(false))
            {
                await listen.ExecuteNonQueryAsync(token).ConfigureAwait(false);
            }

            PostgresLog.Listening(_logger, _channel);
            _failures = 0;
            ProcessId = connection.ProcessID;
            Volatile.Write(ref _listening, Interlocked.Increment(ref _connections));
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
        if (e.Channel == _leaseChannel)
        {
            Leases.Wake();
            Interlocked.Exchange(ref _notified, Signal.NewSource()).TrySetResult();
            return;
        }

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

        Interlocked.Exchange(ref _notified, Signal.NewSource()).TrySetResult();
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
        private long _headRead;

        /// <summary>Gets the highest value known to be committed.</summary>
        public long Known => Volatile.Read(ref _known);

        /// <summary>Gets a task that completes at the next signal. Take it before checking for new data, then wait on it.</summary>
        public Task Next => Volatile.Read(ref _next).Task;

        public static TaskCompletionSource NewSource() => new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>
        /// Records that values up to <paramref name="value"/> are committed, and wakes every waiter when that moved
        /// <see cref="Known"/>. A value already known wakes nobody: whoever moved it past the value woke them then
        /// (this process's own commits are announced at once and again by their notification, which is then a no-op).
        /// </summary>
        public void Publish(long value)
        {
            if (Observe(value))
            {
                Wake();
            }
        }

        /// <summary>Records that values up to <paramref name="value"/> are committed, without waking anyone; true when <see cref="Known"/> moved.</summary>
        public bool Observe(long value)
        {
            var known = Volatile.Read(ref _known);
            while (value > known)
            {
                var seen = Interlocked.CompareExchange(ref _known, value, known);
                if (seen == known)
                {
                    return true;
                }

                known = seen;
            }

            return false;
        }

        /// <summary>
        /// Gets a value indicating whether <see cref="Known"/> accounts for every commit, because the head was read
        /// while listening connection <paramref name="listening"/> listened (see <see cref="NotificationListener.Listening"/>).
        /// </summary>
        public bool IsComplete(long listening) => listening != 0 && Volatile.Read(ref _headRead) == listening;

        /// <summary>Records that the head was read while listening connection <paramref name="listening"/> listened (0: none listened).</summary>
        public void HeadRead(long listening)
        {
            if (listening != 0)
            {
                Volatile.Write(ref _headRead, listening);
            }
        }

        /// <summary>Wakes every waiter so it re-reads.</summary>
        public void Wake() => Interlocked.Exchange(ref _next, NewSource()).TrySetResult();
    }
}
