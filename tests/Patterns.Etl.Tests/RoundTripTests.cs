using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Etl.Samples;
using Patterns.EventSourcing;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.Storage;

namespace Patterns.Etl.Tests;

/// <summary>
/// Every source into every sink: generated orders are put where the source reads them, run through the pipeline into the
/// sink, read back from where the sink put them, and compared with what was generated. SQLite is a real file; PostgreSQL
/// is the server of PATTERNS_POSTGRES (the pairs that need it skip, saying so, when it is not reachable); the event store
/// is SQLite's; the queue is the in-memory transport's.
/// </summary>
public sealed class RoundTripTests : IAsyncLifetime
{
    private const int Rows = 60;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    private readonly TempDir _dir = new();
    private readonly PgSchemas _schemas = new();
    private IHost? _host;

    private static readonly string[] Sources = ["csv", "json-lines", "parquet", "sqlite-query", "postgres-query", "event-log", "queue", "async-enumerable"];

    private static readonly string[] Sinks = ["postgres", "sqlite", "csv", "json-lines", "parquet", "event-store", "queue"];

    public static TheoryData<string, string> Pairs()
    {
        var pairs = new TheoryData<string, string>();
        foreach (var source in Sources)
        {
            foreach (var sink in Sinks)
            {
                pairs.Add(source, sink);
            }
        }

        return pairs;
    }

    public ValueTask InitializeAsync() => default;

    public async ValueTask DisposeAsync()
    {
        if (_host is not null)
        {
            await _host.StopAsync();
            _host.Dispose();
        }

        await _schemas.DisposeAsync();
        _dir.Dispose();
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public async Task EachSourceIntoEachSink_ReadsBackWhatWasGenerated(string source, string sink)
    {
        if (source == "postgres-query" || sink == "postgres")
        {
            await Pg.RequireAsync();
        }

        var orders = SqliteLoadTests.Generated(Rows, seed: 7);
        _host = await StartAsync();
        var flow = await SourceAsync(source, orders);
        var (target, readBack) = await SinkAsync(sink);
        var pipeline = flow.To(target, "round-trip");

        EtlRunResult result;
        if (source == "queue" && sink is "csv" or "json-lines" or "parquet")
        {
            // A file sink makes its output durable only when the run completes, which a queue run never does: the run is
            // refused before it takes a message, rather than acknowledge messages it may lose.
            var refused = async () => await pipeline.RunAsync(new EtlRunOptions { BatchSize = 25 }).WaitAsync(Wait);
            await refused.Should().ThrowAsync<InvalidOperationException>().WithMessage("*makes its output durable only when the run completes*");
            return;
        }

        if (source == "queue")
        {
            // A queue source runs until it is stopped: stop it once every message's row is loaded.
            using var stop = new CancellationTokenSource(Wait);
            result = await pipeline.RunAsync(new EtlRunOptions { BatchSize = 25, Progress = new SyncProgress(p => StopAt(p, stop)) }, stop.Token);
            result.Status.Should().Be(EtlRunStatus.Stopped);
        }
        else
        {
            result = await pipeline.RunAsync(new EtlRunOptions { BatchSize = 25 }).WaitAsync(Wait);
            result.Status.Should().Be(EtlRunStatus.Completed);
        }

        result.RowsRead.Should().Be(Rows);
        result.RowsLoaded.Should().Be(Rows);
        result.RowsQuarantined.Should().Be(0);
        (await readBack()).OrderBy(o => o.Id).Should().Equal(orders, $"{source} into {sink} keeps every row and every field");
    }

    private static void StopAt(EtlProgress progress, CancellationTokenSource stop)
    {
        if (progress.RowsLoaded >= Rows)
        {
            stop.Cancel();
        }
    }

    /// <summary>Puts the orders where the source reads them, and returns the flow that reads them.</summary>
    private async Task<EtlFlow<Order>> SourceAsync(string source, List<Order> orders)
    {
        var services = _host!.Services;
        switch (source)
        {
            case "csv":
                await Etl.From(orders).To(Csv.Write<Order>(_dir.File("source.csv"))).RunAsync();
                return Etl.From(Csv.Read<Order>(_dir.File("source.csv")));
            case "json-lines":
                await Etl.From(orders).To(JsonLines.Write(_dir.File("source.jsonl"), OrderJson.Default.Order)).RunAsync();
                return Etl.From(JsonLines.Read(_dir.File("source.jsonl"), OrderJson.Default.Order));
            case "parquet":
                await Etl.From(orders).To(ParquetFiles.Write<Order>(_dir.File("source.parquet"))).RunAsync();
                return Etl.From(ParquetFiles.Read<Order>(_dir.File("source.parquet")));
            case "sqlite-query":
                await Etl.From(orders).To(Sqlite.Append<Order>(_dir.Sqlite("source.db"), "orders"), "source").RunAsync();
                return Etl.From(Sqlite.Query(_dir.Sqlite("source.db"), "SELECT id, customer_id, amount, placed_at, status, region, product, channel, note, email FROM orders ORDER BY id", Order.Schema));
            case "postgres-query":
                var table = await _schemas.NewAsync() + ".orders";
                await Etl.From(orders).To(Postgres.Append<Order>(Pg.ConnectionString, table), "source").RunAsync();
                return Etl.From(Postgres.Query(await Pg.RequireAsync(), $"SELECT id, customer_id, amount, placed_at, status, region, product, channel, note, email FROM {table} ORDER BY id", Order.Schema));
            case "event-log":
                await Etl.From(orders).To(EtlEventStore.Append<Order>(services, o => "source-" + o.Id, o => o), "source").RunAsync();
                return Etl.From(EtlSources.EventLog(services.GetRequiredService<IEventStore>(), new EventFilter { StreamPrefix = "source-" }))
                    .Select(e => (Order)e.Data);
            case "queue":
                var sender = services.GetRequiredService<IQueueSender>();
                foreach (var order in orders)
                {
                    await sender.SendAsync("source-orders", order);
                }

                return EtlTransport.FromQueue<Order>(services, "source-orders");
            default:
                return Etl.From(ToAsync(orders));
        }
    }

    /// <summary>The sink, and how to read back what it wrote.</summary>
    private async Task<(EtlSink<Order> Sink, Func<Task<List<Order>>> ReadBack)> SinkAsync(string sink)
    {
        var services = _host!.Services;
        switch (sink)
        {
            case "postgres":
                var table = await _schemas.NewAsync() + ".orders";
                return (Postgres.Append<Order>(Pg.ConnectionString, table), async () => await Db.ReadPostgresAsync(await Pg.RequireAsync(), table));
            case "sqlite":
                return (Sqlite.Append<Order>(_dir.Sqlite("target.db"), "orders"), () => Task.FromResult(Db.ReadSqlite(_dir.Sqlite("target.db"))));
            case "csv":
                return (Csv.Write<Order>(_dir.File("target.csv")), () => Db.ReadCsvAsync(_dir.File("target.csv")));
            case "json-lines":
                return (JsonLines.Write(_dir.File("target.jsonl"), OrderJson.Default.Order), () => ReadAllAsync(Etl.From(JsonLines.Read(_dir.File("target.jsonl"), OrderJson.Default.Order))));
            case "parquet":
                return (ParquetFiles.Write<Order>(_dir.File("target.parquet")), () => ReadAllAsync(Etl.From(ParquetFiles.Read<Order>(_dir.File("target.parquet")))));
            case "event-store":
                return (EtlEventStore.Append<Order>(services, o => "target-" + o.Id, o => o), async () =>
                    [.. await services.GetRequiredService<IEventStore>().ReadAllAsync(0, new EventFilter { StreamPrefix = "target-" }, long.MaxValue).Select(e => (Order)e.Data).ToListAsync()]);
            default:
                return (EtlTransport.ToQueue<Order>(services.GetRequiredService<IQueueSender>(), "target-orders"), () => ReadQueueAsync(services));
        }
    }

    /// <summary>Reads the target queue back through a queue source, until it has every row.</summary>
    private static async Task<List<Order>> ReadQueueAsync(IServiceProvider services)
    {
        var rows = new ListSink<Order>();
        using var stop = new CancellationTokenSource(Wait);
        await EtlTransport.FromQueue<Order>(services, "target-orders").To(rows, "read-back")
            .RunAsync(new EtlRunOptions { BatchSize = 25, Progress = new SyncProgress(p => StopAt(p, stop)) }, stop.Token);
        return rows.Rows;
    }

    private static async Task<List<Order>> ReadAllAsync(EtlFlow<Order> flow)
    {
        var rows = new ListSink<Order>();
        await flow.To(rows, "read-back").RunAsync();
        return rows.Rows;
    }

#pragma warning disable CS1998 // An iterator over a list.
    private static async IAsyncEnumerable<Order> ToAsync(List<Order> orders)
#pragma warning restore CS1998
    {
        foreach (var order in orders)
        {
            yield return order;
        }
    }

    private async Task<IHost> StartAsync()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.AddEventSourcing(es =>
        {
            es.UseSqlite(_dir.Sqlite("events.db"));
            es.AddEvent<Order>("round-trip.order");
        });
        builder.AddPatterns(p => p.UseInMemory());
        builder.AddMessageQueue(q =>
        {
            q.AddQueue("source-orders");
            q.AddQueue("target-orders");
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }
}
