using System.Globalization;
using System.Threading.Tasks.Dataflow;
using BenchmarkDotNet.Attributes;
using CsvHelper;
using nietras.SeparatedValues;
using Npgsql;
using NpgsqlTypes;
using Patterns.Etl;
using Patterns.Etl.Samples;

namespace Patterns.Benchmarks.Etl;

/// <summary>
/// A generated CSV of orders (fixed seed, 12 columns with 5% quoted string fields) loaded into a PostgreSQL table.
/// Raw is the floor: the fastest parser (Sep) in a hand-written loop into NpgsqlBinaryImporter, one COPY.
/// </summary>
[MemoryDiagnoser]
public class CsvToPostgresBenchmarks
{
    private const string Table = "etl_bench_orders";
    private const string Columns = "id, customer_id, amount, placed_at, status, region, product, channel, note, email";
    private string _csv = "";
    private NpgsqlDataSource _source = null!;

    // Synchronous: the in-process toolchain does not await an async GlobalSetup before IterationSetup.
    [GlobalSetup]
    public void Setup() => SetupAsync().GetAwaiter().GetResult();

    private async Task SetupAsync()
    {
        _csv = EtlData.Csv(EtlData.Rows);
        _source = NpgsqlDataSource.Create(EtlData.PostgresConnectionString);
        await ExecuteAsync($"DROP TABLE IF EXISTS {Table}");
    }

    [IterationSetup]
    public void Truncate() => ExecuteAsync($"CREATE TABLE IF NOT EXISTS {Table} (id integer, customer_id bigint, amount numeric, placed_at timestamptz, status text, region text, product text, channel text, note text, email text); TRUNCATE {Table}").GetAwaiter().GetResult();

    [GlobalCleanup]
    public void Cleanup() => CleanupAsync().GetAwaiter().GetResult();

    private async Task CleanupAsync() => await _source.DisposeAsync();

    [Benchmark(Baseline = true)]
    public async Task<ulong> Raw()
    {
        await using var connection = await _source.OpenConnectionAsync();
        await using var importer = await connection.BeginBinaryImportAsync($"COPY {Table} ({Columns}) FROM STDIN (FORMAT BINARY)");
        using (var reader = Sep.Reader(o => o with { Unescape = true, CultureInfo = CultureInfo.InvariantCulture }).FromFile(_csv))
        {
            foreach (var row in reader)
            {
                importer.StartRow();
                importer.Write(row[0].Parse<int>(), NpgsqlDbType.Integer);
                importer.Write(row[1].Parse<long>(), NpgsqlDbType.Bigint);
                importer.Write(row[2].Parse<decimal>(), NpgsqlDbType.Numeric);
                importer.Write(DateTime.Parse(row[3].Span, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal), NpgsqlDbType.TimestampTz);
                for (var c = 4; c < 10; c++)
                {
                    var span = row[c].Span;
                    if (span.IsEmpty)
                    {
                        importer.WriteNull();
                    }
                    else
                    {
                        importer.Write(row[c].ToString(), NpgsqlDbType.Text);
                    }
                }
            }
        }

        return await importer.CompleteAsync();
    }

    [Benchmark]
    public async Task<long> Patterns()
    {
        var result = await global::Patterns.Etl.Etl.From(global::Patterns.Etl.Csv.Read<Order>(_csv))
            .To(Postgres.Load(new PostgresSinkOptions<Order> { DataSource = _source, Table = Table, Schema = Order.Schema, CreateTable = false }), "bench")
            .RunAsync(new EtlRunOptions { Restart = true });
        return result.RowsInserted;
    }

    [Benchmark]
    public async Task<long> PatternsWithoutBookmarks()
    {
        var result = await global::Patterns.Etl.Etl.From(global::Patterns.Etl.Csv.Read<Order>(_csv))
            .To(Postgres.Load(new PostgresSinkOptions<Order> { DataSource = _source, Table = Table, Schema = Order.Schema, CreateTable = false }), "bench")
            .RunAsync(new EtlRunOptions { Restart = true, Bookmarks = false });
        return result.RowsInserted;
    }

    [Benchmark]
    public async Task<ulong> CsvHelperCopy()
    {
        await using var connection = await _source.OpenConnectionAsync();
        await using var importer = await connection.BeginBinaryImportAsync($"COPY {Table} ({Columns}) FROM STDIN (FORMAT BINARY)");
        using var csv = CsvReader.FromFile(_csv, CsvReaderOptions.Default, FileOptions.SequentialScan);
        foreach (var order in csv.GetRecords<OrderPoco>())
        {
            Write(importer, order.Id, order.CustomerId, order.Amount, order.PlacedAt, order.Status, order.Region, order.Product, order.Channel, string.IsNullOrEmpty(order.Note) ? null : order.Note, order.Email);
        }

        return await importer.CompleteAsync();
    }

    [Benchmark]
    public async Task<long> DataflowPipeline()
    {
        // ETLBox's shape: a source block, a BatchBlock, and a destination block that bulk-copies each batch (one COPY per batch).
        long written = 0;
        var batches = new BatchBlock<Order>(50_000, new GroupingDataflowBlockOptions { BoundedCapacity = 100_000 });
        var copy = new ActionBlock<Order[]>(
            async batch =>
            {
                await using var connection = await _source.OpenConnectionAsync();
                await using var importer = await connection.BeginBinaryImportAsync($"COPY {Table} ({Columns}) FROM STDIN (FORMAT BINARY)");
                foreach (var o in batch)
                {
                    Write(importer, o.Id, o.CustomerId, o.Amount, o.PlacedAt, o.Status, o.Region, o.Product, o.Channel, o.Note, o.Email);
                }

                written += (long)await importer.CompleteAsync();
            },
            new ExecutionDataflowBlockOptions { BoundedCapacity = 2 });
        batches.LinkTo(copy, new DataflowLinkOptions { PropagateCompletion = true });
        using (var reader = Sep.Reader(o => o with { Unescape = true, CultureInfo = CultureInfo.InvariantCulture }).FromFile(_csv))
        {
            foreach (var row in reader)
            {
                var order = new Order(
                    row[0].Parse<int>(),
                    row[1].Parse<long>(),
                    row[2].Parse<decimal>(),
                    DateTime.Parse(row[3].Span, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal),
                    row[4].ToString(),
                    row[5].ToString(),
                    row[6].ToString(),
                    row[7].ToString(),
                    row[8].Span.IsEmpty ? null : row[8].ToString(),
                    row[9].ToString());
                await batches.SendAsync(order);
            }
        }

        batches.Complete();
        await copy.Completion;
        return written;
    }

    internal static void Write(NpgsqlBinaryImporter importer, int id, long customer, decimal amount, DateTime placed, string status, string region, string product, string channel, string? note, string email)
    {
        importer.StartRow();
        importer.Write(id, NpgsqlDbType.Integer);
        importer.Write(customer, NpgsqlDbType.Bigint);
        importer.Write(amount, NpgsqlDbType.Numeric);
        importer.Write(DateTime.SpecifyKind(placed, DateTimeKind.Utc), NpgsqlDbType.TimestampTz);
        importer.Write(status, NpgsqlDbType.Text);
        importer.Write(region, NpgsqlDbType.Text);
        importer.Write(product, NpgsqlDbType.Text);
        importer.Write(channel, NpgsqlDbType.Text);
        if (note is null)
        {
            importer.WriteNull();
        }
        else
        {
            importer.Write(note, NpgsqlDbType.Text);
        }

        importer.Write(email, NpgsqlDbType.Text);
    }

    private async Task ExecuteAsync(string sql)
    {
        await using var command = _source.CreateCommand(sql);
        await command.ExecuteNonQueryAsync();
    }
}
