using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Patterns.Benchmarks;

/// <summary>
/// Counts handled messages down to zero and completes a task when the last one of a batch is handled.
/// One instance per benchmark; <see cref="Reset"/> arms it for the next batch.
/// </summary>
public sealed class BatchSignal
{
    private TaskCompletionSource _done = NewSource();
    private int _remaining;

    /// <summary>Arms the signal for <paramref name="count"/> messages and returns the task that completes when all are handled.</summary>
    public Task Reset(int count)
    {
        var done = NewSource();
        _done = done;
        Volatile.Write(ref _remaining, count);
        return done.Task;
    }

    /// <summary>Records one handled message.</summary>
    public void Signal()
    {
        if (Interlocked.Decrement(ref _remaining) == 0)
        {
            _done.TrySetResult();
        }
    }

    /// <summary>Records <paramref name="count"/> handled items at once (a batch).</summary>
    public void Signal(int count)
    {
        if (Interlocked.Add(ref _remaining, -count) == 0)
        {
            _done.TrySetResult();
        }
    }

    private static TaskCompletionSource NewSource() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>Starts and stops the hosted services of a container built without a generic host.</summary>
public static class Hosting
{
    public static async Task StartAsync(IServiceProvider services)
    {
        foreach (var hosted in services.GetServices<IHostedService>())
        {
            await hosted.StartAsync(CancellationToken.None);
        }
    }

    /// <summary>Stops the hosted services, last started first, leaving the container usable (they may be started again).</summary>
    public static async Task StopAsync(IServiceProvider services)
    {
        foreach (var hosted in services.GetServices<IHostedService>().Reverse())
        {
            await hosted.StopAsync(CancellationToken.None);
        }
    }

    public static async Task StopAndDisposeAsync(ServiceProvider? services)
    {
        if (services is null)
        {
            return;
        }

        await StopAsync(services);
        await services.DisposeAsync();
    }
}
