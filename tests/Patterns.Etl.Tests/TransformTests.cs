using System.Text.Json.Serialization;
using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

public sealed class TransformTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task WhereSelectSelectMany_MapFilterAndSplit()
    {
        var sink = new ListSink<string>();

        var result = await Etl.From(Enumerable.Range(1, 10)).Where(i => i % 2 == 0).SelectMany(i => new[] { i, -i }).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).To(sink).RunAsync(new EtlRunOptions { BatchSize = 3 });

        sink.Rows.Should().Equal("2", "-2", "4", "-4", "6", "-6", "8", "-8", "10", "-10");
        result.RowsRead.Should().Be(10);
        result.RowsLoaded.Should().Be(10);
    }

    [Fact]
    public async Task Validate_QuarantinesFailingRowsWithStageColumnAndPosition()
    {
        var sink = new ListSink<int>();

        var result = await Etl.From(Enumerable.Range(1, 100), "numbers").Validate(i => i % 10 == 0 ? $"{i} is a multiple of 10" : null, column: "value", name: "no-tens").To(sink).RunAsync();

        sink.Rows.Should().HaveCount(90);
        result.RowsQuarantined.Should().Be(10);
        result.QuarantinedRows.Should().HaveCount(10);
        result.QuarantinedRows[0].Should().Be(new QuarantinedRow(result.RunId, "list", "no-tens", "numbers", 10, 10, "10", "value", "10 is a multiple of 10"));
    }

    [Fact]
    public async Task DistinctBy_KeepsTheFirstRowOfEachKey()
    {
        var sink = new ListSink<(int Key, string Value)>();

        await Etl.From(new[] { (1, "a"), (2, "b"), (1, "c"), (3, "d"), (2, "e") }).DistinctBy(r => r.Item1).To(sink).RunAsync();

        sink.Rows.Should().Equal((1, "a"), (2, "b"), (3, "d"));
    }

    [Fact]
    public async Task Lookup_LruCache_ReadsEachKeyOnceWhileItFits_UncachedReadsEveryRow_FullLoadsOnce()
    {
        var lruLoads = 0;
        var lru = EtlLookup.Lru<int, string>((k, _) => { lruLoads++; return new ValueTask<string?>($"dim{k}"); }, capacity: 2);
        var uncachedLoads = 0;
        var uncached = EtlLookup.Uncached<int, string>((k, _) => { uncachedLoads++; return new ValueTask<string?>(k == 3 ? null : $"dim{k}"); });
        var fullLoads = 0;
        var full = EtlLookup.Full<int, string>(_ => { fullLoads++; return Pairs(); });
        var keys = new[] { 1, 2, 1, 2, 3, 1 };
        var lruSink = new ListSink<string>();
        var uncachedSink = new ListSink<string>();
        var fullSink = new ListSink<string>();

        await Etl.From(keys).Lookup(lru, k => k, (k, v) => $"{k}:{v}").To(lruSink).RunAsync();
        await Etl.From(keys).Lookup(uncached, k => k, (k, v) => $"{k}:{v ?? "missing"}").To(uncachedSink).RunAsync();
        await Etl.From(keys).Lookup(full, k => k, (k, v) => $"{k}:{v ?? "missing"}").To(fullSink).RunAsync();

        lruSink.Rows.Should().Equal("1:dim1", "2:dim2", "1:dim1", "2:dim2", "3:dim3", "1:dim1");
        lruLoads.Should().Be(4, "1 and 2 are cached, 3 evicts 1 (the least recently used), so 1 is read again");
        uncachedSink.Rows.Should().Equal("1:dim1", "2:dim2", "1:dim1", "2:dim2", "3:missing", "1:dim1");
        uncachedLoads.Should().Be(6);
        fullSink.Rows.Should().Equal("1:one", "2:two", "1:one", "2:two", "3:missing", "1:one");
        fullLoads.Should().Be(1);

        static async IAsyncEnumerable<KeyValuePair<int, string>> Pairs()
        {
            await Task.Yield();
            yield return new(1, "one");
            yield return new(2, "two");
        }
    }

    [Fact]
    public async Task Join_HashJoinsTwoSources()
    {
        var customers = Etl.From(new[] { (Id: 1, Name: "Ada"), (Id: 2, Name: "Bo") });
        var sink = new ListSink<string>();

        await Etl.From(new[] { (Order: 10, Customer: 1), (Order: 11, Customer: 3), (Order: 12, Customer: 2), (Order: 13, Customer: 1) })
            .Join(new AsyncEnumerableSource<(int Id, string Name)>(Async(new[] { (1, "Ada"), (2, "Bo") }), "customers"), o => o.Customer, c => c.Id, (o, c) => $"{o.Order}:{c.Name}")
            .To(sink)
            .RunAsync();

        sink.Rows.Should().Equal("10:Ada", "12:Bo", "13:Ada");
        customers.Should().NotBeNull();
    }

    [Fact]
    public async Task Join_BuildSideTooLarge_FailsWithAClearError()
    {
        var run = () => Etl.From(new[] { 1 }).Join(new AsyncEnumerableSource<int>(Async(Enumerable.Range(0, 11)), "big"), l => l, r => r, (l, r) => l + r, maxBuildRows: 10).To(new ListSink<int>()).RunAsync();

        (await run.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().StartWith("The join's build side 'big' has more than 10 rows (maxBuildRows)");
    }

    [Fact]
    public async Task Aggregate_SumsByKeyAndEmitsOneRowPerKey()
    {
        var sink = new ListSink<(string Region, decimal Total, int Count)>();
        var orders = SqliteLoadTests.Generated(1_000);

        var result = await Etl.From(orders).Aggregate(o => o.Region, _ => (Total: 0m, Count: 0), (acc, o) => (acc.Total + o.Amount, acc.Count + 1), (k, acc) => (k, acc.Total, acc.Count)).To(sink).RunAsync();

        sink.Rows.OrderBy(r => r.Region).Should().Equal(orders.GroupBy(o => o.Region).OrderBy(g => g.Key).Select(g => (g.Key, g.Sum(o => o.Amount), g.Count())));
        result.Bookmark.Should().NotBeNull();
    }

    [Fact]
    public async Task OrderBy_BeyondTheMemoryBudget_SpillsAndMergesInOrder()
    {
        var orders = SqliteLoadTests.Generated(2_500);
        var sink = new ListSink<Order>();
        var before = Directory.GetFiles(_dir.Path).Length;

        await Etl.From(orders).OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 300, tempDirectory: _dir.Path).To(sink).RunAsync();

        sink.Rows.Select(o => o.CustomerId).Should().BeInAscendingOrder();

        // Records compare by value: ordered by id, the rows equal the input (a structural BeEquivalentTo of 2,500 rows took 10 minutes).
        sink.Rows.OrderBy(o => o.Id).Should().Equal(orders, "every row comes back once");
        Directory.GetFiles(_dir.Path).Length.Should().Be(before, "spill files are deleted once merged");
    }

    [Fact]
    public async Task JsonLines_RoundTrip_AndBadLinesQuarantined()
    {
        var orders = SqliteLoadTests.Generated(500);
        var path = _dir.File("orders.jsonl");
        await Etl.From(orders).To(JsonLines.Write(path, OrderJson.Default.Order)).RunAsync();
        File.AppendAllText(path, "{not json\n");
        var sink = new ListSink<Order>();

        var result = await Etl.From(JsonLines.Read(path, OrderJson.Default.Order)).To(sink).RunAsync();

        sink.Rows.Should().Equal(orders);
        result.RowsQuarantined.Should().Be(1);
        result.QuarantinedRows[0].Line.Should().Be(501);
        result.QuarantinedRows[0].Raw.Should().Be("{not json");
    }

    [Fact]
    public async Task CsvSource_MissingColumn_FailsNamingIt()
    {
        var path = _dir.File("short.csv");
        File.WriteAllText(path, "id,amount\n1,2\n");

        var run = () => Etl.From(Csv.Read<Order>(path)).To(new ListSink<Order>()).RunAsync();

        (await run.Should().ThrowAsync<InvalidDataException>()).Which.Message.Should().Be($"CSV file '{path}' has no column 'customer_id', 'placed_at', 'status', 'region', 'product', 'channel', 'note', 'email' (its header is id,amount).");
    }

    [Fact]
    public async Task Progress_ReportsRowsBytesAndEta()
    {
        var csv = _dir.File("orders.csv");
        OrderData.Write(csv, 3_000);
        var reports = new List<EtlProgress>();

        await Etl.From(Csv.Read<Order>(csv)).To(new ListSink<Order>()).RunAsync(new EtlRunOptions { BatchSize = 1_000, Progress = new SyncProgress(reports.Add) });

        reports.Should().HaveCount(4, "one report per batch and one at the end");
        reports.Select(r => r.RowsLoaded).Should().Equal(1_000, 2_000, 3_000, 3_000);
        reports[^1].Length.Should().Be(new FileInfo(csv).Length);
        reports[^1].BytesRead.Should().Be(new FileInfo(csv).Length);
        reports[^1].Fraction.Should().Be(1.0);
        reports[^1].Eta.Should().Be(TimeSpan.Zero);
    }

    [Fact]
    public async Task Progress_ReportsRowsInOutAndQuarantinedPerStage_AndTheMeterCountsRowsOutPerStage()
    {
        // 1 to 10: Where keeps the even ones (5), Validate refuses 4 (quarantined: 4 left), SelectMany makes two rows of
        // each (8), Select maps them (8), and the sink loads 8.
        var job = "stages-" + Guid.NewGuid().ToString("N");
        var measured = new Dictionary<string, long>(StringComparer.Ordinal);
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == EtlDiagnostics.MeterName && instrument.Name == "patterns.etl.stage.rows")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            string? ofJob = null, stage = null;
            foreach (var tag in tags)
            {
                if (tag.Key == "patterns.etl.job")
                {
                    ofJob = (string?)tag.Value;
                }
                else if (tag.Key == "patterns.etl.stage")
                {
                    stage = (string?)tag.Value;
                }
            }

            if (ofJob == job)
            {
                lock (measured)
                {
                    measured[stage!] = measured.GetValueOrDefault(stage!) + value;
                }
            }
        });
        listener.Start();
        var reports = new List<EtlProgress>();

        var result = await Etl.From(Enumerable.Range(1, 10))
            .Where(i => i % 2 == 0)
            .Validate(i => i == 4 ? "four is refused" : null, name: "not-four")
            .SelectMany(i => new[] { i, i * 10 })
            .Select(i => i + 1)
            .To(new ListSink<int>(), job)
            .RunAsync(new EtlRunOptions { BatchSize = 3, Progress = new SyncProgress(reports.Add) });

        result.RowsLoaded.Should().Be(8);
        reports[^1].Stages.Select(s => (s.Index, s.Stage, s.RowsIn, s.RowsOut, s.RowsQuarantined)).Should().Equal(
            (0, "source", 10L, 10L, 0L),
            (1, "stage 1 (Where)", 10L, 5L, 0L),
            (2, "stage 2 (Validate 'not-four')", 5L, 4L, 1L),
            (3, "stage 3 (SelectMany)", 4L, 8L, 0L),
            (4, "stage 4 (Select)", 8L, 8L, 0L),
            (5, "sink", 8L, 8L, 0L));
        reports.Should().AllSatisfy(r => r.Stages[^1].RowsOut.Should().Be(r.RowsLoaded, "the sink's rows out are the rows loaded"));
        reports.Select(r => r.Stages[1].RowsIn).Should().BeInAscendingOrder();
        lock (measured)
        {
            measured.Should().BeEquivalentTo(new Dictionary<string, long>
            {
                ["source"] = 10,
                ["stage 1 (Where)"] = 5,
                ["stage 2 (Validate 'not-four')"] = 4,
                ["stage 3 (SelectMany)"] = 8,
                ["stage 4 (Select)"] = 8,
                ["sink"] = 8,
            });
        }
    }

    [Fact]
    public async Task Progress_PerStage_CountsTheSourcesBadRows_AndAStageThatHoldsRows()
    {
        // 100 CSV rows, every tenth malformed: the source reads 100, quarantines 10 and hands on 90; the aggregate takes
        // the 90 and hands on one row per region.
        var csv = _dir.File("orders.csv");
        OrderData.Write(csv, 100, badEvery: 10);
        var reports = new List<EtlProgress>();
        var sink = new ListSink<(string Region, int Count)>();

        await Etl.From(Csv.Read<Order>(csv))
            .Aggregate(o => o.Region, _ => 0, (n, _) => n + 1, (region, n) => (region, n))
            .To(sink)
            .RunAsync(new EtlRunOptions { Progress = new SyncProgress(reports.Add) });

        var groups = sink.Rows.Count;
        sink.Rows.Sum(r => r.Count).Should().Be(90);
        reports[^1].Stages.Select(s => (s.Stage, s.RowsIn, s.RowsOut, s.RowsQuarantined)).Should().Equal(
            ("source", 100L, 90L, 10L),
            ("stage 1 (Aggregate)", 90L, (long)groups, 0L),
            ("sink", (long)groups, (long)groups, 0L));
    }

    [Fact]
    public async Task Memory_StaysFlat_WhileALargeSourceStreamsThroughASink()
    {
        const int rows = 1_000_000;
        long peak = 0;
        var reports = 0;
        var progress = new SyncProgress(_ =>
        {
            // Live memory (after a collection) every tenth batch: what the pipeline holds, not garbage awaiting a GC.
            if (++reports % 10 == 0)
            {
                peak = Math.Max(peak, GC.GetTotalMemory(forceFullCollection: true));
            }
        });
        var sink = new CountingSink();
        GC.Collect();
        var baseline = GC.GetTotalMemory(forceFullCollection: true);

        var result = await Etl.From(Generate(rows)).Select(o => o with { Status = "seen" }).To(sink).RunAsync(new EtlRunOptions { BatchSize = 5_000, Progress = progress });

        result.RowsLoaded.Should().Be(rows);
        sink.Rows.Should().Be(rows);
        (peak - baseline).Should().BeLessThan(32L << 20, "the pipeline holds at most two batches of 5,000 rows (the whole source would be hundreds of MB)");

        static async IAsyncEnumerable<Order> Generate(int count)
        {
            var random = new Random(7);
            for (var i = 1; i <= count; i++)
            {
                yield return OrderData.Make(random, i);
            }

            await Task.CompletedTask;
        }
    }

    private static async IAsyncEnumerable<T> Async<T>(IEnumerable<T> items)
    {
        foreach (var item in items)
        {
            await Task.Yield();
            yield return item;
        }
    }

    private sealed class CountingSink : EtlSink<Order>
    {
        public long Rows;

        public override string Name => "count";

        public override ValueTask<EtlSinkWriter<Order>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer(this));

        private sealed class Writer(CountingSink sink) : EtlSinkWriter<Order>
        {
            public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<Order> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                sink.Rows += rows.Length;
                return new(new EtlLoadCounts(rows.Length, 0, 0));
            }

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => default;
        }
    }
}

[JsonSerializable(typeof(Order))]
internal sealed partial class OrderJson : JsonSerializerContext;
