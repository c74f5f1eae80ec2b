using System.Globalization;
using Microsoft.Data.Sqlite;
using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

/// <summary>
/// kill -9 of a process appending a RabbitMQ queue's orders to a table with no key, killed exactly between a batch's
/// commit and the acknowledgement of its messages: the child (Patterns.Etl.CrashHost, queue-append mode) reports each
/// committed batch from inside the sink, before the run acknowledges it, and the test kills it there without answering.
/// The broker then delivers that batch's messages again to a second child. An append sink would load them twice; the
/// run records the message ids with each batch (in the same transaction) and skips those already recorded, so every
/// order is in the table exactly once and every bad one quarantined exactly once. <c>PATTERNS_KILL_ITERATIONS</c> sets
/// the iterations (default 20).
/// </summary>
public abstract class QueueAppendProcessKillTests : IAsyncLifetime
{
    private const int Rows = 200;
    private const int BatchSize = 20;

    protected TempDir Dir { get; } = new();

    private static int Iterations =>
        int.TryParse(Environment.GetEnvironmentVariable("PATTERNS_KILL_ITERATIONS"), CultureInfo.InvariantCulture, out var n) && n > 0 ? n : 20;

    private static string Broker => Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/";

    public virtual ValueTask InitializeAsync() => default;

    public virtual ValueTask DisposeAsync()
    {
        Dir.Dispose();
        return default;
    }

    [Fact]
    public async Task Kill9_BetweenCommitAndAck_AppendSink_LoadsEachMessageOnce()
    {
        var orders = Enumerable.Range(1, Rows).Select(QueueProcessKillTests.Order).ToList();
        var good = orders.Where(o => o.Amount >= 0).ToList();
        var bad = orders.Where(o => o.Amount < 0).Select(o => o.Id.ToString(CultureInfo.InvariantCulture)).Order(StringComparer.Ordinal).ToList();
        var seed = Environment.TickCount;
        var random = new Random(seed);
        for (var i = 0; i < Iterations; i++)
        {
            var prefix = $"test.etlappend.{Guid.NewGuid():N}"[..28] + ".";
            await QueueProcessKillTests.SendAsync(prefix, orders);
            var (target, table) = await NewTargetAsync($"append{i}");
            var killAfter = random.Next(1, 6);
            (await RunChildAsync(prefix, target, table, good.Count, bad.Count, killAfter)).Should().Be("killed", $"iteration {i} (seed {seed}) kills the child after the commit of batch {killAfter}");
            (await ReadAsync(target, table)).Should().NotBeEmpty($"iteration {i} (seed {seed}): the child died after committing {killAfter} batches, before acknowledging the last");

            var resumed = await RunChildAsync(prefix, target, table, good.Count, bad.Count, killAfter: null);
            resumed.Should().Be("done Stopped", $"iteration {i} (seed {seed}): the second child loads every order");
            (await ReadAsync(target, table)).Should().Equal(good, $"iteration {i} (seed {seed}): every order exactly once, as sent (the redelivered batch is skipped)");
            (await QuarantinedAsync(target, table)).Should().Equal(bad, $"iteration {i} (seed {seed}): every bad order is quarantined exactly once");
        }
    }

    protected abstract Task<(string Target, string Table)> NewTargetAsync(string name);

    protected abstract Task<List<Order>> ReadAsync(string target, string table);

    /// <summary>The raw text of every quarantined row (not distinct), sorted.</summary>
    protected abstract Task<List<string>> QuarantinedAsync(string target, string table);

    private static Task<string> RunChildAsync(string prefix, string target, string table, int good, int bad, int? killAfter) =>
        CrashHostChild.RunAsync(
            new[] { "queue-append", Broker, prefix, target, table, "queue-append-kill", BatchSize.ToString(CultureInfo.InvariantCulture), good.ToString(CultureInfo.InvariantCulture), bad.ToString(CultureInfo.InvariantCulture) },
            killAfter,
            answerLast: false);
}

public sealed class SqliteQueueAppendProcessKillTests : QueueAppendProcessKillTests
{
    protected override Task<(string Target, string Table)> NewTargetAsync(string name) => Task.FromResult((Dir.Sqlite(name + ".db"), "orders"));

    protected override Task<List<Order>> ReadAsync(string target, string table) => Task.FromResult(Db.ReadSqlite(target, table));

    protected override Task<List<string>> QuarantinedAsync(string target, string table)
    {
        using var connection = new SqliteConnection(target);
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT raw FROM patterns_etl_quarantine";
        using var reader = command.ExecuteReader();
        var raw = new List<string>();
        while (reader.Read())
        {
            raw.Add(reader.GetString(0));
        }

        return Task.FromResult<List<string>>([.. raw.Order(StringComparer.Ordinal)]);
    }
}

public sealed class PostgresQueueAppendProcessKillTests : QueueAppendProcessKillTests
{
    private readonly PgSchemas _schemas = new();

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

    protected override async Task<List<Order>> ReadAsync(string target, string table)
    {
        try
        {
            return await Db.ReadPostgresAsync(await Pg.RequireAsync(), table);
        }
        catch (Npgsql.PostgresException ex) when (ex.SqlState == Npgsql.PostgresErrorCodes.UndefinedTable)
        {
            return [];
        }
    }

    protected override async Task<List<string>> QuarantinedAsync(string target, string table)
    {
        await using var command = (await Pg.RequireAsync()).CreateCommand($"SELECT raw FROM {table.Split('.')[0]}.patterns_etl_quarantine");
        await using var reader = await command.ExecuteReaderAsync();
        var raw = new List<string>();
        while (await reader.ReadAsync())
        {
            raw.Add(reader.GetString(0));
        }

        return [.. raw.Order(StringComparer.Ordinal)];
    }
}
