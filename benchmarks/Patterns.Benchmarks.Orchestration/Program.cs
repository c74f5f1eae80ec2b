using BenchmarkDotNet.Running;

namespace Patterns.Benchmarks.Orchestration;

public static class Program
{
    public static async Task Main(string[] args)
    {
        // The timer and memory figures are single long runs, not BenchmarkDotNet's repeated invocations.
        if (args is ["--timers", ..])
        {
            // --timers [count] [inmemory|sqlite|postgres] [start delay in seconds]
            await TimerBenchmarks.RunAsync(
                args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 100_000,
                args.Length > 2 ? Enum.Parse<Store>(args[2], ignoreCase: true) : Store.InMemory,
                args.Length > 3 ? int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture) : 30);
            return;
        }

        if (args is ["--timer-alloc", ..])
        {
            // --timer-alloc [count] [inmemory|sqlite|postgres]: bytes allocated (exactly) per timer workflow, start and firing.
            await TimerAllocation.RunAsync(
                args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 10_000,
                args.Length > 2 ? Enum.Parse<Store>(args[2], ignoreCase: true) : Store.InMemory);
            return;
        }

        if (args is ["--suspended", ..])
        {
            // --suspended [count] [MaxCachedIdleInstances, the option's default when left out or 'default'] [starts in flight, 0 (all at once) by default]
            //   [MaxConcurrentWorkflowTasks, the option's default when left out or 'default']
            await SuspendedMemoryBenchmark.RunAsync(
                args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 100_000,
                args.Length > 2 && args[2] != "default" ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : null,
                args.Length > 3 ? int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture) : 0,
                args.Length > 4 && args[4] != "default" ? int.Parse(args[4], System.Globalization.CultureInfo.InvariantCulture) : null);
            return;
        }

        if (args is ["--throughput", ..])
        {
            // A quick stopwatch run (not a report): --throughput [inmemory|sqlite|postgres] [workflows] [rounds].
            var store = args.Length > 1 ? Enum.Parse<Store>(args[1], ignoreCase: true) : Store.InMemory;
            var workflows = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 10_000;
            var rounds = args.Length > 3 ? int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture) : 3;
            var bench = new WorkflowThroughputBenchmarks { Workflows = workflows };
            using var allocations = Environment.GetEnvironmentVariable("PATTERNS_ALLOC_TYPES") == "1" ? new AllocListener() : null;
            for (var round = 0; round < rounds; round++)
            {
                await using var engine = await PatternsEngine.StartAsync(store);
                var (allocated, pauses, gen0, gen1, gen2) = (GC.GetTotalAllocatedBytes(), GC.GetTotalPauseDuration(), GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2));
                var cpu = Environment.CpuUsage.TotalTime;
                var clock = System.Diagnostics.Stopwatch.StartNew();
                await bench.RunOnAsync(engine);
                Console.WriteLine(
                    $"{store}: {workflows} workflows in {clock.Elapsed.TotalSeconds:N2} s = {workflows / clock.Elapsed.TotalSeconds:N0}/s; " +
                    $"CPU {(Environment.CpuUsage.TotalTime - cpu).TotalSeconds:N2} s, allocated {(GC.GetTotalAllocatedBytes() - allocated) / workflows / 1024.0:N1} KB/workflow, " +
                    $"GC pauses {(GC.GetTotalPauseDuration() - pauses).TotalMilliseconds:N0} ms (gen0 {GC.CollectionCount(0) - gen0}, gen1 {GC.CollectionCount(1) - gen1}, gen2 {GC.CollectionCount(2) - gen2})");
            }

            allocations?.Print(40);
            return;
        }

        if (args is ["--latency", ..])
        {
            // A quick stopwatch run (not a report): --latency [inmemory|sqlite|postgres] [workflows]: one 1-activity workflow
            // at a time, start to result, after a warm-up of a tenth as many.
            var store = args.Length > 1 ? Enum.Parse<Store>(args[1], ignoreCase: true) : Store.InMemory;
            var count = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 1_000;
            await using var engine = await PatternsEngine.StartAsync(store);
            var times = new double[count];
            for (var i = -count / 10; i < count; i++)
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                var id = "lat-" + (i + count);
                await engine.Client.StartAsync(nameof(NoOpChain), id, 1);
                await engine.Client.GetResultAsync<int>(id);
                if (i >= 0)
                {
                    times[i] = clock.Elapsed.TotalMilliseconds;
                }
            }

            Array.Sort(times);
            Console.WriteLine(System.FormattableString.Invariant(
                $"{store}: {count} workflows one at a time: p50 {times[count / 2]:N3} ms, p90 {times[count * 9 / 10]:N3} ms, p99 {times[count * 99 / 100]:N3} ms, mean {times.Average():N3} ms"));
            return;
        }

        if (args is ["--peer", var peer, ..])
        {
            // A quick stopwatch run of a peer (not a report): --peer durabletask|wolverine-sqlite|wolverine-postgres [workflows].
            var count = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 10_000;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            if (peer == "durabletask")
            {
                await using var durable = await DurableTaskEngine.StartAsync();
                clock.Restart();
                await durable.RunAsync(count, 5);
            }
            else
            {
                await using var wolverine = await WolverineSagaEngine.StartAsync(peer == "wolverine-sqlite" ? Store.Sqlite : Store.Postgres);
                clock.Restart();
                await wolverine.RunAsync(count);
            }

            Console.WriteLine($"{peer}: {count} workflows in {clock.Elapsed.TotalSeconds:N2} s = {count / clock.Elapsed.TotalSeconds:N0}/s");
            return;
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}
