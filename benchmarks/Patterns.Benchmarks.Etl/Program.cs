using BenchmarkDotNet.Running;

namespace Patterns.Benchmarks.Etl;

public static class Program
{
    public static async Task Main(string[] args)
    {
        if (args is ["rss", ..])
        {
            // Peak RSS of one CSV-to-PostgreSQL load in a fresh process: rss <rows>
            await PeakRss.RunAsync(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 10_000_000);
            return;
        }

        if (args is ["merge", ..])
        {
            // One merge outside BenchmarkDotNet: merge <target rows> [postgres|sqlite] [patterns|dictionary]
            await MergeRunner.RunAsync(
                args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 10_000_000,
                args.Length > 2 ? args[2] : "postgres",
                args.Length > 3 ? args[3] : "patterns");
            return;
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}
