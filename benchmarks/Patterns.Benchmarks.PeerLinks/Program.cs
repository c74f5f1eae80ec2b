using System.Diagnostics;
using BenchmarkDotNet.Running;

namespace Patterns.Benchmarks.PeerLinks;

public static class Program
{
    public static async Task Main(string[] args)
    {
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
                Func<Task> run = name switch
                {
                    "RawGrpc" => bench.RawGrpc,
                    "AkkaRemote" => bench.AkkaRemote,
                    "Nats" => bench.Nats,
                    _ => bench.Patterns,
                };
                await run();
                var best = 0.0;
                for (var i = 0; i < 5; i++)
                {
                    var watch = Stopwatch.StartNew();
                    await run();
                    best = Math.Max(best, PeerLinkThroughputBenchmarks.Messages / watch.Elapsed.TotalSeconds);
                }

                Console.WriteLine($"{name}: {best:N0} msg/s (best of 5 runs of {PeerLinkThroughputBenchmarks.Messages:N0})");
            }
        }
        finally
        {
            await bench.CleanupAsync();
        }
    }
}
