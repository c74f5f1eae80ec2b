using System.Diagnostics;
using System.Globalization;
using System.Runtime;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration.Runtime;

namespace Patterns.Benchmarks.Orchestration;

/// <summary>Peak memory of 100,000 workflows suspended on a signal (in-memory store and transport), with the default cache of idle instances.</summary>
public static class SuspendedMemoryBenchmark
{
    /// <param name="workflows">How many to start.</param>
    /// <param name="maxCachedIdle">MaxCachedIdleInstances, the option's default when null.</param>
    /// <param name="startsInFlight">How many starts are awaited at once (0: all at once, the default).</param>
    /// <param name="maxTasks">MaxConcurrentWorkflowTasks, the option's default when null.</param>
    public static async Task RunAsync(int workflows, int? maxCachedIdle = null, int startsInFlight = 0, int? maxTasks = null)
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

        if (maxTasks is { } tasks)
        {
            runtime.Options.MaxConcurrentWorkflowTasks = tasks; // read at each start of a slot's processing
        }

        // Samples the managed heap (live objects and garbage not yet collected) while the starts are in flight.
        using var sampling = new CancellationTokenSource();
        var trace = Environment.GetEnvironmentVariable("PATTERNS_MEMORY_TRACE") == "1" ? runtime : null;
        var committed = 0;
        if (trace is not null)
        {
            trace.Committed += (_, _) => Interlocked.Increment(ref committed);
        }

        var sampler = SampleHeapAsync(trace, () => Volatile.Read(ref committed), sampling.Token);
        var clock = Stopwatch.StartNew();
        if (startsInFlight <= 0)
        {
            var starts = new List<Task>(workflows);
            for (var i = 0; i < workflows; i++)
            {
                starts.Add(engine.Client.StartAsync(nameof(WaitForSignal), "s" + i, i));
            }

            await Task.WhenAll(starts);
        }
        else
        {
            // As an application that starts many would: a bounded number of starts in flight at once.
            using var gate = new SemaphoreSlim(startsInFlight);
            var starts = new List<Task>(workflows);
            for (var i = 0; i < workflows; i++)
            {
                await gate.WaitAsync();
                starts.Add(StartOneAsync(engine, gate, "s" + i, i));
            }

            await Task.WhenAll(starts);
        }

        var elapsed = clock.Elapsed;
        await sampling.CancelAsync();
        var peakHeap = await sampler;
        var cached = runtime.CachedInstances;
        var evicted = runtime.Evictions;
        process.Refresh();
        var peak = process.PeakWorkingSet64;
        var managed = GC.GetTotalMemory(forceFullCollection: true) - baseline;

        // Once every instance is suspended: a full, compacting GC that gives free memory back to the OS, then the working set.
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        process.Refresh();
        var settled = process.WorkingSet64;
        var gc = $"{(GCSettings.IsServerGC ? "server" : "workstation")} GC, {(GCSettings.LatencyMode == GCLatencyMode.Batch ? "non-concurrent" : "concurrent")}";
        static string Mb(long bytes) => (bytes / 1048576.0).ToString("N1", CultureInfo.InvariantCulture);
        var report = $"""
            # Suspended workflows: memory

            {workflows:N0} `WaitForSignal` workflows started {(startsInFlight > 0 ? $"with at most {startsInFlight:N0} starts in flight" : "at once")} (in-memory store and transport), each suspended on a signal:
            {cached:N0} cached live, {evicted:N0} evicted from the cache (`MaxCachedIdleInstances` {runtime.Options.MaxCachedIdleInstances:N0}; an evicted
            instance replays its history on its next signal; `MaxConcurrentWorkflowTasks` {runtime.Options.MaxConcurrentWorkflowTasks:N0}). Started in {elapsed.TotalSeconds:N1} s. {gc}.

            | Workflows | Managed heap after full GC (MB) | Per workflow (KB) | Peak working set, during the starts (MB) | Peak managed heap sampled during the starts (MB) | Working set once all suspended, after a full GC (MB) | Working set before start (MB) |
            |---:|---:|---:|---:|---:|---:|---:|
            | {workflows:N0} | {Mb(managed)} | {(managed / 1024.0 / workflows).ToString("N2", CultureInfo.InvariantCulture)} | {Mb(peak)} | {Mb(peakHeap)} | {Mb(settled)} | {Mb(baselineWorkingSet)} |

            The managed heap includes the in-memory store holding every history. The peak is the process's peak working set, reached
            while the starts are in flight (their tasks, commit batches and the garbage of the burst), not in the suspended state.
            Machine: {Environment.ProcessorCount} cores, .NET {Environment.Version}; run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC.
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

    private static async Task<long> SampleHeapAsync(WorkflowRuntime? trace, Func<int> committed, CancellationToken cancellationToken)
    {
        var peak = 0L;
        var clock = Stopwatch.StartNew();
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
        try
        {
            do
            {
                var heap = GC.GetTotalMemory(forceFullCollection: false);
                peak = Math.Max(peak, heap);
                if (trace is not null && clock.ElapsedMilliseconds % 250 < 50)
                {
                    // PATTERNS_MEMORY_TRACE=1: what the burst holds over time (the heap with its garbage, the generations'
                    // sizes after the last collection, the instances in the map and cached live, the workflow tasks committed).
                    var info = GC.GetGCMemoryInfo();
                    var gens = string.Join(" ", info.GenerationInfo.ToArray().Select(static g => (g.SizeAfterBytes / 1048576.0).ToString("N0", CultureInfo.InvariantCulture)));
                    Console.WriteLine(FormattableString.Invariant(
                        $"{clock.ElapsedMilliseconds,6} ms heap {heap / 1048576.0,6:N1} MB, committed {info.TotalCommittedBytes / 1048576.0,6:N1} MB, gens after last GC [{gens}] MB (gen{info.Generation}, #{info.Index}), gc {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)}, slots {trace.Slots}, tasks committed {committed()}, pending commits {trace.Group.Pending}"));
                }
            }
            while (await timer.WaitForNextTickAsync(cancellationToken));
        }
        catch (OperationCanceledException)
        {
            // The starts are done.
        }

        return peak;
    }

    private static async Task StartOneAsync(PatternsEngine engine, SemaphoreSlim gate, string id, int input)
    {
        try
        {
            await engine.Client.StartAsync(nameof(WaitForSignal), id, input);
        }
        finally
        {
            gate.Release();
        }
    }
}
