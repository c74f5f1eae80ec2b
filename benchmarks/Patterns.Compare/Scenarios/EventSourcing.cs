using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Patterns.EventSourcing;
using Patterns.Storage;

namespace Patterns.Compare.Scenarios;

/// <summary>
/// Event-sourced appends with an async projection: 16 writers append one <see cref="OrderPlaced"/> event per append to
/// the customer's stream (<see cref="ExpectedVersion.Any"/>); an async document projection folds each event into the
/// customer's <see cref="CustomerTotals"/> and commits the documents with its checkpoint (pages of 256, checkpoint every
/// 100). A run ends when the projection's checkpoint reaches the head. Latency: from the order's creation (just before
/// its append) to the projection folding it.
/// </summary>
public sealed class EventSourcingScenario(StoreKind store) : HostedScenario
{
    /// <summary>Writers in parallel.</summary>
    public const int Writers = 16;

    private const string Projection = "customer-totals";

    private readonly RowStore _rowStore = new(store);
    private IEventStore? _store;
    private IEventSubscriptions? _subscriptions;

    /// <inheritdoc />
    public override async Task RunAsync(int first, int count, CancellationToken cancellationToken)
    {
        var deliveries = Context.Deliveries;
        deliveries.Expect(count);
        var eventStore = _store!;
        await Producer.RunCallersAsync(
            first,
            count,
            Writers,
            async i =>
            {
                var order = Orders.Create(i);
                await eventStore.AppendAsync(Orders.StreamOf(order), ExpectedVersion.Any, order, cancellationToken);
            },
            cancellationToken);
        var head = await eventStore.GetHeadPositionAsync(cancellationToken);
        await _subscriptions!.WaitForPositionAsync(Projection, head, cancellationToken);
        await deliveries.Completion.WaitAsync(cancellationToken);
    }

    /// <inheritdoc />
    protected override void Configure(IServiceCollection services)
    {
        var deliveries = Context.Deliveries;
        services.Configure<EventSourcingOptions>(o => o.LeaseDuration = TimeSpan.FromSeconds(5));
        services.AddEventSourcing(es =>
        {
            _rowStore.Use(es, Context);
            es.AddEvent<OrderPlaced>();
            es.AddDocumentProjection<CustomerTotals>(
                Projection,
                "customer-totals",
                e => ((OrderPlaced)e.Data).CustomerId,
                (current, e) =>
                {
                    var order = (OrderPlaced)e.Data;
                    var total = OrderHandler.Handle(order);
                    deliveries.Record(order.SentAt);
                    return current is null
                        ? new CustomerTotals(order.CustomerId, 1, total)
                        : current with { Orders = current.Orders + 1, Total = current.Total + total };
                });
        });
    }

    /// <inheritdoc />
    protected override Task StartedAsync(CancellationToken cancellationToken)
    {
        _store = Services.GetRequiredService<IEventStore>();
        _subscriptions = Services.GetRequiredService<IEventSubscriptions>();
        return Task.CompletedTask;
    }

    /// <inheritdoc />
    protected override Task CleanupAsync() => _rowStore.CleanupAsync();
}

/// <summary>The event store of a row (events, documents, units of work) on a <see cref="StoreKind"/>, and its clean-up.</summary>
public sealed class RowStore(StoreKind kind)
{
    private string? _directory;
    private string? _schema;

    /// <summary>Chooses the store: a fresh SQLite file, a fresh PostgreSQL schema, or memory.</summary>
    public void Use(EventSourcingBuilder es, RunContext context)
    {
        switch (kind)
        {
            case StoreKind.Sqlite:
                _directory = Path.Combine(Path.GetTempPath(), "patterns-compare", context.Prefix);
                Directory.CreateDirectory(_directory);
                es.UseSqlite(Path.Combine(_directory, "store.db"));
                break;
            case StoreKind.Postgres:
                _schema = context.Prefix;
                es.UsePostgres(Servers.Postgres, o => o.Schema = _schema);
                break;
            default:
                es.UseInMemory();
                break;
        }
    }

    /// <summary>Deletes the SQLite file or drops the PostgreSQL schema.</summary>
    public async Task CleanupAsync()
    {
        if (_directory is not null && Directory.Exists(_directory))
        {
            Directory.Delete(_directory, recursive: true);
        }

        if (_schema is not null)
        {
            await Servers.DropSchemaAsync(_schema);
        }
    }
}
