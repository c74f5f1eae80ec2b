using System.Globalization;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Etl.Samples;
using Patterns.Queues;

namespace Patterns.Etl.Tests;

/// <summary>
/// kill -9 of a process loading a RabbitMQ queue into SQLite: the child (Patterns.Etl.CrashHost, queue mode) merges the
/// orders of a queue on id in batches of 20, quarantining the 1% with a negative amount, and reports each committed
/// batch; after a random number of batches the test answers and kills it at once (SIGKILL), so it dies with messages
/// taken from the queue but not yet committed. A second child then loads until the target is complete. Every order
/// must be in the target exactly as sent and every bad one in the quarantine: a message the first child took but did
/// not commit was not acknowledged, so the broker delivered it again. <c>PATTERNS_KILL_ITERATIONS</c> sets the
/// iterations (default 20).
/// </summary>
public sealed class QueueProcessKillTests : IDisposable
{
    private const int Rows = 400;
    private const int BatchSize = 20;

    private readonly TempDir _dir = new();

    private static int Iterations =>
        int.TryParse(Environment.GetEnvironmentVariable("PATTERNS_KILL_ITERATIONS"), CultureInfo.InvariantCulture, out var n) && n > 0 ? n : 20;

    private static string Broker => Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/";

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Kill9_QueueToSqlite_KilledAtRandomPoints_NoMessageIsLost_AndEachOrderIsLoadedAsSent()
    {
        var orders = Enumerable.Range(1, Rows).Select(Order).ToList();
        var good = orders.Where(o => o.Amount >= 0).ToList();
        var bad = orders.Where(o => o.Amount < 0).Select(o => o.Id.ToString(CultureInfo.InvariantCulture)).Order(StringComparer.Ordinal).ToList();
        var seed = Environment.TickCount;
        var random = new Random(seed);
        for (var i = 0; i < Iterations; i++)
        {
            var prefix = $"test.etlkill.{Guid.NewGuid():N}"[..26] + ".";
            await SendAsync(prefix, orders);
            var target = _dir.Sqlite($"queue{i}.db");
            var killAfter = random.Next(1, 6);
            (await RunChildAsync(prefix, target, good.Count, bad.Count, killAfter)).Should().Be("killed", $"iteration {i} (seed {seed}) kills the child after {killAfter} batches");

            var resumed = await RunChildAsync(prefix, target, good.Count, bad.Count, killAfter: null);
            resumed.Should().Be("done Stopped", $"iteration {i} (seed {seed}): the second child loads every order");
            Db.ReadSqlite(target).Should().Equal(good, $"iteration {i} (seed {seed}): every order once, as sent");
            Quarantined(target).Should().Equal(bad, $"iteration {i} (seed {seed}): every bad order is quarantined");
        }
    }

    internal static Order Order(int id) =>
        new(id, id * 7L, id % 100 == 50 ? -id : id * 1.25m, new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc).AddMinutes(id), "paid", "north", "p" + id, "web", id % 3 == 0 ? null : "note " + id, $"c{id}@example.test");

    internal static async Task SendAsync(string prefix, List<Order> orders)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.Logging.ClearProviders();
        builder.AddPatterns(p => p.UseRabbitMq(o =>
        {
            o.Uri = new Uri(Broker);
            o.NamePrefix = prefix;
        }));
        builder.AddMessageQueue(q => q.AddQueue("orders", o => o.Capacity = 10_000)); // the capacity the source declares
        using var host = builder.Build();
        try
        {
            await host.StartAsync();
        }
        catch (Exception ex) when (Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ") is not { Length: > 0 })
        {
            Assert.Skip($"RabbitMQ is not reachable (PATTERNS_RABBITMQ): {ex.Message}");
        }

        var sender = host.Services.GetRequiredService<IQueueSender>();
        foreach (var order in orders)
        {
            await sender.SendAsync("orders", order);
        }

        await host.StopAsync();
    }

    private static List<string> Quarantined(string target)
    {
        using var connection = new SqliteConnection(target);
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT DISTINCT raw FROM patterns_etl_quarantine";
        using var reader = command.ExecuteReader();
        var raw = new List<string>();
        while (reader.Read())
        {
            raw.Add(reader.GetString(0));
        }

        return [.. raw.Order(StringComparer.Ordinal)];
    }

    private static Task<string> RunChildAsync(string prefix, string target, int good, int bad, int? killAfter) =>
        CrashHostChild.RunAsync(new[] { "queue", Broker, prefix, target, "queue-kill", BatchSize.ToString(CultureInfo.InvariantCulture), good.ToString(CultureInfo.InvariantCulture), bad.ToString(CultureInfo.InvariantCulture) }, killAfter);
}
