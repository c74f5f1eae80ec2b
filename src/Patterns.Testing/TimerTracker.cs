namespace Patterns.Testing;

/// <summary>
/// Wraps a <see cref="TimeProvider"/> (typically <c>FakeTimeProvider</c> from Microsoft.Extensions.TimeProvider.Testing) and
/// counts the timers the code under test has scheduled and that have not fired or been cancelled, so a test can wait until a
/// retry, redelivery delay or timeout is armed before it moves the fake clock. The one thing FakeTimeProvider lacks.
/// </summary>
/// <remarks>Register the tracker as the host's clock (<c>UseTimeProvider(tracker)</c>) and advance the wrapped fake.</remarks>
public sealed class TimerTracker : TimeProvider
{
    private readonly TimeProvider _inner;
    private readonly Lock _gate = new();
    private readonly List<(int Count, TaskCompletionSource Signal)> _waiters = [];
    private int _pending;

    /// <summary>Initializes a new instance of the <see cref="TimerTracker"/> class.</summary>
    /// <param name="inner">The clock that keeps the time and fires the timers.</param>
    public TimerTracker(TimeProvider inner) => _inner = inner ?? throw new ArgumentNullException(nameof(inner));

    /// <summary>Gets how many timers are scheduled and have neither fired (one-shot) nor been disposed or stopped.</summary>
    public int PendingTimers => Volatile.Read(ref _pending);

    /// <inheritdoc />
    public override TimeZoneInfo LocalTimeZone => _inner.LocalTimeZone;

    /// <inheritdoc />
    public override long TimestampFrequency => _inner.TimestampFrequency;

    /// <inheritdoc />
    public override DateTimeOffset GetUtcNow() => _inner.GetUtcNow();

    /// <inheritdoc />
    public override long GetTimestamp() => _inner.GetTimestamp();

    /// <summary>Waits until at least <paramref name="count"/> timers are pending.</summary>
    /// <param name="count">How many.</param>
    /// <param name="cancellationToken">Ends the wait.</param>
    /// <returns>A task that completes when enough timers are scheduled.</returns>
    public Task WaitForPendingTimersAsync(int count = 1, CancellationToken cancellationToken = default)
    {
        var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            if (_pending >= count)
            {
                return Task.CompletedTask;
            }

            _waiters.Add((count, signal));
        }

        return signal.Task.WaitAsync(cancellationToken);
    }

    /// <inheritdoc />
    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        ArgumentNullException.ThrowIfNull(callback);
        var tracked = new TrackedTimer(this, callback, state);
        tracked.Start(_inner, dueTime, period);
        return tracked;
    }

    private void Adjust(int delta)
    {
        List<TaskCompletionSource>? ready = null;
        lock (_gate)
        {
            _pending += delta;
            for (var i = _waiters.Count - 1; i >= 0; i--)
            {
                if (_pending >= _waiters[i].Count)
                {
                    (ready ??= []).Add(_waiters[i].Signal);
                    _waiters.RemoveAt(i);
                }
            }
        }

        ready?.ForEach(s => s.TrySetResult());
    }

    private sealed class TrackedTimer(TimerTracker owner, TimerCallback callback, object? state) : ITimer
    {
        private readonly Lock _gate = new();
        private ITimer? _timer;
        private bool _pending;
        private bool _periodic;

        public void Start(TimeProvider inner, TimeSpan dueTime, TimeSpan period)
        {
            // Armed first, counted after: a test that sees the timer pending and moves the clock at once must find it
            // armed (counted first, it could be armed after the move, due one delay later). If it fires at once, its
            // Fire waits for this lock and uncounts it after.
            lock (_gate)
            {
                _timer = inner.CreateTimer(static s => ((TrackedTimer)s!).Fire(), this, dueTime, period);
                Set(dueTime, period);
            }
        }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (_gate)
            {
                // Re-armed before counted, as in Start.
                var changed = _timer!.Change(dueTime, period);
                Set(dueTime, period);
                return changed;
            }
        }

        public void Dispose()
        {
            lock (_gate)
            {
                Set(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                _timer?.Dispose();
            }
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return default;
        }

        private void Fire()
        {
            lock (_gate)
            {
                if (!_periodic)
                {
                    Set(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                }
            }

            callback(state);
        }

        private void Set(TimeSpan dueTime, TimeSpan period)
        {
            var pending = dueTime != Timeout.InfiniteTimeSpan;
            _periodic = pending && period != Timeout.InfiniteTimeSpan && period != TimeSpan.Zero;
            if (pending != _pending)
            {
                _pending = pending;
                owner.Adjust(pending ? 1 : -1);
            }
        }
    }
}
