namespace Patterns.Gateway.Tests;

internal static class Waits
{
    /// <summary>Waits for a state that another thread reaches (YARP applies health changes on the thread pool), failing after five seconds.</summary>
    public static void Until(Func<bool> condition, string what)
    {
        if (!SpinWait.SpinUntil(condition, TimeSpan.FromSeconds(5)))
        {
            throw new Xunit.Sdk.XunitException($"Timed out waiting until {what}.");
        }
    }
}

internal static class Clock
{
    /// <summary>
    /// Advances virtual time by <paramref name="step"/> until <paramref name="task"/> completes (at most 20 steps): a timer
    /// armed on another thread a moment after the test's signal still fires.
    /// </summary>
    public static async Task AdvanceUntilAsync(Microsoft.Extensions.Time.Testing.FakeTimeProvider time, TimeSpan step, Task task)
    {
        for (var i = 0; i < 20 && !task.IsCompleted; i++)
        {
            time.Advance(step);
            await Task.WhenAny(task, Task.Delay(TimeSpan.FromMilliseconds(50), TestContext.Current.CancellationToken));
        }
    }
}
