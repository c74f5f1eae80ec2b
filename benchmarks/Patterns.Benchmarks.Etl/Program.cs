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

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}
