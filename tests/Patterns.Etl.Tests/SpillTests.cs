using System.Globalization;
using System.Runtime.CompilerServices;

namespace Patterns.Etl.Tests;

/// <summary>DistinctBy and Aggregate past their byte budget: they spill to temporary files, give what they give in memory, and leave no file behind.</summary>
public sealed class SpillTests : IDisposable
{
    private const int Rows = 20_000;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static readonly int DistinctKeys = Generate().Select(r => r.Key).Distinct().Count();

    private EtlSpill Spill => new() { TempDirectory = _dir.Path };

    [Fact]
    public async Task DistinctBy_TinyBudget_SpillsSeveralTimesAndGivesTheSameRowsInTheSameOrder()
    {
        var expected = new ListSink<Row>();
        var spilled = new ListSink<Row>();
        var mostFiles = 0;
        await Etl.From(Generate()).DistinctBy(r => r.Key).To(expected).RunAsync();

        // A key of 6 or 7 characters costs 24 + 2 × length + 32 bytes: about 60 keys fit in 4,000 bytes, of 5,000.
        var result = await Etl.From(Generate())
            .DistinctBy(r => r.Key, maxBytes: 4_000, spill: Spill)
            .Select(r =>
            {
                mostFiles = Math.Max(mostFiles, SpillFiles());
                return r;
            })
            .To(spilled, "dedupe")
            .RunAsync();

        expected.Rows.Should().HaveCount(DistinctKeys);
        spilled.Rows.Should().Equal(expected.Rows);
        result.RowsLoaded.Should().Be(DistinctKeys);
        result.RowsRead.Should().Be(Rows);
        mostFiles.Should().Be(16, "the spilled rows leave from a merge of the 16 partitions' results");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Aggregate_TinyBudget_SpillsSeveralTimesAndGivesTheSameGroupsInTheSameOrder()
    {
        var expected = new ListSink<Total>();
        var spilled = new ListSink<Total>();
        var filesAtFirstResult = -1;
        await Etl.From(Generate()).Aggregate(r => r.Key, _ => (Count: 0L, Sum: 0m), (acc, r) => (acc.Count + 1, acc.Sum + r.Amount), (k, acc) => new Total(k, acc.Count, acc.Sum)).To(expected).RunAsync();

        // A group costs 32 + (24 + 2 × 6 or 7) + 24 bytes: about 40 fit in 4,000 bytes, of 5,000.
        await Etl.From(Generate())
            .Aggregate(r => r.Key, _ => (Count: 0L, Sum: 0m), (acc, r) => (acc.Count + 1, acc.Sum + r.Amount), (k, acc) => new Total(k, acc.Count, acc.Sum), maxBytes: 4_000, spill: Spill)
            .Select(t =>
            {
                if (filesAtFirstResult < 0)
                {
                    filesAtFirstResult = SpillFiles();
                }

                return t;
            })
            .To(spilled, "totals")
            .RunAsync();

        expected.Rows.Should().HaveCount(DistinctKeys);
        expected.Rows.Sum(t => t.Count).Should().Be(Rows);
        spilled.Rows.Should().Equal(expected.Rows);
        filesAtFirstResult.Should().Be(16, "the top pass wrote its overflow to all 16 partitions before its first result");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Aggregate_TupleKeysAndResults_SurviveTheSpillFiles()
    {
        // Tuples keep their items in the spill files (fields are written): the results equal the in-memory run's.
        var expected = new ListSink<(string Key, long Count)>();
        var spilled = new ListSink<(string Key, long Count)>();
        await Etl.From(Generate()).Aggregate(r => (r.Key, r.Id % 2), _ => 0L, (n, r) => n + 1, (k, n) => (k.Key + "/" + k.Item2.ToString(CultureInfo.InvariantCulture), n)).To(expected).RunAsync();

        await Etl.From(Generate()).Aggregate(r => (r.Key, r.Id % 2), _ => 0L, (n, r) => n + 1, (k, n) => (k.Key + "/" + k.Item2.ToString(CultureInfo.InvariantCulture), n), maxBytes: 4_000, keySize: k => 24 + (2L * k.Key.Length) + 8, spill: Spill).To(spilled).RunAsync();

        expected.Rows.Should().HaveCountGreaterThan(DistinctKeys);
        spilled.Rows.Should().Equal(expected.Rows);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Aggregate_UnderTheBudget_DoesNotSpill()
    {
        var sink = new ListSink<Total>();

        await Etl.From(Generate()).Aggregate(r => r.Key, _ => 0L, (n, r) => n + 1, (k, n) => new Total(k, n, 0), maxBytes: 10_000_000, spill: new EtlSpill { TempDirectory = _dir.File("never") }).To(sink).RunAsync();

        sink.Rows.Should().HaveCount(DistinctKeys);
        Directory.Exists(_dir.File("never")).Should().BeFalse();
    }

    [Fact]
    public async Task DistinctBy_DownstreamFailsWhileSpilledRowsLeave_DeletesTheSpillFiles()
    {
        var filesAtFailure = 0;
        var run = () => Etl.From(Generate())
            .DistinctBy(r => r.Key, maxBytes: 4_000, spill: Spill)
            .Select(r =>
            {
                if (r.Id >= Rows / 2)
                {
                    filesAtFailure = SpillFiles();
                    throw new InvalidOperationException("downstream failed");
                }

                return r;
            })
            .To(new ListSink<Row>(), "dedupe")
            .RunAsync();

        (await run.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Be("downstream failed");
        filesAtFailure.Should().BeGreaterThan(0);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Aggregate_DownstreamFailsOnASpilledGroup_DeletesTheSpillFiles()
    {
        var seen = 0;
        var run = () => Etl.From(Generate())
            .Aggregate(r => r.Key, _ => 0L, (n, r) => n + 1, (k, n) => new Total(k, n, 0), maxBytes: 4_000, spill: Spill)
            .Select(t => ++seen == 1_000 ? throw new InvalidOperationException("downstream failed") : t)
            .To(new ListSink<Total>(), "totals")
            .RunAsync();

        (await run.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Be("downstream failed");
        seen.Should().Be(1_000);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Theory]
    [InlineData("DistinctBy")]
    [InlineData("Aggregate")]
    public async Task Cancelled_WhileSpilled_DeletesTheSpillFiles(string stage)
    {
        using var cancel = new CancellationTokenSource();
        var filesAtCancel = 0;
        var flow = Etl.From(GenerateThenCancel(cancel, () => filesAtCancel = SpillFiles()));
        var result = stage == "DistinctBy"
            ? await flow.DistinctBy(r => r.Key, maxBytes: 4_000, spill: Spill).To(new ListSink<Row>()).RunAsync(cancellationToken: cancel.Token)
            : await flow.Aggregate(r => r.Key, _ => 0L, (n, r) => n + 1, (k, n) => n, maxBytes: 4_000, spill: Spill).To(new ListSink<long>()).RunAsync(cancellationToken: cancel.Token);

        result.Status.Should().Be(EtlRunStatus.Stopped);
        filesAtCancel.Should().BeGreaterThanOrEqualTo(16);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        OpenSpillHandles().Should().Be(0, "the partition files open when the run stopped are closed before their folder is deleted");
    }

    [Theory]
    [InlineData("DistinctBy")]
    [InlineData("Aggregate")]
    public async Task CancelledWhileReadingPartitionsBack_StopsAtTheNextRow(string stage)
    {
        // After the source ends, the key selector runs again only on rows read back from partition files: the first
        // such call cancels the run, and no partition row may be taken after it.
        using var cancel = new CancellationTokenSource();
        var ended = false;
        var keysAfterEnd = 0;
        string Key(Row r)
        {
            if (ended && keysAfterEnd++ == 0)
            {
                cancel.Cancel();
            }

            return r.Key;
        }

        var flow = Etl.From(GenerateThen(() => ended = true));
        var result = stage == "DistinctBy"
            ? await flow.DistinctBy(Key, maxBytes: 4_000, spill: Spill).To(new ListSink<Row>()).RunAsync(cancellationToken: cancel.Token)
            : await flow.Aggregate(Key, _ => 0L, (n, r) => n + 1, (k, n) => n, maxBytes: 4_000, spill: Spill).To(new ListSink<long>()).RunAsync(cancellationToken: cancel.Token);

        result.Status.Should().Be(EtlRunStatus.Stopped);
        keysAfterEnd.Should().Be(1, "the read-back stops at the row after the cancellation, not at the end of the partitions");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        OpenSpillHandles().Should().Be(0);
    }

    [Theory]
    [InlineData("DistinctBy")]
    [InlineData("Aggregate")]
    public async Task UpstreamFails_WhilePartitionFilesAreOpen_ClosesThemAndTheFailureSurfaces(string stage)
    {
        var filesAtFailure = 0;
        var flow = Etl.From(Generate()).Select(r =>
        {
            if (r.Id == Rows * 3 / 4)
            {
                filesAtFailure = SpillFiles();
                throw new InvalidOperationException("upstream failed");
            }

            return r;
        });
        Func<Task<EtlRunResult>> run = stage == "DistinctBy"
            ? () => flow.DistinctBy(r => r.Key, maxBytes: 4_000, spill: Spill).To(new ListSink<Row>()).RunAsync()
            : () => flow.Aggregate(r => r.Key, _ => 0L, (n, r) => n + 1, (k, n) => n, maxBytes: 4_000, spill: Spill).To(new ListSink<long>()).RunAsync();

        (await run.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Be("upstream failed");
        filesAtFailure.Should().Be(16);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        OpenSpillHandles().Should().Be(0);
    }

    [Fact]
    public async Task DistinctBy_ARowTheSerializerCannotWrite_FailsNamingTheStageAndTheType()
    {
        var rows = Enumerable.Range(0, 100).Select(i => new Odd(i, typeof(string)));

        var run = () => Etl.From(rows).DistinctBy(r => r.Id, maxBytes: 500, spill: Spill).To(new ListSink<Odd>(), "odd").RunAsync();

        var error = (await run.Should().ThrowAsync<EtlSpillException>()).Which;
        error.Message.Should().StartWith("ETL job 'odd': the DistinctBy stage passed its memory budget (maxBytes) and could not write a Patterns.Etl.Tests.SpillTests+Odd in its spill file: ");
        error.Message.Should().Contain("System.Type");
        error.Stage.Should().Be("DistinctBy");
        error.RowType.Should().Be<Odd>();
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Aggregate_AResultTheSerializerCannotReadBack_FailsNamingTheStageAndTheType()
    {
        var run = () => Etl.From(Generate()).Aggregate(r => r.Key, _ => 0L, (n, r) => n + 1, (k, n) => new Unreadable(k), maxBytes: 4_000, spill: Spill).To(new ListSink<Unreadable>(), "totals").RunAsync();

        var error = (await run.Should().ThrowAsync<EtlSpillException>()).Which;
        error.Message.Should().StartWith("ETL job 'totals': the Aggregate stage passed its memory budget (maxBytes) and could not read back a Patterns.Etl.Tests.SpillTests+Unreadable in its spill file: ");
        error.Stage.Should().Be("Aggregate");
        error.RowType.Should().Be<Unreadable>();
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task DistinctBy_RowsWithNaNAndInfinity_SpillAndMatchTheInMemoryRun()
    {
        var rows = Generate().Select(r => new Reading(r.Id, r.Key, (r.Id % 3) switch { 0 => double.NaN, 1 => double.PositiveInfinity, _ => double.NegativeInfinity })).ToList();
        var expected = new ListSink<Reading>();
        var spilled = new ListSink<Reading>();
        await Etl.From(rows).DistinctBy(r => r.Key).To(expected).RunAsync();

        await Etl.From(rows).DistinctBy(r => r.Key, maxBytes: 4_000, spill: Spill).To(spilled).RunAsync();

        spilled.Rows.Should().Equal(expected.Rows);
        spilled.Rows.Should().Contain(r => double.IsNaN(r.Value)).And.Contain(r => double.IsNegativeInfinity(r.Value));
    }

    [Fact]
    public async Task Aggregate_AHeldAccumulatorGrowsWhileSpilling_FailsAtTheBudget()
    {
        // A list of ids per key: past the budget a held group that grows cannot be spilled, so it fails the run rather
        // than grow without bound.
        var run = () => Etl.From(Generate())
            .Aggregate(r => r.Key, _ => new List<int>(), (ids, r) => { ids.Add(r.Id); return ids; }, (k, ids) => ids.Count, maxBytes: 4_000, accumulatorSize: ids => 32 + (4L * ids.Count), spill: Spill)
            .To(new ListSink<int>(), "ids")
            .RunAsync();

        var error = (await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>()).Which;
        error.Message.Should().StartWith("ETL job 'ids' stopped: the Aggregate stage would hold ");
        error.Message.Should().EndWith("more than its memory budget of 4,000 bytes (maxBytes). A group held in memory grew while the stage was spilling, and an accumulator cannot be split across spill files: keep accumulators fixed in size (a count, a sum), or raise maxBytes.");
        error.Stage.Should().Be("Aggregate");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task Spill_SweepsFoldersLeftByACrashedRun_AndKeepsLiveOnes()
    {
        // A crashed run's folder: its lock file is there but nobody holds it. A live run's: its lock file is held open,
        // unshared. A folder without a lock file, just made: another run may be creating it.
        var stale = Directory.CreateDirectory(_dir.File("patterns-etl-spill-stale")).FullName;
        File.WriteAllText(Path.Combine(stale, "lock"), string.Empty);
        File.WriteAllText(Path.Combine(stale, "0.spill"), "left behind");
        var live = Directory.CreateDirectory(_dir.File("patterns-etl-spill-live")).FullName;
        var fresh = Directory.CreateDirectory(_dir.File("patterns-etl-spill-fresh")).FullName;
        var spillsSeen = 0;
        using (new FileStream(Path.Combine(live, "lock"), FileMode.CreateNew, FileAccess.Write, FileShare.None))
        {
            await Etl.From(Generate())
                .DistinctBy(r => r.Key, maxBytes: 4_000, spill: Spill)
                .Select(r =>
                {
                    spillsSeen = Math.Max(spillsSeen, SpillFiles());
                    return r;
                })
                .To(new ListSink<Row>())
                .RunAsync();
        }

        spillsSeen.Should().BeGreaterThan(0);
        Directory.Exists(stale).Should().BeFalse("no run held its lock file");
        Directory.Exists(live).Should().BeTrue("its run holds its lock file");
        Directory.Exists(fresh).Should().BeTrue("a folder without a lock file is swept only once it is an hour old");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEquivalentTo([live, fresh]);
    }

    [Fact]
    public async Task Spill_LeavesAFolderStillBeingMade_UntilItIsAnHourOld()
    {
        // Another run between making its folder and locking its lock file: on Unix the file is opened, then locked, in
        // two steps, so a sweep could find it free in between. Such a folder has the .creating suffix until it is locked.
        var making = Directory.CreateDirectory(_dir.File("patterns-etl-spill-making" + ".creating")).FullName;
        File.WriteAllText(Path.Combine(making, "lock"), string.Empty);
        var abandoned = Directory.CreateDirectory(_dir.File("patterns-etl-spill-abandoned" + ".creating")).FullName;
        File.WriteAllText(Path.Combine(abandoned, "lock"), string.Empty);
        Directory.SetLastWriteTimeUtc(abandoned, DateTime.UtcNow.AddHours(-2));
        var spillsSeen = 0;

        await Etl.From(Generate())
            .DistinctBy(r => r.Key, maxBytes: 4_000, spill: Spill)
            .Select(r =>
            {
                spillsSeen = Math.Max(spillsSeen, SpillFiles());
                return r;
            })
            .To(new ListSink<Row>())
            .RunAsync();

        spillsSeen.Should().BeGreaterThan(0);
        Directory.Exists(making).Should().BeTrue("a folder still being made is not swept, though its lock file is free");
        Directory.Exists(abandoned).Should().BeFalse("one left half-made for over an hour is");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEquivalentTo([making]);
    }

    [Fact]
    public async Task Spill_ASweepWhileAnotherRunSpills_LeavesItsFolder()
    {
        // Run A spills and waits, its folder live, while run B spills beside it, sweeping: A's folder and files survive.
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var sinkOfA = new ListSink<Row>();
        var runA = Etl.From(Gated()).DistinctBy(r => r.Key, maxBytes: 4_000, spill: Spill).To(sinkOfA).RunAsync();
        try
        {
            await reached.Task;
            var folderOfA = Directory.GetDirectories(_dir.Path).Should().ContainSingle().Subject;
            var filesOfA = Directory.GetFiles(folderOfA);
            filesOfA.Should().Contain(Path.Combine(folderOfA, "lock")).And.HaveCountGreaterThan(1, "run A has spilled");

            var sinkOfB = new ListSink<Row>();
            await Etl.From(Generate()).DistinctBy(r => r.Key, maxBytes: 4_000, spill: Spill).To(sinkOfB).RunAsync();

            sinkOfB.Rows.Should().HaveCount(DistinctKeys);
            Directory.GetFiles(folderOfA).Should().BeEquivalentTo(filesOfA, "run A holds its lock file");
        }
        finally
        {
            gate.TrySetResult();
        }

        (await runA).RowsLoaded.Should().Be(DistinctKeys);
        sinkOfA.Rows.Should().HaveCount(DistinctKeys);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();

        async IAsyncEnumerable<Row> Gated()
        {
            var n = 0;
            foreach (var row in Generate())
            {
                if (n++ == Rows / 2)
                {
                    reached.TrySetResult();
                    await gate.Task;
                }

                yield return row;
            }
        }
    }

    [Fact]
    public void Partitions_LongKeysWithEqualHalves_SpreadOverEveryPartition()
    {
        // long.GetHashCode folds its halves with XOR: every key whose two halves are equal hashes to 0.
        var keys = Enumerable.Range(1, 1_000).Select(i => ((long)i << 32) | (uint)i).ToList();
        keys.Select(k => k.GetHashCode()).Distinct().Should().Equal([0]);

        for (var depth = 0; depth < 3; depth++)
        {
            var counts = keys.GroupBy(k => EtlSpillHash.Partition(k, EqualityComparer<long>.Default, depth, 16)).Select(g => g.Count()).ToList();

            counts.Should().HaveCount(16, "1,000 distinct keys reach all 16 partitions at depth {0}", depth);
            counts.Max().Should().BeLessThan(125, "no partition takes twice its share (62.5) at depth {0}", depth);
        }

        EtlSpillHash.Partition(keys[0], EqualityComparer<long>.Default, 0, 16).Should().Be(EtlSpillHash.Partition(keys[0], EqualityComparer<long>.Default, 0, 16));
    }

    [Fact]
    public void Partitions_NullableLongKeysWithEqualHalves_SpreadOverEveryPartition()
    {
        // long?.GetHashCode is long.GetHashCode for a value: every key whose two halves are equal hashes to 0.
        var keys = Enumerable.Range(1, 1_000).Select(i => (long?)(((long)i << 32) | (uint)i)).ToList();
        keys.Select(k => k.GetHashCode()).Distinct().Should().Equal([0]);

        for (var depth = 0; depth < 3; depth++)
        {
            var counts = keys.GroupBy(k => EtlSpillHash.Partition(k, EqualityComparer<long?>.Default, depth, 16)).Select(g => g.Count()).ToList();

            counts.Should().HaveCount(16, "1,000 distinct keys reach all 16 partitions at depth {0}", depth);
            counts.Max().Should().BeLessThan(125, "no partition takes twice its share (62.5) at depth {0}", depth);
        }

        // Each partitions as its non-nullable value does; a null key goes to one partition of its own choosing.
        EtlSpillHash.Partition(keys[7], EqualityComparer<long?>.Default, 1, 16).Should().Be(EtlSpillHash.Partition(keys[7]!.Value, EqualityComparer<long>.Default, 1, 16));
        var moments = new DateTime?[] { new DateTime(2020, 1, 1, 0, 0, 0, DateTimeKind.Utc), DateTime.MaxValue };
        EtlSpillHash.Partition(moments[0], EqualityComparer<DateTime?>.Default, 0, 16).Should().Be(EtlSpillHash.Partition(moments[0]!.Value, EqualityComparer<DateTime>.Default, 0, 16));
        EtlSpillHash.Partition((long?)null, EqualityComparer<long?>.Default, 0, 16).Should().BeInRange(0, 15);
    }

    [Fact]
    public async Task DistinctBy_NullableLongKeysWithEqualHalves_SpillAndMatchTheInMemoryRun()
    {
        var rows = Enumerable.Range(0, 6_000).Select(i => i % 3_000 == 0 ? null : (long?)(((long)(i % 3_000) << 32) | (uint)(i % 3_000))).ToList();
        var expected = new ListSink<long?>();
        var spilled = new ListSink<long?>();
        await Etl.From(rows).DistinctBy(k => k).To(expected).RunAsync();

        // A long? key costs at most 16 + 32 bytes: under 100 fit in 4,000, of 3,000.
        await Etl.From(rows).DistinctBy(k => k, maxBytes: 4_000, spill: Spill).To(spilled).RunAsync();

        expected.Rows.Should().HaveCount(3_000);
        spilled.Rows.Should().Equal(expected.Rows);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task DistinctBy_LongKeysWithEqualHalves_SpillAndMatchTheInMemoryRun()
    {
        var rows = Enumerable.Range(0, 6_000).Select(i => ((long)(i % 3_000) << 32) | (uint)(i % 3_000)).ToList();
        var expected = new ListSink<long>();
        var spilled = new ListSink<long>();
        await Etl.From(rows).DistinctBy(k => k).To(expected).RunAsync();

        // A long key costs 8 + 32 bytes: 100 fit in 4,000, of 3,000.
        await Etl.From(rows).DistinctBy(k => k, maxBytes: 4_000, spill: Spill).To(spilled).RunAsync();

        expected.Rows.Should().HaveCount(3_000);
        spilled.Rows.Should().Equal(expected.Rows);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public void Spill_WithoutMaxBytes_IsRejected()
    {
        var dedupe = () => Etl.From(new[] { "a" }).DistinctBy(k => k, spill: Spill);
        var aggregate = () => Etl.From(new[] { "a" }).Aggregate(k => k, _ => 0, (n, _) => n + 1, (k, n) => n, spill: Spill);

        dedupe.Should().Throw<ArgumentException>().Which.Message.Should().StartWith("DistinctBy was given spill: but no maxBytes: a stage spills only past its byte budget");
        aggregate.Should().Throw<ArgumentException>().Which.ParamName.Should().Be("spill");
    }

    [Fact]
    public void Spill_PartitionsOutOfRange_AreRejected()
    {
        var dedupe = () => Etl.From(new[] { "a" }).DistinctBy(k => k, maxBytes: 100, spill: new EtlSpill { Partitions = 1 });

        dedupe.Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("spill");
    }

    /// <summary>Rows with about 4,700 distinct keys in a fixed random order: keys from 2,500 on first appear in the second half.</summary>
    private static IEnumerable<Row> Generate()
    {
        var random = new Random(12);
        for (var i = 0; i < Rows; i++)
        {
            yield return new Row(i, "k" + random.Next(i < Rows / 2 ? 2_500 : 5_000).ToString(CultureInfo.InvariantCulture), random.Next(100_000) / 100m);
        }
    }

#pragma warning disable CS1998 // An iterator that runs an action once its rows are taken.
    private static async IAsyncEnumerable<Row> GenerateThen(Action ended)
#pragma warning restore CS1998
    {
        foreach (var row in Generate())
        {
            yield return row;
        }

        ended();
    }

    private static async IAsyncEnumerable<Row> GenerateThenCancel(CancellationTokenSource cancel, Action beforeCancel, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        foreach (var row in Generate())
        {
            yield return row;
        }

        beforeCancel();
        await cancel.CancelAsync();
        await Task.Delay(Timeout.Infinite, cancellationToken);
    }

    /// <summary>This process's open files under the test's folder (Linux: /proc/self/fd; deleted files still show their path).</summary>
    private int OpenSpillHandles() => OpenHandlesUnder(_dir.Path);

    /// <summary>This process's open files under <paramref name="path"/> (Linux: /proc/self/fd; deleted files still show their path).</summary>
    internal static int OpenHandlesUnder(string path)
    {
        if (!Directory.Exists("/proc/self/fd"))
        {
            return 0;
        }

        return Directory.EnumerateFileSystemEntries("/proc/self/fd").Count(fd =>
        {
            try
            {
                return new FileInfo(fd).LinkTarget?.StartsWith(path, StringComparison.Ordinal) == true;
            }
            catch (IOException)
            {
                return false;
            }
        });
    }

    private int SpillFiles() => Directory.Exists(_dir.Path) ? Directory.EnumerateFiles(_dir.Path, "*.spill", SearchOption.AllDirectories).Count() : 0;

    public sealed record Row(int Id, string Key, decimal Amount);

    public sealed record Total(string Key, long Count, decimal Sum);

    public sealed record Odd(int Id, Type Kind);

    public sealed record Reading(int Id, string Key, double Value);

    /// <summary>Written as <c>{"Name":...}</c>, but with two constructors and none marked, it cannot be read back.</summary>
    public sealed class Unreadable
    {
        public Unreadable(string name) => Name = name;

        public Unreadable(string name, int copies) => Name = name + copies.ToString(CultureInfo.InvariantCulture);

        public string Name { get; }
    }
}
