using System.Globalization;
using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

/// <summary>
/// kill -9 during an incremental load: a child process (Patterns.Etl.CrashHost) merges a CSV with 1% bad rows into the
/// target in batches of 100, reporting each committed batch and waiting for the test's answer; after a random number
/// of batches the test answers and kills it at once (SIGKILL), so it dies somewhere in the next batch's load or commit. The load is then resumed to its end; the target, the bookmark and the quarantine must equal a
/// clean run's, and a re-run must change 0 rows. <c>PATTERNS_KILL_ITERATIONS</c> sets the iterations (default 20).
/// </summary>
public abstract class EtlProcessKillTests : IAsyncLifetime
{
    private const int Rows = 3_000;
    private const int BatchSize = 100;

    protected TempDir Dir { get; } = new();

    private static int Iterations =>
        int.TryParse(Environment.GetEnvironmentVariable("PATTERNS_KILL_ITERATIONS"), CultureInfo.InvariantCulture, out var n) && n > 0 ? n : 20;

    protected abstract string Kind { get; }

    public virtual ValueTask InitializeAsync() => default;

    public virtual ValueTask DisposeAsync()
    {
        Dir.Dispose();
        return default;
    }

    [Fact]
    public async Task Kill9_DuringIncrementalLoad_ResumesToTheCleanRunsTarget_AndARerunChangesNothing()
    {
        var csv = Dir.File("orders.csv");
        var bad = OrderData.Write(csv, Rows, badEvery: 100);
        var seed = Environment.TickCount;
        var random = new Random(seed);
        var (cleanTarget, cleanTable) = await NewTargetAsync("clean");
        (await RunChildAsync(cleanTarget, cleanTable, csv, killAfter: null)).Should().StartWith("done Completed");
        var clean = await ReadAsync(cleanTarget, cleanTable);
        clean.Should().HaveCount(Rows - bad.Count);

        for (var i = 0; i < Iterations; i++)
        {
            var (target, table) = await NewTargetAsync($"kill{i}");
            var killAfter = random.Next(1, (Rows / BatchSize) - 2);
            var killed = await RunChildAsync(target, table, csv, killAfter);
            killed.Should().Be("killed", $"iteration {i} (seed {seed}) kills the child after {killAfter} batches");

            var resumed = await RunChildAsync(target, table, csv, killAfter: null);
            resumed.Should().StartWith("done Completed", $"iteration {i} (seed {seed})");
            (await ReadAsync(target, table)).Should().Equal(clean, $"iteration {i} (seed {seed}) must load every row exactly once");
            (await QuarantinedAsync(target, table)).Should().Equal(bad, $"iteration {i} (seed {seed}) quarantines each bad row exactly once");

            var rerun = await RunChildAsync(target, table, csv, killAfter: null);
            rerun.Should().Be("done AlreadyCompleted 0 0", $"iteration {i} (seed {seed}): re-running a finished load changes nothing");
        }
    }

    protected abstract Task<(string Target, string Table)> NewTargetAsync(string name);

    protected abstract Task<List<Order>> ReadAsync(string target, string table);

    protected abstract Task<List<long>> QuarantinedAsync(string target, string table);

    private Task<string> RunChildAsync(string target, string table, string csv, int? killAfter) =>
        CrashHostChild.RunAsync(new[] { Kind, target, table, csv, "kill-job", BatchSize.ToString(CultureInfo.InvariantCulture) }, killAfter);
}

public sealed class SqliteEtlProcessKillTests : EtlProcessKillTests
{
    protected override string Kind => "sqlite";

    protected override Task<(string Target, string Table)> NewTargetAsync(string name) => Task.FromResult((Dir.Sqlite(name + ".db"), "orders"));

    protected override Task<List<Order>> ReadAsync(string target, string table) => Task.FromResult(Db.ReadSqlite(target, table));

    protected override Task<List<long>> QuarantinedAsync(string target, string table)
    {
        using var connection = new Microsoft.Data.Sqlite.SqliteConnection(target);
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT line FROM patterns_etl_quarantine ORDER BY line";
        using var reader = command.ExecuteReader();
        var lines = new List<long>();
        while (reader.Read())
        {
            lines.Add(reader.GetInt64(0));
        }

        return Task.FromResult(lines);
    }
}

public sealed class PostgresEtlProcessKillTests : EtlProcessKillTests
{
    private readonly PgSchemas _schemas = new();

    protected override string Kind => "postgres";

    public override async ValueTask InitializeAsync() => await Pg.RequireAsync();

    public override async ValueTask DisposeAsync()
    {
        await _schemas.DisposeAsync();
        await base.DisposeAsync();
    }

    protected override async Task<(string Target, string Table)> NewTargetAsync(string name)
    {
        var schema = await _schemas.NewAsync();
        return (Pg.ConnectionString, $"{schema}.orders");
    }

    protected override async Task<List<Order>> ReadAsync(string target, string table) => await Db.ReadPostgresAsync(await Pg.RequireAsync(), table);

    protected override async Task<List<long>> QuarantinedAsync(string target, string table)
    {
        await using var command = (await Pg.RequireAsync()).CreateCommand($"SELECT line FROM {table.Split('.')[0]}.patterns_etl_quarantine ORDER BY line");
        await using var reader = await command.ExecuteReaderAsync();
        var lines = new List<long>();
        while (await reader.ReadAsync())
        {
            lines.Add(reader.GetInt64(0));
        }

        return lines;
    }
}
