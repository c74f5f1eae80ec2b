using System.Collections.Concurrent;
using System.Runtime.CompilerServices;

namespace Patterns.Etl.Tests;

/// <summary>The join past its build budget: a grace hash join through spill files gives the same pairs as in memory, and leaves no file behind.</summary>
public sealed class JoinSpillTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private EtlSpill Spill => new() { TempDirectory = _dir.Path };

    [Fact]
    public async Task Join_BuildSideBeyondTheBudget_GivesTheSamePairsAsInMemory()
    {
        var expected = new ListSink<Pair>();
        var spilled = new ListSink<Pair>();
        var folderSeen = false;
        await Etl.From(Left()).Join(RightSource(), l => l.Key!, r => r.Key!, Pair.Of).To(expected).RunAsync();

        // About 3,000 right rows of some 100 bytes each, against a 4,000-byte budget: every partition is joined in slices.
        var result = await Etl.From(Left())
            .Join(RightSource(), l => l.Key!, r => r.Key!, Pair.Of, maxBuildBytes: 4_000, rightSize: Measure, spill: Spill)
            .Select(p =>
            {
                folderSeen |= Directory.GetDirectories(_dir.Path, "patterns-etl-spill-*").Length == 1;
                return p;
            })
            .To(spilled, "joined")
            .RunAsync();

        var reference = Left().Where(l => l.Key is not null).Join(Right().Where(r => r.Key is not null), l => l.Key, r => r.Key, Pair.Of).ToList();
        expected.Rows.Should().BeEquivalentTo(reference, "the in-memory join is an inner join: null keys and unmatched rows give nothing");
        Sorted(spilled.Rows).Should().Equal(Sorted(expected.Rows));
        spilled.Rows.GroupBy(p => p.LeftId).Max(g => g.Count()).Should().BeGreaterThan(1, "duplicate right keys give one pair each");
        result.RowsLoaded.Should().Be(reference.Count);
        folderSeen.Should().BeTrue("the joined rows came from the run's spill folder");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        SpillTests.OpenHandlesUnder(_dir.Path).Should().Be(0);
    }

    [Fact]
    public async Task Join_OneKeyOnEveryRow_BeyondTheBudget_StillJoinsEveryPair()
    {
        // A key no hash can split: its partition is joined in slices of the budget, the left rows read once a slice.
        var right = Enumerable.Range(0, 500).Select(i => new RightRow(i, "same", new string('x', 50))).ToList();
        var left = Enumerable.Range(0, 20).Select(i => new LeftRow(i, i % 2 == 0 ? "same" : "other")).ToList();
        var sink = new ListSink<Pair>();

        await Etl.From(left).Join(new AsyncEnumerableSource<RightRow>(Async(right), "right"), l => l.Key!, r => r.Key!, Pair.Of, maxBuildBytes: 2_000, rightSize: Measure, spill: Spill).To(sink).RunAsync();

        Sorted(sink.Rows).Should().Equal(Sorted(left.Where(l => l.Key == "same").SelectMany(l => right.Select(r => Pair.Of(l, r)))));
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Join_BuildSideInOneFirstLevelPartition_SplitsItAgain_WithinTheBudget()
    {
        // 300 keys that all go to one partition at the first level, two right rows each: about 26 budgets' worth of right
        // rows in one partition. It splits again with another hash (twice: a sixteenth of it is still over the budget),
        // so every hash table fits the budget and each left row is read back once, not once a budget slice.
        var keys = CollidingKeys(300);
        var right = keys.SelectMany((k, i) => new[] { new LongRight(2 * i, k, Payload(i)), new LongRight((2 * i) + 1, k, Payload(i + 1)) }).ToList();
        var left = keys.Select((k, i) => new LongLeft(i, k))
            .Concat(keys.Take(50).Select((k, i) => new LongLeft(1_000 + i, k)))
            .Concat(OtherPartitionKeys(100).Select((k, i) => new LongLeft(2_000 + i, k)))
            .ToList();
        var events = new ConcurrentQueue<EtlSpillEvent>();
        var sink = new ListSink<LongPair>();

        var result = await Etl.From(left)
            .Join(Source(right), l => l.Key, r => r.Key, LongPair.Of, maxBuildBytes: LongBudget, rightSize: MeasureLong, spill: Watched(events))
            .To(sink)
            .RunAsync();

        var reference = left.Join(right, l => l.Key, r => r.Key, LongPair.Of).ToList();
        Sorted(sink.Rows).Should().Equal(Sorted(reference));
        result.RowsLoaded.Should().Be(reference.Count);
        events.Should().Contain(e => e.What == "split" && e.Depth == 1).And.Contain(e => e.What == "split" && e.Depth == 2);
        events.Where(e => e.What == "table").Should().OnlyContain(e => e.Bytes <= LongBudget + MaxLongRow, "no hash table holds more than the budget and the row that passed it");
        events.Where(e => e.What == "probe").Sum(e => e.Rows).Should().Be(350, "each left row of the crowded partition is read back once; the rest go to partitions without right rows, and are never written");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Join_HotKeyBeyondTheBudget_BesideOtherKeys_JoinsItInSlices_WithinTheBudget()
    {
        // One key with about 11 budgets' worth of right rows, and 100 other keys in its first-level partition: the
        // partition splits until the hot key is alone (a part no hash can split), which is then joined in budget slices.
        var keys = CollidingKeys(101);
        var hot = keys[0];
        var right = Enumerable.Range(0, 250).Select(i => new LongRight(i, hot, Payload(i)))
            .Concat(keys.Skip(1).Select((k, i) => new LongRight(1_000 + i, k, Payload(i))))
            .ToList();
        var left = Enumerable.Range(0, 5).Select(i => new LongLeft(i, hot))
            .Concat(keys.Skip(1).Select((k, i) => new LongLeft(100 + i, k)))
            .ToList();
        var events = new ConcurrentQueue<EtlSpillEvent>();
        var sink = new ListSink<LongPair>();

        await Etl.From(left)
            .Join(Source(right), l => l.Key, r => r.Key, LongPair.Of, maxBuildBytes: LongBudget, rightSize: MeasureLong, spill: Watched(events))
            .To(sink)
            .RunAsync();

        Sorted(sink.Rows).Should().Equal(Sorted(left.Join(right, l => l.Key, r => r.Key, LongPair.Of)));
        events.Should().Contain(e => e.What == "split" && e.Depth == 1);
        events.Should().ContainSingle(e => e.What == "slices").Which.Depth.Should().BeGreaterThan(1);
        events.Where(e => e.What == "table").Should().OnlyContain(e => e.Bytes <= LongBudget + MaxLongRow, "no hash table holds more than the budget and the row that passed it");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Join_CancelledOrFailingWhileSplittingAPartitionAgain_DeletesEveryLevelsFiles()
    {
        // The crowded first-level partition splits at depth 1, then one of its parts at depth 2: stopping there leaves
        // files of three levels (the first level's other partitions, depth 1's parts, depth 2's parts) to delete.
        var keys = CollidingKeys(300);
        var right = keys.SelectMany((k, i) => new[] { new LongRight(2 * i, k, Payload(i)), new LongRight((2 * i) + 1, k, Payload(i + 1)) }).ToList();
        var left = keys.Select((k, i) => new LongLeft(i, k)).Concat(OtherPartitionKeys(100).Select((k, i) => new LongLeft(2_000 + i, k))).ToList();

        using var cancel = new CancellationTokenSource();
        var cancelled = await Etl.From(left)
            .Join(Source(right), l => l.Key, r => r.Key, LongPair.Of, maxBuildBytes: LongBudget, rightSize: MeasureLong, spill: new EtlSpill
            {
                TempDirectory = _dir.Path,
                Observer = e =>
                {
                    if (e is { What: "split", Depth: 2 })
                    {
                        cancel.Cancel();
                    }
                },
            })
            .To(new ListSink<LongPair>())
            .RunAsync(cancellationToken: cancel.Token);

        cancelled.Status.Should().Be(EtlRunStatus.Stopped);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        SpillTests.OpenHandlesUnder(_dir.Path).Should().Be(0);

        var failing = () => Etl.From(left)
            .Join(Source(right), l => l.Key, r => r.Key, LongPair.Of, maxBuildBytes: LongBudget, rightSize: MeasureLong, spill: new EtlSpill
            {
                TempDirectory = _dir.Path,
                Observer = e => _ = e is { What: "split", Depth: 2 } ? throw new IOException("disk full") : 0,
            })
            .To(new ListSink<LongPair>())
            .RunAsync();

        (await failing.Should().ThrowAsync<IOException>()).Which.Message.Should().Be("disk full");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        SpillTests.OpenHandlesUnder(_dir.Path).Should().Be(0);
    }

    [Fact]
    public async Task Join_WithinTheBudget_DoesNotSpill_AndKeepsTheLeftOrder()
    {
        var expected = new ListSink<Pair>();
        var joined = new ListSink<Pair>();
        await Etl.From(Left()).Join(RightSource(), l => l.Key!, r => r.Key!, Pair.Of).To(expected).RunAsync();

        await Etl.From(Left()).Join(RightSource(), l => l.Key!, r => r.Key!, Pair.Of, maxBuildBytes: 100_000_000, rightSize: Measure, spill: new EtlSpill { TempDirectory = _dir.File("never") }).To(joined).RunAsync();

        joined.Rows.Should().Equal(expected.Rows);
        Directory.Exists(_dir.File("never")).Should().BeFalse();
    }

    [Fact]
    public async Task Join_DownstreamFailsWhileJoiningPartitions_DeletesTheFolderAndClosesItsFiles()
    {
        var seen = 0;
        var run = () => Etl.From(Left())
            .Join(RightSource(), l => l.Key!, r => r.Key!, Pair.Of, maxBuildBytes: 4_000, rightSize: Measure, spill: Spill)
            .Select(p => ++seen == 500 ? throw new InvalidOperationException("downstream failed") : p)
            .To(new ListSink<Pair>())
            .RunAsync();

        (await run.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Be("downstream failed");
        seen.Should().Be(500);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        SpillTests.OpenHandlesUnder(_dir.Path).Should().Be(0);
    }

    [Fact]
    public async Task Join_CancelledWhileJoiningPartitions_StopsThere_AndDeletesTheFolder()
    {
        // After the left source ends, joined rows come only from partitions read back: the first one cancels the run.
        // The matches of the left row being joined still go (a key has at most four right rows), and no other left row
        // is read after it.
        using var cancel = new CancellationTokenSource();
        var ended = false;
        var joinedAfterEnd = 0;
        Pair Join(LeftRow l, RightRow r)
        {
            if (ended && joinedAfterEnd++ == 0)
            {
                cancel.Cancel();
            }

            return Pair.Of(l, r);
        }

        var result = await Etl.From(LeftThen(() => ended = true))
            .Join(RightSource(), l => l.Key!, r => r.Key!, Join, maxBuildBytes: 4_000, rightSize: Measure, spill: Spill)
            .To(new ListSink<Pair>())
            .RunAsync(cancellationToken: cancel.Token);

        result.Status.Should().Be(EtlRunStatus.Stopped);
        joinedAfterEnd.Should().BeInRange(1, 4, "the read-back stops at the left row after the cancellation, not at the end of the partitions");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        SpillTests.OpenHandlesUnder(_dir.Path).Should().Be(0);

        static IEnumerable<LeftRow> LeftThen(Action ended)
        {
            foreach (var row in Left())
            {
                yield return row;
            }

            ended();
        }
    }

    [Fact]
    public void Join_SpillWithoutMaxBuildBytes_IsRejected()
    {
        var join = () => Etl.From(Left()).Join(RightSource(), l => l.Key!, r => r.Key!, Pair.Of, spill: Spill);

        join.Should().Throw<ArgumentException>().Which.ParamName.Should().Be("spill");
    }

    private const long LongBudget = 4_000;

    /// <summary>The largest right row of the long-key tests: 24 + 32 + 8 + 2 × 40 bytes, plus 32 of hash-table entry.</summary>
    private const long MaxLongRow = 144 + EtlMemory.EntryOverhead;

    private static long MeasureLong(LongRight r) => 24 + 32 + 8 + (2L * r.Payload.Length);

    private static string Payload(int i) => new((char)('a' + (i % 26)), 40);

    /// <summary>Distinct keys that all go to the same one of 16 partitions at the first level.</summary>
    private static List<long> CollidingKeys(int count) =>
        Enumerable.Range(1, 100_000).Select(i => i * 7_919L).Where(k => EtlSpillHash.Partition(k, EqualityComparer<long>.Default, 0, 16) == 3).Take(count).ToList();

    /// <summary>Keys with no right row that go to other partitions at the first level.</summary>
    private static List<long> OtherPartitionKeys(int count) =>
        Enumerable.Range(0, 100_000).Select(i => 1_000_000_007L + i).Where(k => EtlSpillHash.Partition(k, EqualityComparer<long>.Default, 0, 16) != 3).Take(count).ToList();

    private EtlSpill Watched(ConcurrentQueue<EtlSpillEvent> events) => new() { TempDirectory = _dir.Path, Observer = events.Enqueue };

    private static EtlSource<LongRight> Source(List<LongRight> rows) => new AsyncEnumerableSource<LongRight>(Async(rows), "right");

    private static IEnumerable<LongPair> Sorted(IEnumerable<LongPair> pairs) => pairs.OrderBy(p => p.LeftId).ThenBy(p => p.RightId);

    private static long Measure(RightRow r) => 24 + 32 + (2L * ((r.Key?.Length ?? 0) + r.Payload.Length));

    private static IEnumerable<Pair> Sorted(IEnumerable<Pair> pairs) => pairs.OrderBy(p => p.LeftId).ThenBy(p => p.RightId);

    /// <summary>5,000 left rows with keys k0..k1199 (some with no right row), every 97th with a null key.</summary>
    private static IEnumerable<LeftRow> Left()
    {
        var random = new Random(7);
        for (var i = 0; i < 5_000; i++)
        {
            yield return new LeftRow(i, i % 97 == 0 ? null : "k" + random.Next(1_200).ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
    }

    /// <summary>About 3,000 right rows: keys k0..k999 and k2000.. (with no left row), each one to four times, every 89th with a null key.</summary>
    private static List<RightRow> Right()
    {
        var random = new Random(8);
        var rows = new List<RightRow>();
        for (var k = 0; k < 1_200; k++)
        {
            var key = "k" + (k < 1_000 ? k : k + 1_000).ToString(System.Globalization.CultureInfo.InvariantCulture);
            for (var copies = random.Next(1, 5); copies > 0; copies--)
            {
                rows.Add(new RightRow(rows.Count, rows.Count % 89 == 0 ? null : key, new string('p', random.Next(10, 40))));
            }
        }

        return rows;
    }

    private static EtlSource<RightRow> RightSource() => new AsyncEnumerableSource<RightRow>(Async(Right()), "right");

    private static async IAsyncEnumerable<T> Async<T>(IEnumerable<T> rows, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        foreach (var row in rows)
        {
            cancellationToken.ThrowIfCancellationRequested();
            await Task.Yield();
            yield return row;
        }
    }

    public sealed record LeftRow(int Id, string? Key);

    public sealed record RightRow(int Id, string? Key, string Payload);

    public sealed record LongLeft(int Id, long Key);

    public sealed record LongRight(int Id, long Key, string Payload);

    public sealed record LongPair(int LeftId, int RightId, long Key, string Payload)
    {
        public static LongPair Of(LongLeft l, LongRight r) => new(l.Id, r.Id, l.Key, r.Payload);
    }

    public sealed record Pair(int LeftId, int RightId, string Key, string Payload)
    {
        public static Pair Of(LeftRow l, RightRow r) => new(l.Id, r.Id, l.Key!, r.Payload);
    }
}
