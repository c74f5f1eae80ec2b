using System.Diagnostics;
using System.Globalization;

namespace Patterns.Benchmarks.Etl;

/// <summary>
/// One merge of <see cref="MergeBenchmarks"/>' delta (a tenth of the target: 45% updates, 50% inserts, 5% deletes) into
/// a target of the given size, in this process: prints rows per second and the peak managed heap during the merge, so
/// sizes can be compared side by side (the memory should stay flat as the target grows).
/// </summary>
internal static class MergeRunner
{
    public static async Task RunAsync(int target, string store, string method)
    {
        var benchmark = new MergeBenchmarks { Store = store, Target = target };
        benchmark.Setup();
        try
        {
            benchmark.ResetTarget();
            GC.Collect();
            GC.WaitForPendingFinalizers();
            var baseline = GC.GetTotalMemory(true);
            long peak = baseline;
            using var sampler = new Timer(_ => Interlocked.Exchange(ref peak, Math.Max(Interlocked.Read(ref peak), GC.GetTotalMemory(false))), null, 0, 20);
            var stopwatch = Stopwatch.StartNew();
            var changed = method == "dictionary" ? await benchmark.DictionaryDiff() : await benchmark.Patterns();
            stopwatch.Stop();
            var delta = target / 10;
            Console.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"store={store} method={method} target={target} delta={delta} changed={changed} seconds={stopwatch.Elapsed.TotalSeconds:F1} rows_per_second={delta / stopwatch.Elapsed.TotalSeconds:F0} peak_managed_mb={Interlocked.Read(ref peak) / 1048576.0:F0} baseline_managed_mb={baseline / 1048576.0:F0}"));
            benchmark.DeleteTarget();
        }
        finally
        {
            benchmark.Cleanup();
        }
    }
}
