namespace Patterns.Etl.Tests;

/// <summary>
/// Tuple, record and anonymous-type keys are partitioned on their components' 64-bit hashes: their own 32-bit hash
/// codes fold a <c>long</c>'s halves together, so keys of longs with equal halves all hashed alike and could never be
/// split apart by the spilling stages.
/// </summary>
public sealed class SpillKeyHashTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static IEnumerable<long> EqualHalves => Enumerable.Range(1, 1_000).Select(i => ((long)i << 32) | (uint)i);

    [Fact]
    public void Partitions_CompositeKeysOfLongsWithEqualHalves_SpreadOverEveryPartition()
    {
        ShouldSpread(EqualHalves.Select(k => (k, k)).ToList());
        ShouldSpread(EqualHalves.Select(k => new WideKey(k, k)).ToList());
        ShouldSpread(EqualHalves.Select(k => new WideStruct(k, k)).ToList());
        ShouldSpread(EqualHalves.Select(k => new DerivedKey(k, k, k)).ToList());
        ShouldSpread(EqualHalves.Select(k => Tuple.Create(k, k)).ToList());
        ShouldSpread(EqualHalves.Select(k => new { Region = k, Id = k }).ToList());
        ShouldSpread(EqualHalves.Select(k => ((long?)k, new WideKey(k, k))).ToList());
    }

    [Fact]
    public void Partitions_EqualCompositeKeys_GoToTheSamePartition()
    {
        for (var depth = 0; depth < 4; depth++)
        {
            foreach (var i in Enumerable.Range(0, 200))
            {
                var text = "k" + i.ToString(System.Globalization.CultureInfo.InvariantCulture);
                SamePartition((text, (long)i), (new string(text.AsSpan()), (long)i), depth);
                SamePartition(new NamedKey(text, i), new NamedKey(new string(text.AsSpan()), i), depth);

                // A record whose equality the programmer wrote keeps its own hash code, alone or inside a tuple.
                SamePartition(new CaseKey(text), new CaseKey(text.ToUpperInvariant()), depth);
                SamePartition((1L, new CaseKey(text)), (1L, new CaseKey(text.ToUpperInvariant())), depth);
                SamePartition(new DateTimeOffset(2026, 1, 1, 12, 0, 0, TimeSpan.FromHours(i % 12)), new DateTimeOffset(2026, 1, 1, 12 - (i % 12), 0, 0, TimeSpan.Zero), depth);
            }
        }
    }

    [Fact]
    public async Task DistinctBy_TupleKeysOfLongsWithEqualHalves_SpillAndMatchTheInMemoryRun()
    {
        var rows = Enumerable.Range(0, 6_000).Select(i => ((long)(i % 3_000) << 32) | (uint)(i % 3_000)).ToList();
        var expected = new ListSink<long>();
        var spilled = new ListSink<long>();
        await Etl.From(rows).DistinctBy(k => (k, k)).To(expected).RunAsync();

        // A (long, long) key costs 16 + 32 bytes: under 100 fit in 4,000, of 3,000.
        await Etl.From(rows).DistinctBy(k => (k, k), maxBytes: 4_000, spill: new EtlSpill { TempDirectory = _dir.Path }).To(spilled).RunAsync();

        expected.Rows.Should().HaveCount(3_000);
        spilled.Rows.Should().Equal(expected.Rows);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Join_RecordKeysOfLongsWithEqualHalves_SpillAndMatchTheInMemoryJoin()
    {
        var right = EqualHalves.SelectMany(k => new[] { (Key: new WideKey(k, k), Side: 0), (Key: new WideKey(k, k), Side: 1) }).ToList();
        var left = EqualHalves.Where(k => k % 3 == 0).Select(k => new WideKey(k, k)).ToList();
        var events = new System.Collections.Concurrent.ConcurrentQueue<EtlSpillEvent>();
        var sink = new ListSink<(WideKey Key, int Side)>();

        await Etl.From(left)
            .Join(new AsyncEnumerableSource<(WideKey Key, int Side)>(Async(right), "right"), l => l, r => r.Key, (l, r) => (l, r.Side), maxBuildBytes: 4_000, rightSize: _ => 64, spill: new EtlSpill { TempDirectory = _dir.Path, Observer = events.Enqueue })
            .To(sink)
            .RunAsync();

        sink.Rows.Should().BeEquivalentTo(left.Join(right, l => l, r => r.Key, (l, r) => (l, r.Side)));
        events.Should().NotContain(e => e.What == "slices", "distinct keys split apart");
        events.Where(e => e.What == "table").Should().OnlyContain(e => e.Bytes <= 4_000 + 64 + 32);
    }

    private static async IAsyncEnumerable<TRow> Async<TRow>(IEnumerable<TRow> rows)
    {
        foreach (var row in rows)
        {
            await Task.Yield();
            yield return row;
        }
    }

    private static void ShouldSpread<TKey>(List<TKey> keys)
    {
        keys.Select(k => k!.GetHashCode()).Distinct().Should().ContainSingle("every {0} key hashes alike in 32 bits", typeof(TKey).Name);
        for (var depth = 0; depth < 3; depth++)
        {
            var counts = keys.GroupBy(k => EtlSpillHash.Partition(k, EqualityComparer<TKey>.Default, depth, 16)).Select(g => g.Count()).ToList();

            counts.Should().HaveCount(16, "1,000 distinct {0} keys reach all 16 partitions at depth {1}", typeof(TKey).Name, depth);
            counts.Max().Should().BeLessThan(125, "no partition takes twice its share (62.5) at depth {0}", depth);
        }
    }

    private static void SamePartition<TKey>(TKey a, TKey b, int depth)
    {
        a.Should().Be(b);
        EtlSpillHash.Partition(a, EqualityComparer<TKey>.Default, depth, 16).Should().Be(EtlSpillHash.Partition(b, EqualityComparer<TKey>.Default, depth, 16), "{0} and {1} are equal", a, b);
    }

    public record WideKey(long A, long B);

    public sealed record DerivedKey(long A, long B, long C) : WideKey(A, B);

    public readonly record struct WideStruct(long A, long B);

    public sealed record NamedKey(string Name, long Id);

    public sealed record CaseKey(string Name)
    {
        public bool Equals(CaseKey? other) => other is not null && string.Equals(Name, other.Name, StringComparison.OrdinalIgnoreCase);

        public override int GetHashCode() => StringComparer.OrdinalIgnoreCase.GetHashCode(Name);
    }
}
