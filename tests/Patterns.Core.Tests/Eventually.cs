namespace Patterns.Core.Tests;

/// <summary>Waits for a condition that background work makes true, bounded by <see cref="TestHost.Wait"/> (no sleeps: it yields).</summary>
internal static class Eventually
{
    public static async Task HoldsAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + TestHost.Wait;
        while (!condition())
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "the condition should hold in time");
            await Task.Yield();
        }
    }

    /// <summary>Raises <paramref name="target"/> to <paramref name="value"/> if it is larger, atomically.</summary>
    public static void RecordMax(ref int target, int value)
    {
        int current;
        while (value > (current = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, current) != current)
        {
        }
    }
}
