using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration.History;
using Patterns.Orchestration.Runtime;

namespace Patterns.Benchmarks.Orchestration;

/// <summary>
/// What one timer workflow (<see cref="SleepOnce"/>) allocates, counted exactly (<see cref="GC.GetTotalAllocatedBytes(bool)"/>)
/// over a batch of them after a warm-up: its start (start, run to the timer, commit, arm) and its firing (fire, resume,
/// complete, commit), and what each leaves alive after a full collection. The counts do not depend on the machine's load,
/// unlike <see cref="TimerBenchmarks"/>'s lateness, so they compare changes on a busy machine.
/// </summary>
public static class TimerAllocation
{
    public static async Task RunAsync(int count, Store store)
    {
        await using var engine = await PatternsEngine.StartAsync(store);
        var runtime = engine.Services.GetRequiredService<WorkflowRuntime>();
        var fired = 0;
        TaskCompletionSource? allFired = null;
        var target = 0;
        runtime.Committed += (_, events) =>
        {
            for (var i = 0; i < events.Count; i++)
            {
                if (events[i].Kind == HistoryEventKind.TimerFired && Interlocked.Increment(ref fired) == Volatile.Read(ref target))
                {
                    allFired!.TrySetResult();
                }
            }
        };

        // Warm-up (JIT, pools, the store's growth): a tenth as many, through the whole cycle.
        await RoundAsync("warm-up", count / 10, print: false);
        await RoundAsync("measured", count, print: true);

        async Task RoundAsync(string name, int n, bool print)
        {
            allFired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Volatile.Write(ref fired, 0);
            Volatile.Write(ref target, n);
            var ids = new string[n];
            var inputs = new long[n];
            for (var i = 0; i < n; i++)
            {
                ids[i] = name + "-" + i.ToString(CultureInfo.InvariantCulture);
            }

            // Due well after the starts end (the starts take about 1 s per 10,000 on a quiet machine), spread over a second.
            var due = DateTimeOffset.UtcNow.AddSeconds(3 + n / 2_000.0);
            for (var i = 0; i < n; i++)
            {
                inputs[i] = due.AddTicks(TimeSpan.TicksPerSecond * i / n).UtcTicks;
            }

            var starts = new Task[n];
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            var live0 = GC.GetTotalMemory(forceFullCollection: false);
            var allocated0 = GC.GetTotalAllocatedBytes(precise: true);
            using var types = print && Environment.GetEnvironmentVariable("PATTERNS_ALLOC_TYPES") == "1" ? new AllocListener() : null;
            for (var i = 0; i < n; i++)
            {
                starts[i] = engine.Client.StartAsync(nameof(SleepOnce), ids[i], inputs[i]);
            }

            await Task.WhenAll(starts);
            var allocated1 = GC.GetTotalAllocatedBytes(precise: true);
            var late = DateTimeOffset.UtcNow > due;
            if (types is not null)
            {
                Console.WriteLine("Start, by type (sampled):");
                types.Print(25);
                types.Bytes.Clear();
            }

            Array.Clear(starts);
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            var live1 = GC.GetTotalMemory(forceFullCollection: false);
            var gen0 = GC.CollectionCount(0);
            var allocated2 = GC.GetTotalAllocatedBytes(precise: true);
            var (promoted0, promotedCollections) = (0L, 0);
            await allFired.Task.WaitAsync(TimeSpan.FromMinutes(5));

            // The last commit's own waiters (the slot's removal) finish right after the event: let them.
            while (runtime.Slots > 0)
            {
                await Task.Delay(10);
            }

            var allocated3 = GC.GetTotalAllocatedBytes(precise: true);
            var gen0After = GC.CollectionCount(0);
            var info = GC.GetGCMemoryInfo(GCKind.Ephemeral);
            if (gen0After > gen0)
            {
                promoted0 = info.PromotedBytes;
                promotedCollections = gen0After - gen0;
            }

            if (types is not null)
            {
                Console.WriteLine("Fire, by type (sampled):");
                types.Print(25);
            }

            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            var live2 = GC.GetTotalMemory(forceFullCollection: false);
            if (print)
            {
                var overran = late ? " (the starts overran the first due time: start bytes include firings)" : string.Empty;
                Console.WriteLine(FormattableString.Invariant($"{store}, {n:N0} timer workflows{overran}:"));
                Console.WriteLine(FormattableString.Invariant($"  start: {(allocated1 - allocated0) / (double)n:N0} B allocated per workflow, {(live1 - live0) / (double)n:N0} B live per armed timer after a full collection"));
                Console.WriteLine(FormattableString.Invariant($"  fire:  {(allocated3 - allocated2) / (double)n:N0} B allocated per workflow, live heap {(live2 - live1) / (double)n:N0} B per workflow after a full collection"));
                Console.WriteLine(FormattableString.Invariant($"  total: {(allocated3 - allocated2 + allocated1 - allocated0) / (double)n:N0} B allocated per timer workflow; {promotedCollections} collections while firing, the last ephemeral one promoted {promoted0:N0} B"));
            }
        }
    }
}
