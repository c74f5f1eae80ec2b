using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

public sealed class SqliteLoadTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task CsvToSqlite_Append_LoadsEveryRowExactly()
    {
        var csv = _dir.File("orders.csv");
        OrderData.Write(csv, 5_000);
        var expected = Generated(5_000);

        var result = await Etl.From(Csv.Read<Order>(csv)).To(Sqlite.Append<Order>(_dir.Sqlite(), "orders")).RunAsync(new EtlRunOptions { BatchSize = 1_000 });

        result.Status.Should().Be(EtlRunStatus.Completed);
        result.RowsRead.Should().Be(5_000);
        result.RowsLoaded.Should().Be(5_000);
        result.RowsInserted.Should().Be(5_000);
        result.RowsQuarantined.Should().Be(0);
        result.Bookmark.Should().Be(new EtlBookmark(5_000, 5_001, null, true));
        Db.ReadSqlite(_dir.Sqlite()).Should().Equal(expected);
    }

    [Fact]
    public async Task SqliteQueryToCsv_RoundTrip_ReproducesTheRows()
    {
        var csv = _dir.File("orders.csv");
        OrderData.Write(csv, 2_000);
        await Etl.From(Csv.Read<Order>(csv)).To(Sqlite.Append<Order>(_dir.Sqlite(), "orders")).RunAsync();
        var copy = _dir.File("copy.csv");

        var result = await Etl.From(Sqlite.Query(_dir.Sqlite(), "SELECT * FROM orders ORDER BY id", Order.Schema)).To(Csv.Write<Order>(copy)).RunAsync();

        result.RowsLoaded.Should().Be(2_000);
        (await Db.ReadCsvAsync(copy)).Should().Equal(Generated(2_000));
        File.Exists(copy + "." + result.RunId + ".tmp").Should().BeFalse();
    }

    [Fact]
    public async Task Merge_FullMode_MatchesInMemoryReference()
    {
        var first = _dir.File("v1.csv");
        OrderData.Write(first, 2_000);
        var sink = Sqlite.Full<Order>(_dir.Sqlite(), "orders", "id");
        var initial = await Etl.From(Csv.Read<Order>(first)).To(sink, "orders-full").RunAsync(new EtlRunOptions { BatchSize = 300 });
        initial.RowsInserted.Should().Be(2_000);

        // Second load: 5% of rows deleted (absent), 45% updated, the rest unchanged, and 1,000 new rows.
        var reference = Generated(2_000).ToDictionary(o => o.Id);
        var second = _dir.File("v2.csv");
        int updated = 0, deleted = 0;
        OrderData.Write(second, 3_000, change: (i, id, order) =>
        {
            if (id > 2_000)
            {
                return order;
            }

            var original = reference[id];
            if (id % 20 == 0)
            {
                deleted++;
                return null;
            }

            if (id % 20 < 10)
            {
                updated++;
                return original with { Status = "changed", Amount = original.Amount + 1 };
            }

            return original;
        });
        var expected = (await Db.ReadCsvAsync(second)).OrderBy(o => o.Id).ToList();

        var result = await Etl.From(Csv.Read<Order>(second)).To(sink, "orders-full").RunAsync(new EtlRunOptions { BatchSize = 300, Partition = "v2" });

        result.RowsInserted.Should().Be(1_000);
        result.RowsUpdated.Should().Be(updated);
        result.RowsDeleted.Should().Be(deleted);
        Db.ReadSqlite(_dir.Sqlite()).Should().Equal(expected);

        var again = await Etl.From(Csv.Read<Order>(second)).To(sink, "orders-full").RunAsync(new EtlRunOptions { Partition = "v2-again" });
        again.RowsChanged.Should().Be(0, "a re-run of the same data changes nothing");
    }

    [Fact]
    public Task Merge_DeleteMarkers_DeleteUpdateAndInsert_MatchInMemoryReference_AndARerunChangesNothing() =>
        DeleteDelta.MergeAndRerunAsync(Sqlite.Merge<Order>(_dir.Sqlite(), "orders", o => o.Id, DeleteDelta.IsDelete), _dir.File("delta.csv"), () => Task.FromResult(Db.ReadSqlite(_dir.Sqlite())));

    [Fact]
    public Task Merge_DeleteMarkers_StopThenResume_DeletesEachKeyOnce() =>
        DeleteDelta.StopThenResumeAsync(
            Sqlite.Merge<Order>(_dir.Sqlite(), "orders", o => o.Id, DeleteDelta.IsDelete),
            _dir.File("delta.csv"),
            () => Task.FromResult(Db.ReadSqlite(_dir.Sqlite())),
            () => Task.FromResult(Db.ScalarSqlite(_dir.Sqlite(), "SELECT \"offset\" FROM patterns_etl_bookmarks WHERE job = 'delta'")),
            () => Task.FromResult(Db.ScalarSqlite(_dir.Sqlite(), "SELECT count(*) FROM orders WHERE id <= 2000")));

    [Fact]
    public void DeleteMarkers_InAppendMode_AreRejected()
    {
        var act = () => Sqlite.Load(new SqliteSinkOptions<Order> { ConnectionString = _dir.Sqlite(), Table = "orders", Schema = Order.Schema, Deleted = DeleteDelta.IsDelete });

        act.Should().Throw<ArgumentException>().WithMessage("SqliteSinkOptions.Deleted marks rows to delete by key, which needs Merge or Full mode (was Append).*");
    }

    [Fact]
    public async Task MalformedRows_OnePercent_AreQuarantinedWithLineAndRawText()
    {
        var csv = _dir.File("bad.csv");
        var badLines = OrderData.Write(csv, 10_000, badEvery: 100);
        var lines = File.ReadAllLines(csv);

        var result = await Etl.From(Csv.Read<Order>(csv)).To(Sqlite.Append<Order>(_dir.Sqlite(), "orders")).RunAsync(new EtlRunOptions { BatchSize = 1_000, MaxErrorRate = 0.02 });

        result.RowsRead.Should().Be(10_000);
        result.RowsQuarantined.Should().Be(100);
        result.RowsInserted.Should().Be(9_900);
        Db.ScalarSqlite(_dir.Sqlite(), "SELECT count(*) FROM orders").Should().Be(9_900);
        using var connection = new Microsoft.Data.Sqlite.SqliteConnection(_dir.Sqlite());
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT line, raw, column_name, error, run_id, stage, source FROM patterns_etl_quarantine ORDER BY line";
        using var reader = command.ExecuteReader();
        var quarantined = new List<(long Line, string Raw, string? Column, string Error)>();
        while (reader.Read())
        {
            reader.GetString(4).Should().Be(result.RunId);
            reader.GetString(5).Should().Be("source");
            reader.GetString(6).Should().Be(csv);
            quarantined.Add((reader.GetInt64(0), reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2), reader.GetString(3)));
        }

        quarantined.Select(q => q.Line).Should().Equal(badLines);
        quarantined.Should().AllSatisfy(q => q.Raw.Should().Be(lines[q.Line - 1]));
        quarantined.Count(q => q.Column == "amount").Should().Be(34);
        quarantined.Should().Contain(q => q.Error.StartsWith("The row has 3 fields", StringComparison.Ordinal));
        quarantined.Should().Contain(q => q.Column == "placed_at" && q.Error.Contains("is not a timestamp", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ErrorBudget_Exceeded_StopsTheRunWithAClearError()
    {
        var csv = _dir.File("bad.csv");
        OrderData.Write(csv, 5_000, badEvery: 10);

        var run = () => Etl.From(Csv.Read<Order>(csv)).To(Sqlite.Append<Order>(_dir.Sqlite(), "orders"), "budget").RunAsync(new EtlRunOptions { BatchSize = 100, MaxErrors = 25 });

        var error = (await run.Should().ThrowAsync<EtlErrorBudgetExceededException>()).Which;
        error.Message.Should().StartWith("ETL job 'budget' stopped: 26 rows were quarantined, more than its error budget of 25 (EtlRunOptions.MaxErrors).");
        error.Quarantined.Should().Be(26);
        var loaded = Db.ScalarSqlite(_dir.Sqlite(), "SELECT count(*) FROM orders");
        var offset = Db.ScalarSqlite(_dir.Sqlite(), "SELECT \"offset\" FROM patterns_etl_bookmarks");
        loaded.Should().Be(200, "two whole batches of 100 committed before the budget ran out");
        offset.Should().Be(loaded + (offset / 10), "the bookmark covers the loaded rows and the bad rows among them");
        Db.ScalarSqlite(_dir.Sqlite(), "SELECT count(*) FROM patterns_etl_quarantine").Should().Be(offset / 10, "quarantined rows commit with the batch they precede");
    }

    [Fact]
    public async Task Stop_ThenResume_LoadsEachRowOnce_AndARerunChangesNothing()
    {
        var csv = _dir.File("orders.csv");
        OrderData.Write(csv, 6_000);
        var pipeline = Etl.From(Csv.Read<Order>(csv)).To(Sqlite.Append<Order>(_dir.Sqlite(), "orders"), "resume");
        using var stop = new CancellationTokenSource();
        var progress = new SyncProgress(p =>
        {
            if (p.RowsLoaded >= 2_000)
            {
                stop.Cancel();
            }
        });

        var first = await pipeline.RunAsync(new EtlRunOptions { BatchSize = 500, Progress = progress }, stop.Token);
        first.Status.Should().Be(EtlRunStatus.Stopped);
        first.RowsLoaded.Should().BeLessThan(6_000);
        Db.ScalarSqlite(_dir.Sqlite(), "SELECT count(*) FROM orders").Should().Be(first.RowsLoaded);

        var second = await pipeline.RunAsync(new EtlRunOptions { BatchSize = 500 });
        second.Status.Should().Be(EtlRunStatus.Completed);
        (first.RowsLoaded + second.RowsLoaded).Should().Be(6_000);
        Db.ReadSqlite(_dir.Sqlite()).Should().Equal(Generated(6_000));

        var third = await pipeline.RunAsync();
        third.Status.Should().Be(EtlRunStatus.AlreadyCompleted);
        third.RowsRead.Should().Be(0);
        Db.ScalarSqlite(_dir.Sqlite(), "SELECT count(*) FROM orders").Should().Be(6_000);
    }

    [Fact]
    public async Task Partitions_RunWithAConcurrencyLimit_EachWithItsBookmark()
    {
        var files = Enumerable.Range(0, 4).Select(i =>
        {
            var path = _dir.File($"day{i}.csv");
            OrderData.Write(path, 500, seed: i, firstId: (i * 1_000) + 1);
            return path;
        }).ToList();
        var sink = Sqlite.Merge<Order>(_dir.Sqlite(), "orders", "id");
        var pipelines = files.ToDictionary(f => Path.GetFileName(f), f => Etl.From(Csv.Read<Order>(f)).To(sink, "daily"));

        var results = await Task.WhenAll(pipelines.Select(p => p.Value.RunAsync(new EtlRunOptions { Partition = p.Key, BatchSize = 100 })));
        var reruns = await pipelines.First().Value.RunPartitionsAsync(pipelines.Keys, maxConcurrency: 2);

        results.Sum(r => r.RowsInserted).Should().Be(2_000);
        reruns.Should().HaveCount(4);
        reruns.Should().AllSatisfy(r => r.Status.Should().Be(EtlRunStatus.AlreadyCompleted));
        Db.ScalarSqlite(_dir.Sqlite(), "SELECT count(*) FROM patterns_etl_bookmarks WHERE job = 'daily' AND completed = 1").Should().Be(4);
    }

    [Fact]
    public async Task Options_Invalid_ListEveryProblem()
    {
        var act = () => Sqlite.Load(new SqliteSinkOptions<Order> { Table = "", Mode = EtlLoadMode.Merge, Schema = Order.Schema, Key = ["nope"] });
        act.Should().Throw<ArgumentException>().WithMessage("*ConnectionString is required*Table is required*Key names 'nope'*");

        var run = () => Etl.From(new[] { 1 }).To(new ListSink<int>()).RunAsync(new EtlRunOptions { BatchSize = 0, MaxErrorRate = 2 });
        (await run.Should().ThrowAsync<ArgumentException>()).Which.Message.Should().Contain("BatchSize").And.Contain("MaxErrorRate");
    }

    internal static List<Order> Generated(int rows, int seed = 42, int firstId = 1)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(firstId, rows).Select(id => OrderData.Make(random, id))];
    }
}

/// <summary>Reports progress synchronously on the reporting task (Progress&lt;T&gt; posts to the thread pool).</summary>
internal sealed class SyncProgress(Action<EtlProgress> report) : IProgress<EtlProgress>
{
    public void Report(EtlProgress value) => report(value);
}
