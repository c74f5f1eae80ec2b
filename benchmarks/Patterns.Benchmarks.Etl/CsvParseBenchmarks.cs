using System.Globalization;
using BenchmarkDotNet.Attributes;
using nietras.SeparatedValues;
using Patterns.Etl.Samples;
using Sylvan.Data.Csv;

namespace Patterns.Benchmarks.Etl;

/// <summary>The parser choice: the generated orders CSV parsed into Order records by each candidate, as its docs recommend.</summary>
[MemoryDiagnoser]
public class CsvParseBenchmarks
{
    private string _csv = "";

    [GlobalSetup]
    public void Setup() => _csv = EtlData.Csv(EtlData.Rows);

    [Benchmark(Baseline = true)]
    public long Sep()
    {
        long sum = 0;
        using var reader = nietras.SeparatedValues.Sep.Reader(o => o with { Unescape = true, CultureInfo = CultureInfo.InvariantCulture }).FromFile(_csv);
        foreach (var row in reader)
        {
            var order = new Order(
                row[0].Parse<int>(), row[1].Parse<long>(), row[2].Parse<decimal>(),
                DateTime.Parse(row[3].Span, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal),
                row[4].ToString(), row[5].ToString(), row[6].ToString(), row[7].ToString(), row[8].Span.IsEmpty ? null : row[8].ToString(), row[9].ToString());
            sum += order.Id;
        }

        return sum;
    }

    [Benchmark]
    public long Sylvan()
    {
        long sum = 0;
        using var reader = CsvDataReader.Create(_csv);
        while (reader.Read())
        {
            var order = new Order(
                reader.GetInt32(0), reader.GetInt64(1), reader.GetDecimal(2),
                DateTime.Parse(reader.GetString(3), CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal),
                reader.GetString(4), reader.GetString(5), reader.GetString(6), reader.GetString(7), reader.IsDBNull(8) ? null : reader.GetString(8), reader.GetString(9));
            sum += order.Id;
        }

        return sum;
    }

    [Benchmark]
    public long CsvHelper()
    {
        long sum = 0;
        using var csv = global::CsvHelper.CsvReader.FromFile(_csv, global::CsvHelper.CsvReaderOptions.Default, FileOptions.SequentialScan);
        foreach (var order in csv.GetRecords<OrderPoco>())
        {
            sum += order.Id;
        }

        return sum;
    }

    [Benchmark]
    public async Task<long> PatternsCsvSource()
    {
        long sum = 0;
        var sink = new CountSink();
        await global::Patterns.Etl.Etl.From(global::Patterns.Etl.Csv.Read<Order>(_csv)).Select(o => { sum += o.Id; return o; }).To(sink).RunAsync();
        return sum;
    }
}

/// <summary>A sink that only counts rows.</summary>
internal sealed class CountSink : global::Patterns.Etl.EtlSink<Order>
{
    public long Rows;

    public override string Name => "count";

    public override ValueTask<global::Patterns.Etl.EtlSinkWriter<Order>> OpenAsync(global::Patterns.Etl.EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer(this));

    private sealed class Writer(CountSink sink) : global::Patterns.Etl.EtlSinkWriter<Order>
    {
        public override ValueTask<global::Patterns.Etl.EtlLoadCounts> WriteAsync(ReadOnlyMemory<Order> rows, global::Patterns.Etl.EtlCommit commit, CancellationToken cancellationToken)
        {
            sink.Rows += rows.Length;
            return new(new global::Patterns.Etl.EtlLoadCounts(rows.Length, 0, 0));
        }

        public override ValueTask<global::Patterns.Etl.EtlLoadCounts> CompleteAsync(global::Patterns.Etl.EtlCommit commit, CancellationToken cancellationToken) => default;
    }
}
