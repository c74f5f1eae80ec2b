using System.Diagnostics;
using System.Globalization;
using BenchmarkDotNet.Running;

namespace Patterns.Benchmarks.PeerLinks;

public static class Program
{
    public static async Task Main(string[] args)
    {
        if (args.Length == 3 && args[0] == "--node")
        {
            // The receiving node of the two-process cases, started by ChildNode.
            await ChildNode.RunAsync(int.Parse(args[1], CultureInfo.InvariantCulture), int.Parse(args[2], CultureInfo.InvariantCulture));
            return;
        }

        if (args.Length > 0 && args[0] == "--rough-latency")
        {
            await RoughLatencyAsync(args.Length > 1 ? args[1].Split(',') : ["Patterns", "PatternsTwoProcesses", "RawGrpc"]);
            return;
        }

        if (args.Length > 0 && args[0] == "--rough-pair")
        {
            // Only one pair (for a profiler: no other peer's setup in the trace): plaintext, then mutual TLS.
            await RoughPairAsync(args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 5, args.Length > 2 ? args[2] : "plain,tls");
            return;
        }

        if (args.Length > 0 && args[0] == "--rough-tls")
        {
            await TlsFloor.RunAsync();
            return;
        }

        if (args.Length > 0 && args[0] == "--rough-control")
        {
            await RoughControlAsync();
            return;
        }

        if (args.Length > 0 && args[0] == "--rough")
        {
            // A quick stopwatch run for design decisions (not a report): messages per second per case.
            await RoughAsync(args.Length > 1 ? args[1].Split(',') : ["Patterns", "RawGrpc", "AkkaRemote", "Nats"]);
            return;
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }

    private static async Task RoughAsync(string[] cases)
    {
        var bench = new PeerLinkThroughputBenchmarks();
        await bench.SetupAsync();
        try
        {
            foreach (var name in cases)
            {
                var run = name switch { "PatternsMutualTls" => bench.PatternsMutualTls, "RawGrpcMutualTls" => bench.RawGrpcMutualTls, _ => Case(name, bench.RawGrpc, bench.AkkaRemote, bench.Nats, bench.PatternsTwoProcesses, bench.Patterns) };
                await run();
                var best = 0.0;
                var cpu = double.MaxValue;
                using var process = Process.GetCurrentProcess();
                for (var i = 0; i < 5; i++)
                {
                    process.Refresh();
                    var cpuBefore = process.TotalProcessorTime;
                    var allocated = GC.GetTotalAllocatedBytes(true);
                    var watch = Stopwatch.StartNew();
                    await run();
                    var rate = PeerLinkThroughputBenchmarks.Messages / watch.Elapsed.TotalSeconds;
                    best = Math.Max(best, rate);
                    process.Refresh();
                    var used = (process.TotalProcessorTime - cpuBefore).TotalMicroseconds / PeerLinkThroughputBenchmarks.Messages;
                    cpu = Math.Min(cpu, used);
                    Console.WriteLine($"  {name} run {i + 1}: {rate:N0} msg/s, {used:N1} us CPU, {(GC.GetTotalAllocatedBytes(true) - allocated) / PeerLinkThroughputBenchmarks.Messages:N0} B allocated per message");
                }

                // CPU time per message (both ends, this process) depends less on a busy machine than the rate does.
                Console.WriteLine($"{name}: {best:N0} msg/s, {cpu:N1} us CPU per message (best of 5 runs of {PeerLinkThroughputBenchmarks.Messages:N0})");
            }
        }
        finally
        {
            await bench.CleanupAsync();
        }
    }

    private static async Task RoughPairAsync(int seconds, string modes)
    {
        foreach (var tls in modes.Split(',').Select(m => m == "tls"))
        {
            await using var pair = await Pair.StartAsync(tls);
            const string queue = "bench.rough";
            var handled = 0L;
            await pair.Receiver.SubscribeAsync(
                new Patterns.Transport.SubscriptionRequest { Address = Patterns.Transport.TransportAddress.Queue(queue), ConsumerGroup = queue, Concurrency = 256 },
                (_, _) =>
                {
                    Interlocked.Increment(ref handled);
                    return new(Patterns.Transport.Settlement.Ack);
                });
            await pair.Sender.DeclareQueueAsync(queue, new Patterns.Transport.QueueSettings { Capacity = 8192 });
            var payload = new byte[100];
            using var sampler = Environment.GetEnvironmentVariable("PEERLINKS_ALLOCATIONS") == "1" ? new AllocationSampler() : null;
            using var process = Process.GetCurrentProcess();
            var sent = 0L;
            var allocated = GC.GetTotalAllocatedBytes(true);
            var collections = GC.CollectionCount(0);
            var cpuBefore = process.TotalProcessorTime;
            var watch = Stopwatch.StartNew();
            sampler?.Start();
            while (watch.Elapsed.TotalSeconds < seconds)
            {
                for (var i = 0; i < 1000; i++)
                {
                    await pair.Sender.SendAsync(queue, new Patterns.Messaging.Envelope { MessageId = Guid.NewGuid(), MessageType = "bench", Payload = payload });
                }

                sent += 1000;
            }

            while (Interlocked.Read(ref handled) < sent)
            {
                await Task.Delay(1);
            }

            var elapsed = watch.Elapsed;
            sampler?.Stop();
            process.Refresh();
            var cpu = (process.TotalProcessorTime - cpuBefore).TotalMicroseconds / sent;
            Console.WriteLine($"{(tls ? "mutual TLS" : "plaintext ")}: {sent / elapsed.TotalSeconds:N0} msg/s, {cpu:N2} us CPU per message ({sent:N0} messages), {(GC.GetTotalAllocatedBytes(true) - allocated) / (double)sent:N0} B allocated per message, {GC.CollectionCount(0) - collections} gen-0 collections");
            sampler?.Print(sent);
        }
    }

    /// <summary>The case of a rough run named <paramref name="name"/>; <c>Patterns</c> for a name it does not know.</summary>
    private static Func<Task> Case(string name, Func<Task> rawGrpc, Func<Task> akkaRemote, Func<Task> nats, Func<Task> patternsTwoProcesses, Func<Task> patterns) => name switch
    {
        "RawGrpc" => rawGrpc,
        "AkkaRemote" => akkaRemote,
        "Nats" => nats,
        "PatternsTwoProcesses" => patternsTwoProcesses,
        _ => patterns,
    };

    /// <summary>A quick stopwatch run of round trips with one request outstanding: p50 and p99 per case (not a report).</summary>
    private static async Task RoughLatencyAsync(string[] cases)
    {
        var bench = new PeerLinkLatencyBenchmarks();
        await bench.SetupAsync();
        try
        {
            foreach (var name in cases)
            {
                var run = Case(name, bench.RawGrpc, bench.AkkaRemote, bench.Nats, bench.PatternsTwoProcesses, bench.Patterns);
                const int rounds = 3000;
                var times = new double[rounds];
                for (var i = 0; i < 500; i++)
                {
                    await run();
                }

                for (var i = 0; i < rounds; i++)
                {
                    var start = Stopwatch.GetTimestamp();
                    await run();
                    times[i] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
                }

                Array.Sort(times);
                Console.WriteLine($"{name}: p50 {times[rounds / 2]:N1} us, p99 {times[rounds * 99 / 100]:N1} us ({rounds:N0} round trips, one outstanding)");
            }
        }
        finally
        {
            await bench.CleanupAsync();
        }
    }

    /// <summary>A quick stopwatch run of control-stream pings: idle, then with the bulk stream saturated by 1 MiB messages (not a report).</summary>
    private static async Task RoughControlAsync()
    {
        foreach (var saturated in new[] { false, true })
        {
            var bench = new PeerLinkControlStreamBenchmarks();
            await (saturated ? bench.SetupBulkAsync() : bench.SetupIdleAsync());
            try
            {
                const int rounds = 2000;
                var times = new double[rounds];
                for (var i = 0; i < 200; i++)
                {
                    await bench.Idle();
                }

                var ahead = new double[rounds];
                var link = bench.Link;

                // Where each ping's round trip goes, hop by hop (both nodes run in this process, so the marks compare).
                Patterns.PeerLinks.Links.ControlTrace.Enabled = true;
                var hops = Patterns.PeerLinks.Links.ControlTrace.Hops;
                var spans = new double[hops.Length][];
                for (var h = 0; h < hops.Length; h++)
                {
                    spans[h] = new double[rounds];
                }

                var traced = 0;
                var bulkAtStart = link.BulkBytesWritten;
                var collections = new[] { GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2) };
                var paused = GC.GetTotalPauseDuration();
                var elapsed = Stopwatch.StartNew();
                for (var i = 0; i < rounds; i++)
                {
                    var before = link.BulkBytesWritten;
                    times[i] = (await bench.Idle()).TotalMicroseconds;
                    var resumed = Stopwatch.GetTimestamp();
                    ahead[i] = (link.BulkBytesWritten - before) / 1024.0;
                    var marks = Patterns.PeerLinks.Links.ControlTrace.Snapshot();
                    if (Array.TrueForAll(marks, m => m != 0))
                    {
                        for (var h = 1; h < hops.Length; h++)
                        {
                            spans[h - 1][traced] = Stopwatch.GetElapsedTime(marks[h - 1], marks[h]).TotalMicroseconds;
                        }

                        spans[hops.Length - 1][traced] = Stopwatch.GetElapsedTime(marks[^1], resumed).TotalMicroseconds;
                        traced++;
                    }
                }

                elapsed.Stop();
                Patterns.PeerLinks.Links.ControlTrace.Enabled = false;

                // A collection stops every thread, the control loops with the rest: pauses as long as the slowest pings
                // (and at least 1% of them) would set the p99.
                var pauses = GC.GetTotalPauseDuration() - paused;
                var gcs = GC.CollectionCount(0) - collections[0];
                Console.WriteLine($"{(saturated ? "BulkSaturated" : "Idle")}: garbage collections during the pings: {gcs} (gen1 {GC.CollectionCount(1) - collections[1]}, gen2 {GC.CollectionCount(2) - collections[2]}), paused {pauses.TotalMilliseconds:N1} ms in all, {(gcs > 0 ? pauses.TotalMicroseconds / gcs : 0):N0} us per collection, {(gcs > 0 ? GC.GetGCMemoryInfo().PauseDurations[0].TotalMicroseconds : 0):N0} us the last; {100 * pauses.TotalMilliseconds / elapsed.Elapsed.TotalMilliseconds:N1}% of the time; server GC {System.Runtime.GCSettings.IsServerGC}");
                // A ping whose writer's "written" mark came only after the probe completed is left out (see ControlTrace).
                Console.WriteLine($"{(saturated ? "BulkSaturated" : "Idle")}: {traced} of {rounds} pings traced (the rest had a hop not yet marked when the probe completed); time from each hop to the next (mean / p50 / p99 us):");
                for (var h = 0; h < hops.Length && traced > 0; h++)
                {
                    var span = spans[h][..traced];
                    Array.Sort(span);
                    var to = h + 1 < hops.Length ? hops[h + 1] : "probe resumed";
                    Console.WriteLine($"  {hops[h]} -> {to}: {span.Average():N1} / {span[traced / 2]:N1} / {span[traced * 99 / 100]:N1}");
                }

                // The TCP connections to the receiver's port (established; client side, dual-mode sockets show in tcp6):
                // control and bulk each have their own HTTP/2 connection when this reads 2.
                var port = link.Address.Port.ToString("X4", System.Globalization.CultureInfo.InvariantCulture);
                var toReceiver = new[] { "/proc/net/tcp", "/proc/net/tcp6" }.SelectMany(f => File.ReadLines(f).Skip(1)).Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                    .Count(f => f[2].EndsWith(":" + port, StringComparison.Ordinal) && f[3] == "01");
                Console.WriteLine($"TCP connections to the receiver's port {link.Address.Port}: {toReceiver}");

                // Bulk bytes the link wrote while each ping was out: the bulk work that went ahead of the control frames
                // (it depends less on how busy the machine is than the round trip does).
                Console.WriteLine($"thread pool: {ThreadPool.ThreadCount} threads, {ThreadPool.PendingWorkItemCount} pending, {ThreadPool.CompletedWorkItemCount} completed");
                var meanAhead = ahead.Average();

                // The bulk bytes ahead of a ping are roughly the bulk throughput times the round trip, so they drop
                // whenever the bulk flow slows (a busier machine, or a change that slows bulk): read them against the
                // bulk throughput of the same rounds, and per millisecond of round trip.
                var bulkKiBPerMs = (link.BulkBytesWritten - bulkAtStart) / 1024.0 / elapsed.Elapsed.TotalMilliseconds;
                var aheadPerMsOfRoundTrip = meanAhead / (times.Average() / 1000.0);
                Console.WriteLine($"{(saturated ? "BulkSaturated" : "Idle")}: bulk throughput during the pings {bulkKiBPerMs:N1} KiB/ms ({bulkKiBPerMs * 1000 / 1024:N1} MiB/s); bulk written per ms of round trip {aheadPerMsOfRoundTrip:N1} KiB");
                Array.Sort(ahead);
                Console.WriteLine($"{(saturated ? "BulkSaturated" : "Idle")}: bulk written during a ping: mean {meanAhead:N1} KiB, p50 {ahead[rounds / 2]:N1} KiB, p90 {ahead[rounds * 9 / 10]:N1} KiB");
                var mean = times.Average();
                Array.Sort(times);
                Console.WriteLine($"{(saturated ? "BulkSaturated" : "Idle")}: mean {mean:N1} us, p50 {times[rounds / 2]:N1} us, p90 {times[rounds * 9 / 10]:N1} us, p99 {times[rounds * 99 / 100]:N1} us ({rounds:N0} pings)");
            }
            finally
            {
                await bench.CleanupAsync();
            }
        }
    }
}
