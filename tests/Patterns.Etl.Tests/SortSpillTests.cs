using System.Diagnostics;
using System.Runtime.CompilerServices;
using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

/// <summary>OrderBy past its budget: sorted runs go to the run's own spill folder (lock file, crash sweep), which goes when the run ends, however it ends.</summary>
public sealed class SortSpillTests : IDisposable
{
    private const int Rows = 2_500;
    private static readonly List<Order> Orders = SqliteLoadTests.Generated(Rows);
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private EtlSpill Spill => new() { TempDirectory = _dir.Path };

    [Theory]
    [InlineData(1_000_000)]
    [InlineData(300)]
    [InlineData(299)]
    public async Task OrderBy_IsStable_InMemoryAndSpilled(int budgetRows)
    {
        // 3,000 rows over 3 keys: each key's rows keep their source order, whether the sort stays in memory or spills
        // sorted runs (300 a run: 10 runs and none in memory; 299: 10 runs and 10 rows in memory).
        var source = SqliteLoadTests.Generated(3_000);
        var sink = new ListSink<Order>();

        await Etl.From(source).OrderBy(o => o.Id % 3, Order.Schema, memoryBudgetRows: budgetRows, spill: Spill).To(sink).RunAsync();

        sink.Rows.Should().Equal(source.OrderBy(o => o.Id % 3), "LINQ's OrderBy is stable");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task OrderBy_PastItsBudget_SpillsUnderTheRunsOwnFolder_AndDeletesItAfterTheRun()
    {
        var sink = new ListSink<Order>();
        string[] folders = [];
        var runs = 0;
        var locked = false;

        await Etl.From(Orders)
            .OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 300, spill: Spill)
            .Select(o =>
            {
                if (sink.Rows.Count == 0 && folders.Length == 0)
                {
                    folders = Directory.GetDirectories(_dir.Path);
                    runs = Directory.GetFiles(folders[0], "*.csv").Length;
                    locked = File.Exists(Path.Combine(folders[0], "lock"));
                }

                return o;
            })
            .To(sink)
            .RunAsync();

        sink.Rows.Select(o => o.CustomerId).Should().BeInAscendingOrder();
        sink.Rows.OrderBy(o => o.Id).Should().Equal(Orders, "every row comes back once");
        folders.Should().ContainSingle().Which.Should().StartWith(Path.Combine(_dir.Path, "patterns-etl-spill-"));
        runs.Should().Be(8, "2,500 rows at 300 a run spill 8 sorted runs; the last 100 stay in memory");
        locked.Should().BeTrue("a live spill folder holds its lock file");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task OrderBy_TempDirectory_StillSpillsUnderIt_InARunOwnedFolder()
    {
        var sink = new ListSink<Order>();
        var folders = 0;

        await Etl.From(Orders)
            .OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 300, tempDirectory: _dir.Path)
            .Select(o =>
            {
                folders = Math.Max(folders, Directory.GetDirectories(_dir.Path, "patterns-etl-spill-*").Length);
                return o;
            })
            .To(sink)
            .RunAsync();

        sink.Rows.Should().HaveCount(Rows);
        folders.Should().Be(1);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task OrderBy_DownstreamFailsDuringTheMerge_DeletesTheFolderAndClosesItsFiles()
    {
        var seen = 0;
        var run = () => Etl.From(Orders)
            .OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 300, spill: Spill)
            .Select(o => ++seen == 1_000 ? throw new InvalidOperationException("downstream failed") : o)
            .To(new ListSink<Order>())
            .RunAsync();

        (await run.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Be("downstream failed");
        seen.Should().Be(1_000);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        SpillTests.OpenHandlesUnder(_dir.Path).Should().Be(0);
    }

    [Fact]
    public async Task OrderBy_UpstreamFailsAfterSpilling_DeletesTheFolder()
    {
        var spilledAtFailure = 0;
        var run = () => Etl.From(Orders)
            .Select(o =>
            {
                if (o.Id == 2_000)
                {
                    spilledAtFailure = CsvFiles();
                    throw new InvalidOperationException("upstream failed");
                }

                return o;
            })
            .OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 300, spill: Spill)
            .To(new ListSink<Order>())
            .RunAsync();

        (await run.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Be("upstream failed");
        spilledAtFailure.Should().Be(6);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task OrderBy_CancelledWhileReading_StopsAndDeletesTheFolder()
    {
        using var cancel = new CancellationTokenSource();
        var spilledAtCancel = 0;
        var sink = new ListSink<Order>();

        var result = await Etl.From(ThenCancel(cancel, () => spilledAtCancel = CsvFiles()))
            .OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 300, spill: Spill)
            .To(sink)
            .RunAsync(cancellationToken: cancel.Token);

        result.Status.Should().Be(EtlRunStatus.Stopped);
        spilledAtCancel.Should().Be(8);
        sink.Rows.Count.Should().BeLessThan(Rows);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        SpillTests.OpenHandlesUnder(_dir.Path).Should().Be(0);
    }

    [Fact]
    public async Task OrderBy_CancelledDuringTheMerge_StopsThere_AndDeletesTheFolder()
    {
        using var cancel = new CancellationTokenSource();
        var passed = 0;

        var result = await Etl.From(Orders)
            .OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 300, spill: Spill)
            .Select(o =>
            {
                if (++passed == 100)
                {
                    cancel.Cancel();
                }

                return o;
            })
            .To(new ListSink<Order>())
            .RunAsync(cancellationToken: cancel.Token);

        result.Status.Should().Be(EtlRunStatus.Stopped);
        passed.Should().BeLessThan(Rows, "the merge stops at the cancellation, not at the end of the runs");
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
        SpillTests.OpenHandlesUnder(_dir.Path).Should().Be(0);
    }

    [Fact]
    public async Task OrderBy_KilledMidSort_LeavesAFolderTheNextSpillSweeps()
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Patterns.Etl.CrashHost.dll"));
        start.ArgumentList.Add("sort");
        start.ArgumentList.Add(_dir.Path);
        using (var child = Process.Start(start)!)
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            try
            {
                string? line;
                while ((line = await child.StandardOutput.ReadLineAsync(timeout.Token)) is not null && line != "spilled")
                {
                }

                line.Should().Be("spilled", "the child reports once its sort has spilled");
            }
            finally
            {
                child.Kill(entireProcessTree: true);
                await child.WaitForExitAsync(CancellationToken.None);
            }
        }

        var left = Directory.GetDirectories(_dir.Path, "patterns-etl-spill-*").Should().ContainSingle().Subject;
        File.Exists(Path.Combine(left, "lock")).Should().BeTrue();
        Directory.GetFiles(left, "*.csv").Should().HaveCount(10, "1,000 rows at 100 a run");

        var sink = new ListSink<Order>();
        await Etl.From(Orders).OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 300, spill: Spill).To(sink).RunAsync();

        sink.Rows.Should().HaveCount(Rows);
        Directory.Exists(left).Should().BeFalse("the next spill under the same folder sweeps the one whose process died");
        Directory.GetDirectories(_dir.Path, "patterns-etl-spill-*").Should().BeEmpty();
    }

    [Fact]
    public async Task OrderBy_SpillOff_FailsPastItsBudget_AndNotAtIt()
    {
        var fits = new ListSink<Order>();
        await Etl.From(Orders.Take(300)).OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 300, spill: EtlSpill.Off).To(fits).RunAsync();

        var run = () => Etl.From(Orders).OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 300, spill: EtlSpill.Off).To(new ListSink<Order>(), "sorted").RunAsync();

        fits.Rows.Should().HaveCount(300);
        var error = (await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>()).Which;
        error.Message.Should().Be("ETL job 'sorted' stopped: the OrderBy stage would hold 301 rows, more than its memory budget of 300 rows (memoryBudgetRows), and spilling is off (EtlSpill.Off). Let it spill (leave spill unset), or raise memoryBudgetRows.");
        error.Stage.Should().Be("OrderBy");
    }

    [Fact]
    public void OrderBy_TempDirectoryAndSpill_AreRejectedTogether()
    {
        var sort = () => Etl.From(Orders).OrderBy(o => o.Id, Order.Schema, tempDirectory: _dir.Path, spill: Spill);

        sort.Should().Throw<ArgumentException>().Which.ParamName.Should().Be("tempDirectory");
    }

    private int CsvFiles() => Directory.EnumerateFiles(_dir.Path, "*.csv", SearchOption.AllDirectories).Count();

    private static async IAsyncEnumerable<Order> ThenCancel(CancellationTokenSource cancel, Action beforeCancel, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        foreach (var order in Orders)
        {
            yield return order;
        }

        beforeCancel();
        await cancel.CancelAsync();
        await Task.Delay(Timeout.Infinite, cancellationToken);
    }
}
