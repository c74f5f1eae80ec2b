using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

/// <summary>Byte budgets of the holding stages: DistinctBy, Aggregate and the join's build side fail naming the stage and the budget; the LRU lookup evicts; the sort spills.</summary>
public sealed class StageMemoryTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string Key(int i) => new string('a', 40) + i.ToString("D10", System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public async Task DistinctBy_KeysBeyondTheByteBudget_FailNamingTheStageAndTheBudget()
    {
        // Each 50-character key costs 24 + 100 + 32 = 156 bytes: 64 fit in 10,000, the 65th does not.
        var rows = Enumerable.Range(0, 200).Select(i => Key(i / 2)).ToList();

        var run = () => Etl.From(rows).DistinctBy(k => k, maxBytes: 10_000, spill: EtlSpill.Off).To(new ListSink<string>(), "dedupe").RunAsync();

        var error = (await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>()).Which;
        error.Message.Should().Be("ETL job 'dedupe' stopped: the DistinctBy stage would hold 65 keys in about 10,140 bytes, more than its memory budget of 10,000 bytes (maxBytes). De-duplicate in the target instead (a merge on the key keeps the last row), or raise maxBytes.");
        error.Stage.Should().Be("DistinctBy");
        error.MaxBytes.Should().Be(10_000);
    }

    [Fact]
    public async Task DistinctBy_WithinTheByteBudget_KeepsTheFirstOfEachKey()
    {
        var sink = new ListSink<string>();
        var rows = Enumerable.Range(0, 640).Select(i => Key(i % 64)).ToList();

        await Etl.From(rows).DistinctBy(k => k, maxBytes: 10_000).To(sink).RunAsync();

        sink.Rows.Should().Equal(Enumerable.Range(0, 64).Select(Key));
    }

    [Fact]
    public async Task Aggregate_GroupsBeyondTheByteBudget_FailNamingTheStage()
    {
        // An int key and a long accumulator cost 4 + 8 + 32 = 44 bytes a group: 22 fit in 1,000.
        var run = () => Etl.From(Enumerable.Range(0, 100)).Aggregate(i => i % 50, _ => 0L, (sum, i) => sum + i, (k, sum) => sum, maxBytes: 1_000, spill: EtlSpill.Off).To(new ListSink<long>(), "totals").RunAsync();

        var error = (await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>()).Which;
        error.Message.Should().StartWith("ETL job 'totals' stopped: the Aggregate stage would hold 23 groups in about 1,012 bytes, more than its memory budget of 1,000 bytes (maxBytes).");
        error.Stage.Should().Be("Aggregate");
    }

    [Fact]
    public async Task Aggregate_AGrowingAccumulator_IsMeasuredAgainAsItGrows()
    {
        // One group: 32 + 4 + (24 + 2 × length) bytes, over 1,000 once the text has 471 characters.
        var run = () => Etl.From(Enumerable.Range(0, 1_000)).Aggregate(_ => 1, _ => string.Empty, (text, _) => text + "x", (k, text) => text.Length, maxBytes: 1_000, spill: EtlSpill.Off).To(new ListSink<int>(), "grow").RunAsync();
        var fits = new ListSink<int>();

        (await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>()).Which.Message.Should().Contain("would hold 1 groups in about 1,002 bytes");
        await Etl.From(Enumerable.Range(0, 470)).Aggregate(_ => 1, _ => string.Empty, (text, _) => text + "x", (k, text) => text.Length, maxBytes: 1_000).To(fits).RunAsync();
        fits.Rows.Should().Equal(470);
    }

    [Fact]
    public async Task Aggregate_AnAccumulatorChangedInPlace_IsMeasuredAgainAsItGrows()
    {
        // One group whose list add changes in place (the same object before and after): 32 + 4 + (24 + 8 × count)
        // bytes, over 1,000 once the list holds 118 items.
        var run = () => Etl.From(Enumerable.Range(0, 1_000))
            .Aggregate(_ => 1, _ => new List<int>(), (list, i) => { list.Add(i); return list; }, (k, list) => list.Count, maxBytes: 1_000, accumulatorSize: list => 24 + (8L * list.Count), spill: EtlSpill.Off)
            .To(new ListSink<int>(), "in-place")
            .RunAsync();

        (await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>()).Which.Message.Should().Contain("would hold 1 groups in about 1,004 bytes");
    }

    [Fact]
    public async Task Join_BuildSideBeyondTheByteBudget_FailsNamingTheStageAndTheSource()
    {
        // Each right row of 100 characters costs 24 + 200 + 32 = 256 bytes: 7 fit in 2,000.
        var right = new AsyncEnumerableSource<string>(Async(Enumerable.Range(0, 20).Select(i => i.ToString("D100", System.Globalization.CultureInfo.InvariantCulture))), "dim");

        var run = () => Etl.From(new[] { 1 }).Join(right, l => l, r => r.Length, (l, r) => r, maxBuildBytes: 2_000, spill: EtlSpill.Off).To(new ListSink<string>(), "joined").RunAsync();

        var error = (await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>()).Which;
        error.Message.Should().StartWith("ETL job 'joined' stopped: the Join stage would hold 8 rows of its build side 'dim' in about 2,048 bytes, more than its memory budget of 2,000 bytes (maxBuildBytes).");
        error.Stage.Should().Be("Join");
    }

    [Fact]
    public async Task Join_InMemory_NullKeyRightRows_DoNotCountTowardTheBuildBudgets()
    {
        // 50 right rows of 100 characters have a null key (they match nothing), 3 have a key: only those 3 are held,
        // well within 10 rows and 2,000 bytes (each row costs 24 + 200 + 32 = 256 bytes).
        var text = Enumerable.Range(0, 53).Select(i => i.ToString("D100", System.Globalization.CultureInfo.InvariantCulture)).ToList();
        var right = new AsyncEnumerableSource<string>(Async(text), "dim");
        var joined = new ListSink<string>();

        await Etl.From(new[] { text[0], text[26], text[52] })
            .Join(right, l => l, r => int.Parse(r, System.Globalization.CultureInfo.InvariantCulture) % 26 == 0 ? r : null!, (l, r) => r, maxBuildRows: 10, maxBuildBytes: 2_000, spill: EtlSpill.Off)
            .To(joined, "joined")
            .RunAsync();

        joined.Rows.Should().Equal(text[0], text[26], text[52]);
    }

    [Fact]
    public void ByteBudget_OnATypeItCannotMeasure_AsksForAMeasure()
    {
        var right = new AsyncEnumerableSource<Order>(Async(SqliteLoadTests.Generated(1)), "orders");

        var join = () => Etl.From(new[] { 1 }).Join(right, l => l, r => r.Id, (l, r) => r, maxBuildBytes: 1_000);
        var dedupe = () => Etl.From(SqliteLoadTests.Generated(1)).DistinctBy(o => o, maxBytes: 1_000);

        join.Should().Throw<ArgumentException>().WithMessage("Join has a byte budget, but cannot measure a Order by itself (only strings and types without references): pass rightSize: r => ....*").Which.ParamName.Should().Be("rightSize");
        dedupe.Should().Throw<ArgumentException>().Which.ParamName.Should().Be("keySize");
        Etl.From(SqliteLoadTests.Generated(1)).Join(right, o => o.Id, r => r.Id, (l, r) => r, maxBuildBytes: 1_000, rightSize: Order.Schema.EstimateSize).Should().NotBeNull();
    }

    [Fact]
    public async Task LruLookup_ByteBudget_EvictsTheLeastRecentlyUsed()
    {
        // An int key and a 100-character value cost 64 + 4 + 224 = 292 bytes an entry.
        var keys = Enumerable.Range(0, 20).Concat(Enumerable.Range(0, 20)).ToList();

        var (tenFit, tenRows) = await LookUpAsync(keys, maxBytes: 2_920);
        var (twentyFit, twentyRows) = await LookUpAsync(keys, maxBytes: 5_840);
        var (noneFit, _) = await LookUpAsync(keys, maxBytes: 100);

        tenFit.Should().Be(40, "ten entries fit, so the second pass finds none of the twenty keys cached");
        twentyFit.Should().Be(20, "all twenty fit, so the second pass reads nothing");
        noneFit.Should().Be(40, "an entry larger than the budget is not cached");
        tenRows.Should().Equal(twentyRows).And.Equal(keys.Select(k => $"{k}:{Value(k)}"));

        static string Value(int key) => key.ToString("D100", System.Globalization.CultureInfo.InvariantCulture);

        static async Task<(int Loads, List<string> Rows)> LookUpAsync(List<int> keys, long maxBytes)
        {
            var loads = 0;
            var lookup = EtlLookup.Lru<int, string>((k, _) => { loads++; return new ValueTask<string?>(Value(k)); }, capacity: 1_000, maxBytes: maxBytes);
            var sink = new ListSink<string>();
            await Etl.From(keys).Lookup(lookup, k => k, (k, v) => $"{k}:{v}").To(sink).RunAsync();
            return (loads, sink.Rows);
        }
    }

    [Fact]
    public async Task OrderBy_ByteBudget_SpillsBeforeTheRowBudget()
    {
        var orders = SqliteLoadTests.Generated(2_500);
        const long budget = 50_000;
        long bytes = 0;
        var expectedSpills = 0;
        foreach (var order in orders)
        {
            bytes += 32 + Order.Schema.EstimateSize(order);
            if (bytes >= budget)
            {
                expectedSpills++;
                bytes = 0;
            }
        }

        var bounded = new SpillProbe(_dir.Path);
        var unbounded = new SpillProbe(_dir.Path);

        await Etl.From(orders).OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 100_000, tempDirectory: _dir.Path, memoryBudgetBytes: budget).To(bounded).RunAsync(new EtlRunOptions { BatchSize = 100 });
        await Etl.From(orders).OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 100_000, tempDirectory: _dir.Path).To(unbounded).RunAsync(new EtlRunOptions { BatchSize = 100 });

        expectedSpills.Should().BeGreaterThan(5);
        bounded.SpillFilesAtFirstWrite.Should().Be(expectedSpills);
        unbounded.SpillFilesAtFirstWrite.Should().Be(0);
        bounded.Rows.Select(o => o.CustomerId).Should().BeInAscendingOrder();
        bounded.Rows.OrderBy(o => o.Id).Should().Equal(orders);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty("the run's spill folder goes once the runs are merged");
    }

    private static async IAsyncEnumerable<T> Async<T>(IEnumerable<T> rows)
    {
        foreach (var row in rows)
        {
            await Task.Yield();
            yield return row;
        }
    }

    /// <summary>Counts the sort's spill files (in its run's spill folder) when the first batch arrives (they are deleted once merged).</summary>
    private sealed class SpillProbe(string directory) : EtlSink<Order>
    {
        public int? SpillFilesAtFirstWrite { get; private set; }

        public List<Order> Rows { get; } = [];

        public override string Name => "probe";

        public override ValueTask<EtlSinkWriter<Order>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer(this));

        private sealed class Writer(SpillProbe probe) : EtlSinkWriter<Order>
        {
            public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<Order> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                probe.SpillFilesAtFirstWrite ??= System.IO.Directory.GetFiles(probe.Folder, "*.csv", SearchOption.AllDirectories).Length;
                probe.Rows.AddRange(rows.ToArray());
                return new(new EtlLoadCounts(rows.Length, 0, 0));
            }

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => default;
        }

        private string Folder => directory;
    }
}
