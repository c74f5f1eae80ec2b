namespace Patterns.Gateway.Resilience;

/// <summary>
/// Retries in flight may not exceed a share of the active requests (with a floor), so a failing backend cannot
/// multiply the load: at 20% a cluster serving 100 requests allows 20 retries at once, not 100.
/// </summary>
/// <remarks>
/// Every request enters and exits, on whichever core runs it, so the active count is kept in one slot per core (each on a
/// cache line of its own) rather than in one shared counter that every core would pull over for each request. A request
/// may exit on another core than it entered on: a slot can go negative, the sum stays right. Only planning a retry reads
/// the sum.
/// </remarks>
internal sealed class RetryBudget
{
    // 16 longs = 128 bytes between slots: a cache line and its adjacent-line prefetch partner.
    private const int Stride = 16;
    private readonly long[] _active;
    private readonly int _mask;
    private int _retries;

    public RetryBudget()
    {
        var slots = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Clamp(Environment.ProcessorCount, 1, 64));
        _mask = slots - 1;
        _active = new long[(slots + 1) * Stride];
    }

    public int Active
    {
        get
        {
            long sum = 0;
            for (var i = 1; i <= _mask + 1; i++)
            {
                sum += Volatile.Read(ref _active[i * Stride]);
            }

            return (int)Math.Max(0, sum);
        }
    }

    // Slot 0's line is left empty, so the first slot does not share a line with the array's length.
    private ref long Slot() => ref _active[((Thread.GetCurrentProcessorId() & _mask) + 1) * Stride];

    public void Enter() => Interlocked.Increment(ref Slot());

    public void Exit() => Interlocked.Decrement(ref Slot());

    public bool TryAcquire(double percent, int minimum)
    {
        var allowed = Math.Max(minimum, (int)(Active * percent / 100));
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
