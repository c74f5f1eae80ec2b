using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration.Runtime;

namespace Patterns.Benchmarks.Orchestration;

/// <summary>Peak memory of 100,000 workflows suspended on a signal (in-memory store and transport), with the default cache of idle instances.</summary>
public static class SuspendedMemoryBenchmark
{
    public static async Task RunAsync(int workflows, int? maxCachedIdle = null)
    {
        GC.Collect();
        var baseline = GC.GetTotalMemory(forceFullCollection: true);
        var process = Process.GetCurrentProcess();
        process.Refresh();
        var baselineWorkingSet = process.WorkingSet64;
        await using var engine = await PatternsEngine.StartAsync(Store.InMemory);
        var runtime = engine.Services.GetRequiredService<WorkflowRuntime>();
        if (maxCachedIdle is { } limit)
        {
            // For comparisons (int.MaxValue caches every instance live, as before idle instances were evicted); read at each eviction.
            runtime.Options.MaxCachedIdleInstances = limit;
        }

        var clock = Stopwatch.StartNew();
        var starts = new List<Task>(workflows);
        for (var i = 0; i < workflows; i++)
        {
            starts.Add(engine.Client.StartAsync(nameof(WaitForSignal), "s" + i, i));
        }

        await Task.WhenAll(starts);
        var elapsed = clock.Elapsed;
        var cached = runtime.CachedInstances;
        var evicted = runtime.Evictions;
        var managed = GC.GetTotalMemory(forceFullCollection: true) - baseline;
        process.Refresh();
        var peak = process.PeakWorkingSet64;
        var report = $"""
            # Suspended workflows: memory

            {workflows:N0} `WaitForSignal` workflows started at once (in-memory store and transport), each suspended on a signal:
            {cached:N0} cached live, {evicted:N0} evicted from the cache (`MaxCachedIdleInstances` {runtime.Options.MaxCachedIdleInstances:N0}; an evicted
            instance replays its history on its next signal). Started in {elapsed.TotalSeconds:N1} s.

            | Workflows | Managed heap after full GC (MB) | Per workflow (KB) | Peak working set (MB) | Working set before start (MB) |
            |---:|---:|---:|---:|---:|
            | {workflows:N0} | {(managed / 1048576.0).ToString("N1", CultureInfo.InvariantCulture)} | {(managed / 1024.0 / workflows).ToString("N2", CultureInfo.InvariantCulture)} | {(peak / 1048576.0).ToString("N1", CultureInfo.InvariantCulture)} | {(baselineWorkingSet / 1048576.0).ToString("N1", CultureInfo.InvariantCulture)} |

            The managed heap includes the in-memory store holding every history. Machine: {Environment.ProcessorCount} cores, .NET {Environment.Version}; run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC.
            """;
        Console.WriteLine(report);
        await Reports.WriteAsync("SuspendedMemory", report);
        if (Environment.GetEnvironmentVariable("PATTERNS_HOLD_SECONDS") is { } hold)
        {
            // Keeps the instances alive for a heap snapshot (dotnet-gcdump collect -p <pid>).
            Console.WriteLine($"Holding for {hold} s: process {Environment.ProcessId}");
            await Task.Delay(TimeSpan.FromSeconds(int.Parse(hold, CultureInfo.InvariantCulture)));
        }
    }
}
