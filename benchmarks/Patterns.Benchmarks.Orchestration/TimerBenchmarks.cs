using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration.Runtime;

namespace Patterns.Benchmarks.Orchestration;

/// <summary>
/// 100,000 durable timers (one workflow each, in memory) due spread over 10 s: lateness (fire-and-commit time minus due
/// time) percentiles, and the process CPU used while idle afterwards. One long run, written as a markdown report.
/// </summary>
public static class TimerBenchmarks
{
    // Starting 100,000 workflows takes about 20 s on 2 cores: every timer is armed before the first is due.
    private const int StartDelaySeconds = 30;

    public static async Task RunAsync(int timers)
    {
        using var gc = new GcPauseListener();
        await using var engine = await PatternsEngine.StartAsync(Store.InMemory);
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
        var start = DateTimeOffset.UtcNow.AddSeconds(StartDelaySeconds);
        for (var i = 0; i < timers; i++)
        {
            due["t" + i] = start.AddTicks(TimeSpan.FromSeconds(10).Ticks * i / timers).UtcTicks;
        }

        var starts = new List<Task>(timers);
        for (var i = 0; i < timers; i++)
        {
            starts.Add(engine.Client.StartAsync(nameof(SleepOnce), "t" + i, due["t" + i]));
        }

        await Task.WhenAll(starts);
        var armedBy = DateTimeOffset.UtcNow;
        await all.Task.WaitAsync(TimeSpan.FromMinutes(5));
        var firing = gc.Summary(start.UtcDateTime, DateTime.UtcNow);
        var info = GC.GetGCMemoryInfo(GCKind.Ephemeral);
        var lastGc = FormattableString.Invariant($"the last young-generation collection (gen{info.Generation}) promoted {info.PromotedBytes / 1e6:N1} MB of a {info.HeapSizeBytes / 1e6:N0} MB heap");
        foreach (var (at, ms, gen) in gc.Pauses.Where(p => p.At >= start.UtcDateTime).OrderByDescending(p => p.Milliseconds).Take(8))
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

            {timers:N0} durable timers (one `SleepOnce` workflow each, in-memory store and transport) due evenly over 10 s, starting {StartDelaySeconds} s after
            the first start. All starts were committed {(armedBy - start.AddSeconds(-StartDelaySeconds)).TotalSeconds:N1} s after the first one. Lateness is the
            time from a timer's due time to the commit of its `TimerFired` event.

            | Timers | Lateness p50 (ms) | p90 | p99 | max | Idle CPU after (% of {Environment.ProcessorCount} cores, 10 s) |
            |---:|---:|---:|---:|---:|---:|
            | {timers:N0} | {P(0.5)} | {P(0.9)} | {P(0.99)} | {lateness[^1].ToString("N1", CultureInfo.InvariantCulture)} | {idleCpu.ToString("N2", CultureInfo.InvariantCulture)} |

            While the timers went off (from the first due time to the last commit): {firing}; {lastGc}.

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
