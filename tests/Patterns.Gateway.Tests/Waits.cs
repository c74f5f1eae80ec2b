namespace Patterns.Gateway.Tests;

internal static class Waits
{
    /// <summary>
    /// How long a test waits for something that happens unless the code is broken: only a guard against hangs, generous
    /// because CI runs every test assembly at once on two busy cores (process start, JIT and thread-pool growth take seconds).
    /// </summary>
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    /// <summary>Waits for a state that another thread reaches (YARP applies health changes on the thread pool), failing after <see cref="Bound"/>.</summary>
    public static void Until(Func<bool> condition, string what)
    {
        if (!SpinWait.SpinUntil(condition, Bound))
        {
            throw new Xunit.Sdk.XunitException($"Timed out waiting until {what}.");
        }
    }
}

internal static class Clock
{
    /// <summary>
    /// Advances virtual time by <paramref name="step"/> until <paramref name="task"/> completes (at most 20 steps): a timer
    /// armed on another thread a moment after the test's signal still fires. The real-time pause between steps doubles from
    /// 50 ms up to 2 s (about 30 s over the 20 steps), so a thread the busy machine delays for seconds still arms its timer
    /// before the steps run out, while virtual time never moves more than 20 steps.
    /// </summary>
    public static async Task AdvanceUntilAsync(Microsoft.Extensions.Time.Testing.FakeTimeProvider time, TimeSpan step, Task task)
    {
        var pause = TimeSpan.FromMilliseconds(50);
        for (var i = 0; i < 20 && !task.IsCompleted; i++)
        {
            time.Advance(step);
            await Task.WhenAny(task, Task.Delay(pause, TestContext.Current.CancellationToken));
            pause = TimeSpan.FromTicks(Math.Min(pause.Ticks * 2, TimeSpan.FromSeconds(2).Ticks));
        }
    }
}
