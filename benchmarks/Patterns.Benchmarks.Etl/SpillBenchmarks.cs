using System.Globalization;
using BenchmarkDotNet.Attributes;
using Patterns.Etl;

namespace Patterns.Benchmarks.Etl;

/// <summary>
/// The holding stages in memory and spilling: 1,000,000 generated rows (fixed seed) with 250,000 distinct keys, through
/// <c>DistinctBy</c> and a sum-and-count <c>Aggregate</c> by key, into a sink that only counts. The spilling cases get a
/// 4 MB budget (about a fifth of what the keys need), so most rows go through the partition files.
/// </summary>
[MemoryDiagnoser]
public class SpillBenchmarks
{
    private const long Budget = 4 * 1024 * 1024;
    private Row[] _rows = [];
    private string _temp = "";

    /// <summary>Gets or sets the number of rows.</summary>
    [Params(1_000_000)]
    public int Rows { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(42);
        _rows = new Row[Rows];
        for (var i = 0; i < Rows; i++)
        {
            _rows[i] = new Row(i, "customer-" + random.Next(Rows / 4).ToString(CultureInfo.InvariantCulture), random.Next(1_000_000) / 100m);
        }

        _temp = Path.Combine(Path.GetTempPath(), "patterns-bench-spill-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_temp);
    }

    [GlobalCleanup]
    public void Cleanup() => Directory.Delete(_temp, recursive: true);

    [Benchmark(Baseline = true)]
    public Task<long> DistinctByInMemory() => RunAsync(global::Patterns.Etl.Etl.From(_rows).DistinctBy(r => r.Key));

    [Benchmark]
    public Task<long> DistinctBySpilling() => RunAsync(global::Patterns.Etl.Etl.From(_rows).DistinctBy(r => r.Key, maxBytes: Budget, spill: new EtlSpill { TempDirectory = _temp }));

    [Benchmark]
    public Task<long> AggregateInMemory() => RunAsync(global::Patterns.Etl.Etl.From(_rows).Aggregate(r => r.Key, _ => (Count: 0L, Sum: 0m), (acc, r) => (acc.Count + 1, acc.Sum + r.Amount), (k, acc) => new Total(k, acc.Count, acc.Sum)));

    [Benchmark]
    public Task<long> AggregateSpilling() => RunAsync(global::Patterns.Etl.Etl.From(_rows).Aggregate(r => r.Key, _ => (Count: 0L, Sum: 0m), (acc, r) => (acc.Count + 1, acc.Sum + r.Amount), (k, acc) => new Total(k, acc.Count, acc.Sum), maxBytes: Budget, spill: new EtlSpill { TempDirectory = _temp }));

    private static async Task<long> RunAsync<T>(EtlFlow<T> flow) => (await flow.To(new CountSink<T>(), "spill-bench").RunAsync()).RowsLoaded;

    public sealed record Row(int Id, string Key, decimal Amount);

    public sealed record Total(string Key, long Count, decimal Sum);

    private sealed class CountSink<T> : EtlSink<T>
    {
        public override string Name => "count";

        public override ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer());

        private sealed class Writer : EtlSinkWriter<T>
        {
            public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> batch, EtlCommit commit, CancellationToken cancellationToken) => new(new EtlLoadCounts(batch.Length, 0, 0));

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => new(default(EtlLoadCounts));
        }
    }
}
