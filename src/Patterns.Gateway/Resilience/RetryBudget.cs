namespace Patterns.Gateway.Resilience;

/// <summary>
/// Retries in flight may not exceed a share of the active requests (with a floor), so a failing backend cannot
/// multiply the load: at 20% a cluster serving 100 requests allows 20 retries at once, not 100.
/// </summary>
internal sealed class RetryBudget
{
    private int _active;
    private int _retries;

    public int Active => Volatile.Read(ref _active);

    public void Enter() => Interlocked.Increment(ref _active);

    public void Exit() => Interlocked.Decrement(ref _active);

    public bool TryAcquire(double percent, int minimum)
    {
        var allowed = Math.Max(minimum, (int)(Volatile.Read(ref _active) * percent / 100));
        while (true)
        {
            var current = Volatile.Read(ref _retries);
            if (current >= allowed)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _retries, current + 1, current) == current)
            {
                return true;
            }
        }
    }

    public void Release() => Interlocked.Decrement(ref _retries);
}
