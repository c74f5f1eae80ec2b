using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration.Runtime;

namespace Patterns.Benchmarks.Orchestration;

/// <summary>Peak memory of 100,000 workflows suspended on a signal, all cached live (in-memory store and transport).</summary>
public static class SuspendedMemoryBenchmark
{
    public static async Task RunAsync(int workflows)
    {
        GC.Collect();
        var baseline = GC.GetTotalMemory(forceFullCollection: true);
        var process = Process.GetCurrentProcess();
        process.Refresh();
        var baselineWorkingSet = process.WorkingSet64;
        await using var engine = await PatternsEngine.StartAsync(Store.InMemory);
        var clock = Stopwatch.StartNew();
        var starts = new List<Task>(workflows);
        for (var i = 0; i < workflows; i++)
        {
            starts.Add(engine.Client.StartAsync(nameof(WaitForSignal), "s" + i, i));
        }

        await Task.WhenAll(starts);
        var elapsed = clock.Elapsed;
        var cached = engine.Services.GetRequiredService<WorkflowRuntime>().CachedInstances;
        var managed = GC.GetTotalMemory(forceFullCollection: true) - baseline;
        process.Refresh();
        var peak = process.PeakWorkingSet64;
        var report = $"""
            # Suspended workflows: memory

            {workflows:N0} `WaitForSignal` workflows started at once (in-memory store and transport), each suspended on a signal and
            cached live ({cached:N0} cached). Started in {elapsed.TotalSeconds:N1} s.

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
