namespace Patterns.Gateway.Push;

/// <summary>
/// One Server-Sent Events connection's timer: every interval, an idle connection is offered a keep-alive, and a
/// connection whose write has been pending for a whole interval is reported stalled.
/// </summary>
internal sealed class KeepAliveMonitor : IDisposable
{
    private readonly PushConnection _connection;
    private readonly Action<object?> _stalled;
    private readonly object? _state;
    private readonly ITimer _timer;
    private long _writes;
    private int _writing;
    private long _writesAtLastTick;
    private int _fired;

    public KeepAliveMonitor(PushConnection connection, TimeProvider time, TimeSpan interval, Action<object?> stalled, object? state)
    {
        _connection = connection;
        _stalled = stalled;
        _state = state;
        _timer = time.CreateTimer(static s => ((KeepAliveMonitor)s!).Tick(), this, interval, interval);
    }

    /// <summary>Called by the writer before each flush.</summary>
    public void WriteStarted()
    {
        Interlocked.Increment(ref _writes);
        Volatile.Write(ref _writing, 1);
    }

    /// <summary>Called by the writer when a flush completed.</summary>
    public void WriteEnded() => Volatile.Write(ref _writing, 0);

    public void Dispose() => _timer.Dispose();

    private void Tick()
    {
        var writes = Interlocked.Read(ref _writes);
        if (writes != _writesAtLastTick)
        {
            // Something was written during the interval: neither idle nor stalled.
            _writesAtLastTick = writes;
            return;
        }

        if (Volatile.Read(ref _writing) == 1)
        {
            // The same write was already pending at the previous tick.
            if (Interlocked.Exchange(ref _fired, 1) == 0)
            {
                _timer.Dispose();
                _stalled(_state);
            }

            return;
        }

        if (_connection.TryOfferKeepAlive())
        {
            // The keep-alive's own write is not activity: an idle connection gets one every interval.
            _writesAtLastTick = writes + 1;
        }
    }
}
