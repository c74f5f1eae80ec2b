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

    public sealed record Pair(int LeftId, int RightId, string Key, string Payload)
    {
        public static Pair Of(LeftRow l, RightRow r) => new(l.Id, r.Id, l.Key!, r.Payload);
    }
}
