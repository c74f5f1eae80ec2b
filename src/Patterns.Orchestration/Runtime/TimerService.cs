using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Runtime;

/// <summary>
/// Durable timers held in memory: a priority queue by due time with one <see cref="ITimer"/> armed for the earliest,
/// backed by the due-time index in the store (loaded at start). Idle costs nothing: no polling.
/// </summary>
/// <remarks>
/// At most <c>maxInFlight</c> fired timers are handled at once (from their firing to the commit of their workflow task);
/// the others due stay in the queue, one small record each, and go as those complete, earliest first. Without the bound,
/// every timer due at the same moment (a burst, a backlog after a pause, or the overdue timers a start loads from the
/// index) became a concurrent workflow task at once, each holding its mailbox item, task state and unit of work until its
/// group committed. A workflow task that runs long local activities keeps its place until it commits.
/// </remarks>
internal sealed class TimerService : IDisposable
{
    /// <summary>The default bound on fired timers in flight: about two full commit groups.</summary>
    public const int DefaultMaxInFlight = 1024;

    private readonly PriorityQueue<TimerRecord, long> _queue = new();
    private readonly Lock _lock = new();
    private readonly TimeProvider _time;
    private readonly Func<TimerRecord, Task?> _fire;
    private readonly int _maxInFlight;
    private readonly Action<Task> _landed;
    private readonly ITimer _timer;
    private long _armedFor = long.MaxValue;
    private int _inFlight;
    private bool _disposed;

    public TimerService(TimeProvider time, Action<TimerRecord> fire)
        : this(time, t =>
        {
            fire(t);
            return null;
        }, int.MaxValue)
    {
    }

    /// <param name="time">The clock.</param>
    /// <param name="fire">Hands a due timer on; returns what completes once it is handled (null: at once).</param>
    /// <param name="maxInFlight">How many fired timers may be handled at once.</param>
    public TimerService(TimeProvider time, Func<TimerRecord, Task?> fire, int maxInFlight)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxInFlight, 1);
        _time = time;
        _fire = fire;
        _maxInFlight = maxInFlight;
        _landed = _ => Landed();
        _timer = time.CreateTimer(static s => ((TimerService)s!).OnTick(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Gets how many fired timers are being handled now.</summary>
    public int InFlight
    {
        get
        {
            lock (_lock)
            {
                return _inFlight;
            }
        }
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
            if (timer.DueTicks < _armedFor && _inFlight < _maxInFlight)
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
        Pump();
    }

    /// <summary>
    /// Fires what is due, up to the bound; arms the timer for the next due time unless the bound is reached (a landing
    /// pumps again then). Timers handled at once (handed to another process's instance, or already done) free their places
    /// here and the loop goes on: freeing them by pumping from inside their own call nested one call deeper per timer.
    /// </summary>
    private void Pump()
    {
        while (true)
        {
            List<TimerRecord> due = [];
            lock (_lock)
            {
                if (_disposed)
                {
                    return;
                }

                var now = _time.GetUtcNow().UtcTicks;
                while (_inFlight < _maxInFlight && _queue.TryPeek(out var timer, out var at) && at <= now)
                {
                    _queue.Dequeue();
                    due.Add(timer);
                    _inFlight++;
                }

                _armedFor = long.MaxValue;
                if (_inFlight < _maxInFlight && _queue.TryPeek(out _, out var next))
                {
                    Arm(next);
                }
            }

            var freed = false;
            for (var i = 0; i < due.Count; i++)
            {
                Task? handled;
                try
                {
                    handled = _fire(due[i]);
                }
                catch
                {
                    // This one and those not handed on yet give their places back; those go again at the next tick.
                    lock (_lock)
                    {
                        _inFlight -= due.Count - i;
                        for (var j = i + 1; j < due.Count; j++)
                        {
                            _queue.Enqueue(due[j], due[j].DueTicks);
                        }

                        if (!_disposed && _queue.TryPeek(out _, out var next) && next < _armedFor)
                        {
                            Arm(next);
                        }
                    }

                    throw;
                }

                if (handled is null || handled.IsCompleted)
                {
                    lock (_lock)
                    {
                        _inFlight--;
                    }

                    freed = true;
                }
                else
                {
                    handled.ContinueWith(_landed, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                }
            }

            if (!freed)
            {
                return;
            }
        }
    }

    private void Landed()
    {
        bool pump;
        lock (_lock)
        {
            pump = _inFlight-- == _maxInFlight && !_disposed;
        }

        if (pump)
        {
            Pump();
        }
    }
}
