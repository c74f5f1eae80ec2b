using BenchmarkDotNet.Running;

namespace Patterns.Benchmarks.Orchestration;

public static class Program
{
    public static async Task Main(string[] args)
    {
        // The timer and memory figures are single long runs, not BenchmarkDotNet's repeated invocations.
        if (args is ["--timers", ..])
        {
            await TimerBenchmarks.RunAsync(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 100_000);
            return;
        }

        if (args is ["--suspended", ..])
        {
            await SuspendedMemoryBenchmark.RunAsync(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 100_000);
            return;
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}
