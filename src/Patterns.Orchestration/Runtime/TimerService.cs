using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Runtime;

/// <summary>
/// Durable timers held in memory: a priority queue by due time with one <see cref="ITimer"/> armed for the earliest,
/// backed by the due-time index in the store (loaded at start). Idle costs nothing: no polling.
/// </summary>
internal sealed class TimerService : IDisposable
{
    private readonly PriorityQueue<TimerRecord, long> _queue = new();
    private readonly Lock _lock = new();
    private readonly TimeProvider _time;
    private readonly Action<TimerRecord> _fire;
    private readonly ITimer _timer;
    private long _armedFor = long.MaxValue;
    private bool _disposed;

    public TimerService(TimeProvider time, Action<TimerRecord> fire)
    {
        _time = time;
        _fire = fire;
        _timer = time.CreateTimer(static s => ((TimerService)s!).OnTick(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _queue.Count;
            }
        }
    }

    public void Schedule(TimerRecord timer)
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _queue.Enqueue(timer, timer.DueTicks);
            if (timer.DueTicks < _armedFor)
            {
                Arm(timer.DueTicks);
            }
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            _timer.Dispose();
        }
    }

    /// <summary>Gets how many times the armed timer went off (for tests).</summary>
    internal long Ticks => Interlocked.Read(ref _ticks);

    private long _ticks;

    private void Arm(long dueTicks)
    {
        _armedFor = dueTicks;

        // Rounded up to whole milliseconds, the timers' resolution: a delay below one was cut to zero, so a timer due in
        // less than a millisecond went off at once, found nothing due and was armed again at zero, spinning through the
        // thread pool until it was due (with timers due every tenth of a millisecond, for the whole stretch they were due).
        var left = Math.Max(0, dueTicks - _time.GetUtcNow().UtcTicks);
        var delay = TimeSpan.FromMilliseconds((left + TimeSpan.TicksPerMillisecond - 1) / TimeSpan.TicksPerMillisecond);
        _timer.Change(delay, Timeout.InfiniteTimeSpan);
    }

    private void OnTick()
    {
        Interlocked.Increment(ref _ticks);
        List<TimerRecord> due = [];
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            var now = _time.GetUtcNow().UtcTicks;
            while (_queue.TryPeek(out var timer, out var at) && at <= now)
            {
                _queue.Dequeue();
                due.Add(timer);
            }

            _armedFor = long.MaxValue;
            if (_queue.TryPeek(out _, out var next))
            {
                Arm(next);
            }
        }

        foreach (var timer in due)
        {
            _fire(timer);
        }
    }
}
