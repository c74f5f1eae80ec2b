using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration.Runtime;

namespace Patterns.Benchmarks.Orchestration;

/// <summary>
/// 100,000 durable timers (one workflow each, in memory) due spread over 10 s: lateness (fire-and-commit time minus due
/// time) percentiles, and the process CPU used while idle afterwards. One long run, written as a markdown report.
/// </summary>
/// <remarks>
/// The starts leave every workflow's state (and, in memory, its history) young, and the process allocates nothing while
/// it waits for the first due time, so no collection runs in between: without a collection after the starts, the first
/// collections while the timers go off copy the whole start burst into the old generation, and their pauses (the
/// collector's own work: stopping the threads took under 2% of them) are the lateness tail. A process that ran for the
/// 30 s between start and due time doing anything else would have collected them on the way; so the run collects once
/// after the starts, before the first due time (<c>PATTERNS_TIMER_COMPACT=0</c> leaves that out, for comparison).
/// </remarks>
public static class TimerBenchmarks
{
    // Starting 100,000 workflows takes about 20 s on a quiet 2-core machine: every timer is armed before the first is due.
    private const int DefaultStartDelaySeconds = 30;

    public static async Task RunAsync(int timers, Store store = Store.InMemory, int startDelaySeconds = DefaultStartDelaySeconds)
    {
        using var gc = new GcPauseListener();
        await using var engine = await PatternsEngine.StartAsync(store);
        var runtime = engine.Services.GetRequiredService<WorkflowRuntime>();
        var lateness = new double[timers];
        var fired = 0;
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var due = new Dictionary<string, long>(timers);
        runtime.Committed += (id, events) =>
        {
            if (events.Any(static e => e.Kind == Patterns.Orchestration.History.HistoryEventKind.TimerFired))
            {
                var late = (DateTimeOffset.UtcNow.UtcTicks - Volatile.Read(ref CollectionsMarshalHelper.Get(due, id))) / (double)TimeSpan.TicksPerMillisecond;
                var n = Interlocked.Increment(ref fired);
                lateness[n - 1] = late;
                if (n == timers)
                {
                    all.TrySetResult();
                }
            }
        };
        var start = DateTimeOffset.UtcNow.AddSeconds(startDelaySeconds);
        for (var i = 0; i < timers; i++)
        {
            due["t" + i] = start.AddTicks(TimeSpan.FromSeconds(10).Ticks * i / timers).UtcTicks;
        }

        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        var (liveBeforeStarts, allocatedBeforeStarts) = (GC.GetTotalMemory(forceFullCollection: false), GC.GetTotalAllocatedBytes());
        var starts = new List<Task>(timers);
        for (var i = 0; i < timers; i++)
        {
            starts.Add(engine.Client.StartAsync(nameof(SleepOnce), "t" + i, due["t" + i]));
        }

        await Task.WhenAll(starts);
        starts = null!;
        var armedBy = DateTimeOffset.UtcNow;
        var startAllocated = GC.GetTotalAllocatedBytes() - allocatedBeforeStarts;
        var compacted = Environment.GetEnvironmentVariable("PATTERNS_TIMER_COMPACT") != "0";
        if (compacted)
        {
            // The start burst's survivors go to the old generation now, not in the first collections of the measured window.
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        }

        // What one armed timer costs: its start's allocation, and (after the full collection) what it keeps alive while it waits.
        var armed = FormattableString.Invariant($"{startAllocated / (double)timers / 1024:N2} KB allocated per start");
        if (compacted)
        {
            armed += FormattableString.Invariant($", {(GC.GetTotalMemory(forceFullCollection: false) - liveBeforeStarts) / (double)timers / 1024:N2} KB live per armed timer (its waiting workflow and its store entries)");
        }

        Console.WriteLine(FormattableString.Invariant($"{armed}; the first timer is due at {start:HH:mm:ss.fff} UTC"));
        using var allocations = Environment.GetEnvironmentVariable("PATTERNS_ALLOC_TYPES") == "1" ? new AllocListener() : null;

        var overran = DateTimeOffset.UtcNow > start
            ? FormattableString.Invariant($"**Not valid: the starts (and the collection after them) ended {(DateTimeOffset.UtcNow - start).TotalSeconds:N1} s after the first due time; run again with a longer start delay.** ")
            : string.Empty;

        var waitForFirst = start - DateTimeOffset.UtcNow;
        if (waitForFirst > TimeSpan.Zero)
        {
            await Task.Delay(waitForFirst);
        }

        var liveBefore = compacted ? GC.GetTotalMemory(forceFullCollection: false) : 0;
        var (allocatedBefore, cpuAtFirst, threadsAtFirst) = (GC.GetTotalAllocatedBytes(), Environment.CpuUsage.TotalTime, System.Threading.ThreadPool.ThreadCount);
        await all.Task.WaitAsync(TimeSpan.FromMinutes(5));
        var firedAt = DateTime.UtcNow;
        allocations?.Print(30);
        var info = GC.GetGCMemoryInfo(GCKind.Ephemeral);
        var (survived0, survived1) = gc.Survived(start.UtcDateTime, firedAt);
        var perTimer = FormattableString.Invariant(
            $"{(GC.GetTotalAllocatedBytes() - allocatedBefore) / (double)timers / 1024:N2} KB allocated and {(Environment.CpuUsage.TotalTime - cpuAtFirst).TotalMilliseconds * 1000 / timers:N0} µs CPU per fired timer; thread pool {threadsAtFirst} threads at the first due time, {System.Threading.ThreadPool.ThreadCount} at the end; {gc.SuspendingSince(start.UtcDateTime):N0} ms of the pauses were spent stopping threads; per fired timer {survived0 / (double)timers / 1024:N2} KB survived generation 0 and {survived1 / (double)timers / 1024:N2} KB generation 1");
        if (compacted)
        {
            // What the fired timers left alive (a full collection drops what was only carried by dead old objects).
            var liveAfter = GC.GetTotalMemory(forceFullCollection: true);
            perTimer += FormattableString.Invariant($"; the live heap grew {(liveAfter - liveBefore) / 1e6:N1} MB while they fired ({(liveAfter - liveBefore) / (double)timers / 1024:N2} KB per timer)");
        }

        Console.WriteLine(perTimer);
        var firing = gc.Summary(start.UtcDateTime, firedAt);
        var collections = gc.Pauses.Count(p => p.At >= start.UtcDateTime && p.At <= firedAt);
        if (collections > 0)
        {
            // How far apart the collections were: the generation 0 budget, which the runtime sizes from the CPU's last-level
            // cache unless GCgen0size says otherwise. A young collection's pause grows with what survived since the one
            // before, so a larger budget (or less allocated per timer) means fewer pauses, each longer.
            firing += FormattableString.Invariant($", one every {(GC.GetTotalAllocatedBytes() - allocatedBefore) / 1e6 / collections:N0} MB allocated ({timers / (double)collections:N0} fired timers)");
        }

        var lastGc = FormattableString.Invariant($"the last young-generation collection (gen{info.Generation}) promoted {info.PromotedBytes / 1e6:N1} MB of a {info.HeapSizeBytes / 1e6:N0} MB heap");
        foreach (var (at, ms, gen) in gc.Pauses.Where(p => p.At >= start.UtcDateTime && p.At <= firedAt).OrderByDescending(p => p.Milliseconds).Take(8))
        {
            Console.WriteLine(FormattableString.Invariant($"GC pause gen{gen} {ms:N1} ms at +{(at - start.UtcDateTime).TotalSeconds:N2} s"));
        }

        var process = Process.GetCurrentProcess();
        process.Refresh();
        var cpuBefore = process.TotalProcessorTime;
        var idle = Stopwatch.StartNew();
        await Task.Delay(TimeSpan.FromSeconds(10));
        process.Refresh();
        var idleCpu = (process.TotalProcessorTime - cpuBefore).TotalMilliseconds / idle.Elapsed.TotalMilliseconds / Environment.ProcessorCount * 100;
        Array.Sort(lateness);
        string P(double q) => lateness[Math.Min(timers - 1, (int)(q * timers))].ToString("N1", CultureInfo.InvariantCulture);
        var report = $"""
            # TimerBenchmarks

            {overran}{timers:N0} durable timers (one `SleepOnce` workflow each, {store} store, in-memory transport) due evenly over 10 s, starting {startDelaySeconds} s after
            the first start. All starts were committed {(armedBy - start.AddSeconds(-startDelaySeconds)).TotalSeconds:N1} s after the first one; {(compacted ? "then one full collection ran before the first due time" : "no collection was forced before the first due time")}. Lateness is the
            time from a timer's due time to the commit of its `TimerFired` event.

            | Timers | Lateness p50 (ms) | p90 | p99 | max | Idle CPU after (% of {Environment.ProcessorCount} cores, 10 s) |
            |---:|---:|---:|---:|---:|---:|
            | {timers:N0} | {P(0.5)} | {P(0.9)} | {P(0.99)} | {lateness[^1].ToString("N1", CultureInfo.InvariantCulture)} | {idleCpu.ToString("N2", CultureInfo.InvariantCulture)} |

            Armed: {armed}. While the timers went off (from the first due time to the last commit): {firing}; {lastGc}; {perTimer}.

            Machine: {Environment.ProcessorCount} cores, .NET {Environment.Version}; run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC.
            """;
        Console.WriteLine(report);
        await Reports.WriteAsync("TimerBenchmarks", report);
    }
}

internal static class CollectionsMarshalHelper
{
    public static ref long Get(Dictionary<string, long> map, string key) =>
        ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(map, key);
}
