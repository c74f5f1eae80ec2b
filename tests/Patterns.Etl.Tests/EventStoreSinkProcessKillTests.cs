using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Etl.Samples;
using Patterns.EventSourcing;
using Patterns.Storage;

namespace Patterns.Etl.Tests;

/// <summary>
/// kill -9 during a load into the event store: a child process (Patterns.Etl.CrashHost, events mode) appends one event
/// per order of a CSV with 1% bad rows through the event-store sink in batches of 100, reporting each committed batch
/// and waiting for the test's answer; after a random number of batches the test answers and kills it at once (SIGKILL),
/// so it dies somewhere in the next batch's unit of work. A second child resumes to the end. Every order must then be
/// exactly one event, in order, in the log and in its stream (versions consecutive), the bookmark at the end, each bad
/// row quarantined once, and (checked after the last iteration) a re-run must append nothing. <c>PATTERNS_KILL_ITERATIONS</c> sets the iterations (default 20).
/// </summary>
public abstract class EventStoreSinkProcessKillTests : IAsyncLifetime
{
    private const int Rows = 2_000;
    private const int BatchSize = 100;

    protected TempDir Dir { get; } = new();

    protected abstract string Kind { get; }

    private static int Iterations =>
        int.TryParse(Environment.GetEnvironmentVariable("PATTERNS_KILL_ITERATIONS"), CultureInfo.InvariantCulture, out var n) && n > 0 ? n : 20;

    public virtual ValueTask InitializeAsync() => default;

    public virtual ValueTask DisposeAsync()
    {
        Dir.Dispose();
        return default;
    }

    [Fact]
    public async Task Kill9_DuringALoadIntoTheEventStore_ResumesAndAppendsEachRowExactlyOnce()
    {
        var csv = Dir.File("orders.csv");
        var bad = OrderData.Write(csv, Rows, badEvery: 100);
        var expected = await Db.ReadCsvAsync(csv);
        expected.Should().HaveCount(Rows - bad.Count);
        var streams = expected.GroupBy(o => OrderEvent.StreamOf(o.CustomerId)).ToDictionary(g => g.Key, g => g.Select(o => o.Id).ToList());
        var seed = Environment.TickCount;
        var random = new Random(seed);
        for (var i = 0; i < Iterations; i++)
        {
            var (connectionString, schema) = await NewStoreAsync($"events{i}");
            var killAfter = random.Next(1, (Rows / BatchSize) - 2);
            var because = $"iteration {i} (seed {seed}, killed after {killAfter} batches)";
            (await RunChildAsync(connectionString, schema, csv, killAfter)).Should().Be("killed", because);
            (await RunChildAsync(connectionString, schema, csv, killAfter: null)).Should().StartWith("done Completed", because);

            using (var host = EventsHost.Build(Kind, connectionString, schema))
            {
                await host.StartAsync();
                var store = host.Services.GetRequiredService<IEventStore>();
                var events = await store.ReadAllAsync().ToListAsync();
                events.Select(e => ((OrderEvent)e.Data).Id).Should().Equal(expected.Select(o => o.Id), because + ": every row once, in order, in the log");
                foreach (var (stream, ids) in streams)
                {
                    var read = await store.ReadStreamAsync(stream).ToListAsync();
                    read.Select(e => ((OrderEvent)e.Data).Id).Should().Equal(ids, because + $": stream {stream} holds each of its rows once");
                    read.Select(e => e.Version).Should().Equal(Enumerable.Range(1, ids.Count).Select(v => (long)v), because + $": stream {stream}'s versions are consecutive");
                }

                var documents = host.Services.GetRequiredService<IDocumentStorage>();
                var bookmark = JsonDocument.Parse((await documents.GetAsync(EtlEventStore.BookmarkCollection, "events-kill|"))!).RootElement;
                bookmark.GetProperty("offset").GetInt64().Should().Be(Rows, because);
                bookmark.GetProperty("completed").GetBoolean().Should().BeTrue(because);
                var quarantined = await documents.ListAsync(EtlEventStore.QuarantineCollection).ToListAsync();
                quarantined.Select(q => JsonDocument.Parse(q.Value).RootElement.GetProperty("line").GetInt64()).Order().Should().Equal(bad, because + ": each bad row quarantined once");
                await host.StopAsync();
            }

            if (i == Iterations - 1)
            {
                // Once (a child process costs seconds): a re-run of the finished load appends nothing.
                (await RunChildAsync(connectionString, schema, csv, killAfter: null)).Should().Be("done AlreadyCompleted 0 0", because + ": a re-run appends nothing");
            }
        }
    }

    protected abstract Task<(string ConnectionString, string Schema)> NewStoreAsync(string name);

    private Task<string> RunChildAsync(string connectionString, string schema, string csv, int? killAfter) =>
        CrashHostChild.RunAsync(["events", Kind, connectionString, schema, csv, "events-kill", BatchSize.ToString(CultureInfo.InvariantCulture)], killAfter);
}

public sealed class SqliteEventStoreSinkProcessKillTests : EventStoreSinkProcessKillTests
{
    protected override string Kind => "sqlite";

    protected override Task<(string ConnectionString, string Schema)> NewStoreAsync(string name) => Task.FromResult(($"Data Source={Dir.File(name + ".db")}", "-"));
}

public sealed class PostgresEventStoreSinkProcessKillTests : EventStoreSinkProcessKillTests
{
    private readonly PgSchemas _schemas = new();

    protected override string Kind => "postgres";

    public override async ValueTask InitializeAsync() => await Pg.RequireAsync();

    public override async ValueTask DisposeAsync()
    {
        await _schemas.DisposeAsync();
        await base.DisposeAsync();
    }

    protected override async Task<(string ConnectionString, string Schema)> NewStoreAsync(string name)
    {
        var schema = await _schemas.NewAsync();
        return (Pg.ConnectionString, schema);
    }
}
