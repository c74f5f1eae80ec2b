using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

public sealed class MulticastTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task EveryBranchGetsExactlyItsRows_InOrder()
    {
        var all = new ListSink<int>();
        var even = new ListSink<int>();
        var text = new ListSink<string>();
        var split = new ListSink<int>();

        var result = await Etl.From(Enumerable.Range(1, 10_000))
            .Multicast(
                "fan-out",
                b => b.To("all", all),
                b => b.Where(i => i % 2 == 0).To("even", even),
                b => b.Where(i => i % 3 == 0).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).To("text", text),
                b => b.Where(i => i <= 100).SelectMany(i => new[] { i, -i }).To("split", split))
            .RunAsync(new EtlRunOptions { BatchSize = 333 });

        all.Rows.Should().Equal(Enumerable.Range(1, 10_000));
        even.Rows.Should().Equal(Enumerable.Range(1, 10_000).Where(i => i % 2 == 0));
        text.Rows.Should().Equal(Enumerable.Range(1, 10_000).Where(i => i % 3 == 0).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        split.Rows.Should().Equal(Enumerable.Range(1, 100).SelectMany(i => new[] { i, -i }));
        result.Status.Should().Be(EtlRunStatus.Completed);
        result.RowsRead.Should().Be(10_000);
        result.RowsLoaded.Should().Be(10_000);
        result.RowsInserted.Should().Be(10_000 + 5_000 + 3_333 + 200);
        result.Branches.Should().Equal(
            new EtlBranchResult("all", 10_000, 10_000, 0, 0),
            new EtlBranchResult("even", 5_000, 5_000, 0, 0),
            new EtlBranchResult("text", 3_333, 3_333, 0, 0),
            new EtlBranchResult("split", 200, 200, 0, 0));
    }

    [Fact]
    public async Task Branches_MoveInLockStep_TheFastOneNeverStartsABatchBeforeTheSlowOneFinishedThePrevious()
    {
        var source = new CountingSource(5_000);
        var slow = new SlowSink(source);
        var fast = new LeadProbe(slow);

        var result = await Etl.From(source.Rows())
            .Multicast("lock-step", b => b.To("fast", fast), b => b.To("slow", slow))
            .RunAsync(new EtlRunOptions { BatchSize = 100, MaxPendingBatches = 4 });

        fast.Writes.Should().Be(50);
        fast.MaxLead.Should().Be(0, "each batch starts on every branch only when every branch has written the one before");
        result.Branches.Select(b => (b.Name, b.RowsLoaded)).Should().Equal(("fast", 5_000L), ("slow", 5_000L));
    }

    [Fact]
    public async Task TheSlowestBranchHoldsBackTheSource()
    {
        const int batchSize = 100;
        var source = new CountingSource(20_000);
        var slow = new SlowSink(source);
        var fast = new ListSink<int>();

        await Etl.From(source.Rows())
            .Multicast("slow-and-fast", b => b.To("fast", fast), b => b.To("slow", slow))
            .RunAsync(new EtlRunOptions { BatchSize = batchSize, MaxPendingBatches = 1 });

        fast.Rows.Should().HaveCount(20_000);
        slow.Written.Should().Be(20_000);

        // Rows the source gave out that the slow branch had not finished: the batch it writes, the batches the batcher
        // holds (MaxPendingBatches + 1) and the stream's buffer (one batch). Without back-pressure it would reach 20,000.
        source.MaxAhead.Should().BeLessThanOrEqualTo(batchSize * 4 + 1);
    }

    [Fact]
    public async Task AFailingBranch_StopsTheRun_NamingIt_AndTheRestartLoadsEachBranchExactlyOnce()
    {
        var csv = _dir.File("orders.csv");
        var bad = OrderData.Write(csv, 1_000, badEvery: 100);
        var db = _dir.Sqlite();
        var failing = new FailingSink<Order>(Sqlite.Append<Order>(db, "orders_b"), failOnWrite: 3);
        EtlPipeline<Order> Pipeline(EtlSink<Order> b) =>
            Etl.From(Csv.Read<Order>(csv)).Multicast("orders", a => a.To("a", Sqlite.Append<Order>(db, "orders_a")), branch => branch.To("b", b));

        var first = () => Pipeline(failing).RunAsync(new EtlRunOptions { BatchSize = 100 });

        var error = (await first.Should().ThrowAsync<EtlBranchException>()).Which;
        error.Branch.Should().Be("b");
        error.Message.Should().Be("ETL job 'orders': multicast branch 'b' failed: injected failure on write 3");
        Db.ScalarSqlite(db, "SELECT count(*) FROM orders_a").Should().Be(300, "the other branch finished the batch the failing one broke on");
        Db.ScalarSqlite(db, "SELECT count(*) FROM orders_b").Should().Be(200);

        var second = await Pipeline(Sqlite.Append<Order>(db, "orders_b")).RunAsync(new EtlRunOptions { BatchSize = 100 });
        var third = await Pipeline(Sqlite.Append<Order>(db, "orders_b")).RunAsync(new EtlRunOptions { BatchSize = 100 });

        second.Status.Should().Be(EtlRunStatus.Completed);
        var expected = await Db.ReadCsvAsync(csv);
        Db.ReadSqlite(db, "orders_a").Should().Equal(expected);
        Db.ReadSqlite(db, "orders_b").Should().Equal(expected);
        Db.ScalarSqlite(db, "SELECT count(*) FROM patterns_etl_quarantine").Should().Be(bad.Count, "quarantined rows are stored once, with one branch");
        third.Status.Should().Be(EtlRunStatus.AlreadyCompleted);
        second.Branches.Select(b => (b.Name, b.RowsLoaded, b.RowsInserted)).Should().Equal(("a", 690L, 690L), ("b", 790L, 790L));
    }

    [Fact]
    public void BranchesWithTheSameName_AreRejected()
    {
        var create = () => Etl.From([1]).Multicast("m", b => b.To("x", new ListSink<int>()), b => b.To("x", new ListSink<int>()));

        create.Should().Throw<ArgumentException>().WithMessage("The multicast has two branches named 'x'*");
    }

    /// <summary>A fast sink that records, at each write, how many rows it has written beyond the slow branch.</summary>
    private sealed class LeadProbe(SlowSink slow) : EtlSink<int>
    {
        private long _written;

        public long MaxLead { get; private set; } = long.MinValue;

        public int Writes { get; private set; }

        public override string Name => "probe";

        public override ValueTask<EtlSinkWriter<int>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer(this));

        private void Write(int rows)
        {
            MaxLead = Math.Max(MaxLead, _written - Interlocked.Read(ref slow.Written));
            _written += rows;
            Writes++;
        }

        private sealed class Writer(LeadProbe probe) : EtlSinkWriter<int>
        {
            public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<int> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                probe.Write(rows.Length);
                return new(new EtlLoadCounts(rows.Length, 0, 0));
            }

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => default;
        }
    }

    private sealed class CountingSource(int count)
    {
        private long _pulled;

        public long Done;

        public long MaxAhead { get; private set; }

        public IEnumerable<int> Rows()
        {
            for (var i = 1; i <= count; i++)
            {
                var ahead = ++_pulled - Interlocked.Read(ref Done);
                MaxAhead = Math.Max(MaxAhead, ahead);
                yield return i;
            }
        }
    }

    /// <summary>A sink that gives the source many chances to run ahead while it writes each batch.</summary>
    private sealed class SlowSink(CountingSource source) : EtlSink<int>
    {
        public long Written;

        public override string Name => "slow";

        public override ValueTask<EtlSinkWriter<int>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer(this));

        private sealed class Writer(SlowSink sink) : EtlSinkWriter<int>
        {
            public override async ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<int> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                for (var i = 0; i < 20; i++)
                {
                    await Task.Yield();
                }

                Interlocked.Add(ref sink.Written, rows.Length);
                Interlocked.Add(ref sink.Source.Done, rows.Length);
                return new EtlLoadCounts(rows.Length, 0, 0);
            }

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => default;
        }

        private CountingSource Source => source;
    }
}

/// <summary>A sink that fails its Nth write (before it reaches the inner sink).</summary>
internal sealed class FailingSink<T>(EtlSink<T> inner, int failOnWrite) : EtlSink<T>
{
    public override string Name => inner.Name;

    public override async ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) =>
        new Writer(await inner.OpenAsync(context, cancellationToken), failOnWrite);

    private sealed class Writer(EtlSinkWriter<T> inner, int failOnWrite) : EtlSinkWriter<T>
    {
        private int _writes;

        public override bool StoresBookmarks => inner.StoresBookmarks;

        public override bool StoresQuarantine => inner.StoresQuarantine;

        public override ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken) => inner.ReadBookmarkAsync(cancellationToken);

        public override ValueTask ResetAsync(CancellationToken cancellationToken) => inner.ResetAsync(cancellationToken);

        public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> rows, EtlCommit commit, CancellationToken cancellationToken) =>
            ++_writes == failOnWrite ? throw new IOException($"injected failure on write {_writes}") : inner.WriteAsync(rows, commit, cancellationToken);

        public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => inner.CompleteAsync(commit, cancellationToken);

        public override async ValueTask DisposeAsync()
        {
            await inner.DisposeAsync();
            await base.DisposeAsync();
        }
    }
}
