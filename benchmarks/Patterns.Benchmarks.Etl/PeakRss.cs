using System.Diagnostics;
using Patterns.Etl;
using Patterns.Etl.Samples;

namespace Patterns.Benchmarks.Etl;

/// <summary>Loads a generated CSV of <c>rows</c> orders into PostgreSQL in this process and prints the peak RSS and the peak managed heap.</summary>
internal static class PeakRss
{
    public static async Task RunAsync(int rows)
    {
        var csv = EtlData.Csv(rows);
        long peakManaged = 0;
        var stopwatch = Stopwatch.StartNew();
        var progress = new Observer(p => peakManaged = Math.Max(peakManaged, GC.GetTotalMemory(false)));
        var result = await global::Patterns.Etl.Etl.From(Csv.Read<Order>(csv))
            .To(Postgres.Append<Order>(EtlData.PostgresConnectionString, "etl_rss_orders"), "rss")
            .RunAsync(new EtlRunOptions { Restart = true, Progress = progress });
        stopwatch.Stop();
        using var process = Process.GetCurrentProcess();
        Console.WriteLine($"rows={result.RowsInserted} seconds={stopwatch.Elapsed.TotalSeconds:F1} rows_per_second={result.RowsInserted / stopwatch.Elapsed.TotalSeconds:F0} peak_rss_mb={process.PeakWorkingSet64 / 1048576.0:F0} peak_managed_mb={peakManaged / 1048576.0:F0}");
        await using var source = Npgsql.NpgsqlDataSource.Create(EtlData.PostgresConnectionString);
        await using var drop = source.CreateCommand("DROP TABLE etl_rss_orders");
        await drop.ExecuteNonQueryAsync();
    }

    private sealed class Observer(Action<EtlProgress> report) : IProgress<EtlProgress>
    {
        public void Report(EtlProgress value) => report(value);
    }
}
