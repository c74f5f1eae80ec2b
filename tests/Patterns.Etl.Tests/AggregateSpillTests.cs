using System.Collections.Concurrent;
using System.Globalization;

namespace Patterns.Etl.Tests;

/// <summary>
/// Aggregate (and DistinctBy, which shares its engine) past its byte budget when a partition does not fit either: it
/// splits again with another hash, up to 8 splits, and finishes a partition no hash splits in slices of the budget;
/// the groups equal the in-memory run's, in the same order, every pass within the budget, no file left behind.
/// </summary>
public sealed class AggregateSpillTests : IDisposable
{
    /// <summary>A group of the tests' folds: 32 bytes of entry, a 4-byte key (or 24 for a <see cref="Clash"/>) and a 24-byte accumulator.</summary>
    private const long Entry = 32;

    private const long Accumulator = 24;

    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Aggregate_ManyKeysAndATinyBudget_SplitsAtSeveralDepths_SameGroupsInTheSameOrder()
    {
        // About 14,000 keys at about 16 groups a pass: the partitions split again at depth 1 and 2.
        var random = new Random(5);
        var sales = Enumerable.Range(0, 40_000).Select(i => new Sale(i, random.Next(15_000), random.Next(1_000))).ToList();
        var events = new ConcurrentQueue<EtlSpillEvent>();

        var spilled = await RunAsync(sales, s => s.Group, 1_000, events);

        spilled.Should().Equal(InMemory(sales, s => s.Group));
        spilled.Should().HaveCountGreaterThan(13_000);
        events.Should().Contain(e => e.What == "split" && e.Depth == 1).And.Contain(e => e.What == "split" && e.Depth == 2);
        Tables(events).Should().OnlyContain(e => e.Bytes <= 1_000 + Entry + 4 + Accumulator, "a pass holds at most the budget and the group that passed it");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Aggregate_KeysWhoseHashesAllCollide_FinishesInSlices_SameGroupsInTheSameOrder()
    {
        // 2,500 keys of one hash code, about 50 groups a pass: no hash splits them. Before, each depth finished only a
        // pass's worth of keys and the run failed after 24 splits; now, past one split that leaves them together, they
        // are finished in slices of the budget.
        var sales = Enumerable.Range(0, 5_000).Select(i => new Sale(i, i % 2_500, i)).ToList();
        var events = new ConcurrentQueue<EtlSpillEvent>();

        var spilled = await RunAsync(sales, s => new Clash(s.Group), 4_000, events, keySize: _ => 24);

        spilled.Should().Equal(InMemory(sales, s => new Clash(s.Group)));
        events.Should().ContainSingle(e => e.What == "slices").Which.Depth.Should().Be(2, "the top pass and depth 1 sent every spilled key to one partition");
        events.Where(e => e.What == "split").Should().BeEmpty("no hash sent these keys to two partitions");
        Tables(events).Should().OnlyContain(e => e.Bytes <= 4_000 + Entry + 24 + Accumulator);
        Tables(events).Should().HaveCountGreaterThan(40, "each slice finishes a budget's worth of keys");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task DistinctBy_KeysWhoseHashesAllCollide_FinishesInSlices_SameRowsInTheSameOrder()
    {
        var rows = Enumerable.Range(0, 6_000).Select(i => new Sale(i, i % 3_000, i)).ToList();
        var expected = new ListSink<Sale>();
        var spilled = new ListSink<Sale>();
        var events = new ConcurrentQueue<EtlSpillEvent>();
        await Etl.From(rows).DistinctBy(s => new Clash(s.Group)).To(expected).RunAsync();

        // A key costs 24 + 32 bytes: about 70 fit in 4,000, of 3,000 that share one hash code.
        await Etl.From(rows).DistinctBy(s => new Clash(s.Group), maxBytes: 4_000, keySize: _ => 24, spill: Watched(events)).To(spilled).RunAsync();

        expected.Rows.Should().HaveCount(3_000);
        spilled.Rows.Should().Equal(expected.Rows);
        events.Should().ContainSingle(e => e.What == "slices");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Aggregate_KeysThatShareTheirLowHashBits_SplitApart()
    {
        // Every key is a multiple of 2^20, so their hash codes share their low 20 bits.
        var sales = Enumerable.Range(0, 8_000).Select(i => new Sale(i, (i * 7 % 2_048) << 20, i % 13)).ToList();
        var events = new ConcurrentQueue<EtlSpillEvent>();

        var spilled = await RunAsync(sales, s => s.Group, 1_000, events);

        spilled.Should().Equal(InMemory(sales, s => s.Group));
        spilled.Should().HaveCount(2_048);
        events.Should().Contain(e => e.What == "split" && e.Depth == 0 && e.Rows == 16).And.Contain(e => e.What == "split" && e.Depth == 1);
        Tables(events).Should().OnlyContain(e => e.Bytes <= 1_000 + Entry + 4 + Accumulator);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Aggregate_SkewedKeys_AHotKeyAndACrowdedPartition_SameGroupsInTheSameOrder()
    {
        // Half the rows are one key; 600 keys share one first-level partition (about 12 budgets of groups); 2,000 keys
        // spread over the rest. The crowded partition splits again at depth 1.
        var crowded = CollidingKeys(600);
        var random = new Random(11);
        var sales = Enumerable.Range(0, 20_000).Select(i => new LongSale(
            i,
            (i % 2) switch
            {
                0 => 42L,
                _ when i % 3 == 0 => crowded[random.Next(crowded.Count)],
                _ => 1_000_000_007L + random.Next(2_000),
            },
            random.Next(1_000))).ToList();
        var events = new ConcurrentQueue<EtlSpillEvent>();
        var spilled = new ListSink<LongTotal>();

        await Etl.From(sales).Aggregate(s => s.Key, _ => default(Fold), Fold.Add, LongTotal.Of, maxBytes: 4_000, spill: Watched(events)).To(spilled).RunAsync();

        var expected = new ListSink<LongTotal>();
        await Etl.From(sales).Aggregate(s => s.Key, _ => default(Fold), Fold.Add, LongTotal.Of).To(expected).RunAsync();
        spilled.Rows.Should().Equal(expected.Rows);
        spilled.Rows.Should().Equal(sales.GroupBy(s => s.Key).Select(g => LongTotal.Of(g.Key, g.Aggregate(default(Fold), Fold.Add))), "LINQ's GroupBy keeps each key's first-row order too");
        spilled.Rows[0].Count.Should().Be(10_000, "the hot key came first");
        events.Should().Contain(e => e.What == "split" && e.Depth == 1);
        Tables(events).Should().OnlyContain(e => e.Bytes <= 4_000 + Entry + 8 + Accumulator);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Aggregate_TupleAndRecordKeysOfLongsWithEqualHalves_SpillAndMatchTheInMemoryRun()
    {
        // Keys of longs with equal halves all share one 32-bit hash code (so the in-memory reference, a Dictionary, is
        // slow with many); tuples and records hash on their longs' 64 bits, and split.
        var sales = Enumerable.Range(0, 3_600).Select(i => new LongSale(i, ((long)(i % 1_200) << 32) | (uint)(i % 1_200), i % 17)).ToList();
        var events = new ConcurrentQueue<EtlSpillEvent>();

        var tuples = await RunAsync(sales, s => (s.Key, s.Key), 2_000, events);
        var records = await RunAsync(sales, s => new WideKey(s.Key, -s.Key), 2_000, events, keySize: _ => 40);

        tuples.Should().Equal(InMemory(sales, s => (s.Key, s.Key))).And.HaveCount(1_200);
        records.Should().Equal(InMemory(sales, s => new WideKey(s.Key, -s.Key))).And.HaveCount(1_200);
        events.Where(e => e.What == "split" && e.Depth == 1).Should().HaveCountGreaterThan(20, "the partitions of both runs split again");
        events.Should().NotContain(e => e.What == "slices" && e.Depth < 3, "distinct keys split apart");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Aggregate_APartitionStillTooLargeAfterEightSplits_FinishesInSlices_SameGroupsInTheSameOrder()
    {
        // Two partitions a split: 400 keys go to the same one at every depth, and a few keys that part from them at
        // each depth make every split write two partitions. So the crowded one is split 8 times and then sliced.
        var rows = CrowdedAtEveryDepth();
        var events = new ConcurrentQueue<EtlSpillEvent>();
        var spill = new EtlSpill { TempDirectory = _dir.Path, Partitions = 2, Observer = events.Enqueue };
        var spilled = new ListSink<Chained>();
        var expected = new ListSink<Chained>();

        await Etl.From(rows).Aggregate(r => r.Key, _ => default(Chain), Chain.Add, Chained.Of, maxBytes: 1_000, spill: spill).To(spilled).RunAsync();
        await Etl.From(rows).Aggregate(r => r.Key, _ => default(Chain), Chain.Add, Chained.Of).To(expected).RunAsync();

        spilled.Rows.Should().Equal(expected.Rows, "every row of a group is folded in its order, in one pass or slice");
        events.Should().Contain(e => e.What == "split" && e.Depth == 7);
        events.Should().Contain(e => e.What == "slices" && e.Depth == EtlSpillHash.MaxDepth);
        Tables(events).Should().OnlyContain(e => e.Bytes <= 1_000 + Entry + 8 + 16);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task DistinctBy_APartitionStillTooLargeAfterEightSplits_FinishesInSlices_SameRowsInTheSameOrder()
    {
        var rows = CrowdedAtEveryDepth();
        var events = new ConcurrentQueue<EtlSpillEvent>();
        var spilled = new ListSink<LongSale>();
        var expected = new ListSink<LongSale>();

        await Etl.From(rows).DistinctBy(r => r.Key, maxBytes: 1_000, spill: new EtlSpill { TempDirectory = _dir.Path, Partitions = 2, Observer = events.Enqueue }).To(spilled).RunAsync();
        await Etl.From(rows).DistinctBy(r => r.Key).To(expected).RunAsync();

        spilled.Rows.Should().Equal(expected.Rows);
        events.Should().Contain(e => e.What == "slices" && e.Depth == EtlSpillHash.MaxDepth);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Aggregate_KeysEachLargerThanTheBudget_HoldsOneGroupAPass()
    {
        // A fold's group is small, but here each key alone (24 + 2 × 1,000 bytes) is over the 1,000-byte budget: a
        // pass still takes its first key, so every pass holds that one group, and every key is finished.
        var keys = Enumerable.Range(0, 200).Select(i => i.ToString(CultureInfo.InvariantCulture).PadLeft(1_000, 'k')).ToList();
        var sales = Enumerable.Range(0, 600).Select(i => new NamedSale(i, keys[(i * 7) % 200], i)).ToList();
        var events = new ConcurrentQueue<EtlSpillEvent>();

        var spilled = await RunAsync(sales, s => s.Key, 1_000, events);

        spilled.Should().Equal(InMemory(sales, s => s.Key)).And.HaveCount(200);
        Tables(events).Should().OnlyContain(e => e.Rows == 1, "a pass goes over its budget with its first key");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Aggregate_OneGroupThatGrowsPastTheBudgetAlone_InASlice_FailsClearly()
    {
        // Keys of one hash code, one row each, then one key with 1,500 rows whose list of ids grows past the budget by
        // itself. Each group costs 32 + 24 + (32 + 4) = 92 bytes, so a pass holds 44 of them: with 880 keys before it,
        // the growing key is the only key of the last slice. A group cannot be split across files, so the run fails.
        var sales = Enumerable.Range(0, 880).Select(i => new Sale(i, i, 1)).Concat(Enumerable.Range(0, 1_500).Select(i => new Sale(1_000 + i, 5_000, 1))).ToList();
        var events = new ConcurrentQueue<EtlSpillEvent>();

        var run = () => Etl.From(sales)
            .Aggregate(s => new Clash(s.Group), _ => new List<int>(), (ids, s) => { ids.Add(s.Id); return ids; }, (k, ids) => ids.Count, maxBytes: 4_000, keySize: _ => 24, accumulatorSize: ids => 32 + (4L * ids.Count), spill: Watched(events))
            .To(new ListSink<int>(), "ids")
            .RunAsync();

        var error = (await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>()).Which;
        error.Message.Should().StartWith("ETL job 'ids' stopped: the Aggregate stage would hold 1 group in about ");
        error.Message.Should().EndWith("more than its memory budget of 4,000 bytes (maxBytes). One group alone outgrew the budget, and an accumulator cannot be split across spill files: keep accumulators fixed in size (a count, a sum), or raise maxBytes.");
        error.Stage.Should().Be("Aggregate");
        events.Should().Contain(e => e.What == "slices");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        SpillTests.OpenHandlesUnder(_dir.Path).Should().Be(0);
    }

    [Fact]
    public async Task Aggregate_NullKey_FailsAsInMemory_AlsoAfterSpilling()
    {
        // Aggregate's keys are notnull: a null key fails the run in memory, and the same way once the stage spills.
        var sales = Enumerable.Range(0, 3_000).Select(i => new NamedSale(i, i == 2_500 ? null! : "k" + (i % 1_000).ToString(CultureInfo.InvariantCulture), i)).ToList();

        var inMemory = () => Etl.From(sales).Aggregate(s => s.Key, _ => default(Fold), (f, s) => f.Add(s.Amount), (k, f) => f.Count).To(new ListSink<long>()).RunAsync();
        var spilled = () => Etl.From(sales).Aggregate(s => s.Key, _ => default(Fold), (f, s) => f.Add(s.Amount), (k, f) => f.Count, maxBytes: 2_000, spill: new EtlSpill { TempDirectory = _dir.Path }).To(new ListSink<long>()).RunAsync();

        await inMemory.Should().ThrowAsync<ArgumentNullException>();
        await spilled.Should().ThrowAsync<ArgumentNullException>();
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Theory]
    [InlineData("cancel")]
    [InlineData("fail")]
    public async Task Aggregate_CancelledOrFailingWhileFinishingSlices_DeletesEveryFile(string how)
    {
        // The slices start after two levels of files (the top pass's partition, depth 1's part): stop at the third slice.
        var sales = Enumerable.Range(0, 5_000).Select(i => new Sale(i, i % 2_500, i)).ToList();
        using var cancel = new CancellationTokenSource();
        var slices = 0;
        var spill = new EtlSpill
        {
            TempDirectory = _dir.Path,
            Observer = e =>
            {
                if (e.What == "table" && e.Depth == 2 && ++slices == 3)
                {
                    if (how == "fail")
                    {
                        throw new IOException("disk full");
                    }

                    cancel.Cancel();
                }
            },
        };

        var run = () => Etl.From(sales)
            .Aggregate(s => new Clash(s.Group), _ => default(Fold), (f, s) => f.Add(s.Amount), (k, f) => f.Count, maxBytes: 4_000, keySize: _ => 24, spill: spill)
            .To(new ListSink<long>())
            .RunAsync(cancellationToken: cancel.Token);

        if (how == "fail")
        {
            (await run.Should().ThrowAsync<IOException>()).Which.Message.Should().Be("disk full");
        }
        else
        {
            (await run()).Status.Should().Be(EtlRunStatus.Stopped);
        }

        slices.Should().Be(3);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        SpillTests.OpenHandlesUnder(_dir.Path).Should().Be(0);
    }

    [Fact]
    public async Task Aggregate_DownstreamFailsWhileSlicesLeave_DeletesEveryFile()
    {
        var sales = Enumerable.Range(0, 5_000).Select(i => new Sale(i, i % 2_500, i)).ToList();
        var seen = 0;

        var run = () => Etl.From(sales)
            .Aggregate(s => new Clash(s.Group), _ => default(Fold), (f, s) => f.Add(s.Amount), (k, f) => f.Count, maxBytes: 4_000, keySize: _ => 24, spill: new EtlSpill { TempDirectory = _dir.Path })
            .Select(n => ++seen == 1_000 ? throw new InvalidOperationException("downstream failed") : n)
            .To(new ListSink<long>())
            .RunAsync();

        (await run.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Be("downstream failed");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        SpillTests.OpenHandlesUnder(_dir.Path).Should().Be(0);
    }

    private async Task<List<Total<TKey>>> RunAsync<TRow, TKey>(List<TRow> rows, Func<TRow, TKey> key, long budget, ConcurrentQueue<EtlSpillEvent> events, Func<TKey, long>? keySize = null)
        where TRow : IAmount
        where TKey : notnull
    {
        var sink = new ListSink<Total<TKey>>();
        await Etl.From(rows)
            .Aggregate(key, _ => default(Fold), (f, r) => f.Add(r), (k, f) => new Total<TKey>(k, f.Count, f.Sum, f.First), maxBytes: budget, keySize: keySize, spill: Watched(events))
            .To(sink)
            .RunAsync();
        return sink.Rows;
    }

    /// <summary>The in-memory Aggregate's groups: the reference each spilled run must equal, row by row.</summary>
    private static List<Total<TKey>> InMemory<TRow, TKey>(List<TRow> rows, Func<TRow, TKey> key)
        where TRow : IAmount
        where TKey : notnull
    {
        var groups = new Dictionary<TKey, Fold>();
        foreach (var row in rows)
        {
            var k = key(row);
            groups[k] = (groups.TryGetValue(k, out var fold) ? fold : default).Add(row);
        }

        return [.. groups.Select(g => new Total<TKey>(g.Key, g.Value.Count, g.Value.Sum, g.Value.First))];
    }

    private static IEnumerable<EtlSpillEvent> Tables(ConcurrentQueue<EtlSpillEvent> events) => events.Where(e => e.What == "table");

    /// <summary>Distinct keys that all go to the same one of 16 partitions at the first level.</summary>
    private static List<long> CollidingKeys(int count) =>
        Enumerable.Range(1, 100_000).Select(i => i * 7_919L).Where(k => EtlSpillHash.Partition(k, EqualityComparer<long>.Default, 0, 16) == 3).Take(count).ToList();

    /// <summary>
    /// Rows of 400 keys that go to partition 0 of 2 at all 8 depths, with, in the middle, two rows each of 3 keys per
    /// depth that go there down to that depth and then to partition 1.
    /// </summary>
    private static List<LongSale> CrowdedAtEveryDepth()
    {
        static int Part(long key, int depth) => EtlSpillHash.Partition(key, EqualityComparer<long>.Default, depth, 2);

        static List<long> Keys(long start, int through, int last) =>
            [.. Enumerable.Range(0, 10_000_000).Select(i => start + (i * 7_919L)).Where(k => Enumerable.Range(0, through).All(d => Part(k, d) == 0) && Part(k, through) == last).Take(through == 7 && last == 0 ? 400 : 3)];

        var crowded = Keys(1, 7, 0);
        var parting = Enumerable.Range(0, EtlSpillHash.MaxDepth).SelectMany(d => Keys(5_000_000_000L * (d + 1), d, 1)).ToList();
        var random = new Random(3);
        var rows = new List<LongSale>();
        for (var i = 0; i < 4_000; i++)
        {
            rows.Add(new LongSale(rows.Count, crowded[random.Next(crowded.Count)], i));
        }

        foreach (var key in parting.Concat(parting))
        {
            rows.Add(new LongSale(rows.Count, key, 0));
        }

        for (var i = 0; i < 2_000; i++)
        {
            rows.Add(new LongSale(rows.Count, crowded[random.Next(crowded.Count)], i));
        }

        return rows;
    }

    private EtlSpill Watched(ConcurrentQueue<EtlSpillEvent> events) => new() { TempDirectory = _dir.Path, Observer = events.Enqueue };

    public interface IAmount
    {
        int Id { get; }

        long Amount { get; }
    }

    public sealed record Sale(int Id, int Group, long Amount) : IAmount;

    public sealed record LongSale(int Id, long Key, long Amount) : IAmount;

    public sealed record NamedSale(int Id, string Key, long Amount) : IAmount;

    public sealed record Total<TKey>(TKey Key, long Count, long Sum, int First);

    public sealed record LongTotal(long Key, long Count, long Sum, int First)
    {
        public static LongTotal Of(long key, Fold f) => new(key, f.Count, f.Sum, f.First);
    }

    public record WideKey(long A, long B);

    /// <summary>A fold whose result depends on the order of its rows (the first row's id), 24 bytes.</summary>
    public readonly record struct Fold(long Count, long Sum, int First)
    {
        public static Fold Add(Fold f, LongSale s) => f.Add(s);

        public Fold Add(IAmount row) => new(Count + 1, Sum + row.Amount, Count == 0 ? row.Id : First);

        public Fold Add(long amount) => new(Count + 1, Sum + amount, First);
    }

    /// <summary>A fold over every row's id in order (16 bytes): any row folded out of order changes it.</summary>
    public readonly record struct Chain(long Hash, long Count)
    {
        public static Chain Add(Chain c, LongSale s) => new((c.Hash * 31) + s.Id, c.Count + 1);
    }

    public sealed record Chained(long Key, long Hash, long Count)
    {
        public static Chained Of(long key, Chain c) => new(key, c.Hash, c.Count);
    }

    /// <summary>A key equal by its id whose hash code is the same for every key: no hash can split such keys.</summary>
    public sealed class Clash(int id) : IEquatable<Clash>
    {
        public int Id { get; } = id;

        public bool Equals(Clash? other) => other is not null && other.Id == Id;

        public override bool Equals(object? obj) => Equals(obj as Clash);

        public override int GetHashCode() => 7;
    }
}
