using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.DependencyInjection;
using Patterns.EventSourcing;
using Patterns.Outbox;
using Patterns.PubSub;
using Patterns.Storage;

namespace Patterns.Benchmarks;

/// <summary>
/// A handler-like operation that appends one event and publishes one message, on SQLite and on PostgreSQL
/// (<see cref="Store"/>), with and without the transactional outbox. One operation is one event appended and its
/// message <b>handled by the consumer</b>: an in-memory pub/sub subscriber counts arrivals and the invocation ends when
/// the last of its <see cref="Operations"/> messages has arrived, so the time includes the delivery (for the outbox:
/// the relay reading the committed message from the store and handing it to the same in-memory transport).
/// </summary>
/// <remarks>
/// <para>
/// Each invocation runs <see cref="Handlers"/> concurrent tasks (like concurrent message handlers), each doing
/// <see cref="OperationsPerHandler"/> operations one after another to its own stream (<see cref="ExpectedVersion.Any"/>),
/// then waits until the subscriber has received all <see cref="Operations"/> messages. Both methods do exactly this;
/// <c>OperationsPerInvoke</c> = <see cref="Operations"/>, so the reported time is the invocation's time divided by
/// 128: the cost per operation under 16 concurrent writers, including delivery, not the latency of one isolated operation.
/// </para>
/// <para>
/// <see cref="AppendThenPublish"/> (the baseline) is what code without an outbox does: <see cref="IEventStore.AppendAsync"/>,
/// then <see cref="IPublisher.PublishAsync{TMessage}(string, TMessage, CancellationToken)"/> on the in-memory transport
/// (not atomic: a crash between the two loses the message). <see cref="Outbox"/> resolves an <see cref="IStoreSession"/>
/// from a new scope, calls <c>Append</c> and <c>Publish</c>, and <c>CommitAsync</c> (the event and the outbox message in
/// one transaction); the outbox relay (default options: batches of 100) then hands the message to the transport.
/// </para>
/// <para>
/// Target: <see cref="Outbox"/> ≤ 1.3× the time of <see cref="AppendThenPublish"/> on each store. Each benchmark gets its
/// own database (a SQLite file in a fresh temporary directory, or a PostgreSQL schema of its own, dropped at the end).
/// </para>
/// </remarks>
[Config(typeof(BenchmarkConfig))]
public class OutboxBenchmarks
{
    /// <summary>Concurrent handler tasks per invocation.</summary>
    public const int Handlers = 16;

    /// <summary>Operations each handler task makes per invocation, one after another.</summary>
    public const int OperationsPerHandler = 8;

    /// <summary>Operations (events appended and messages delivered) per invocation.</summary>
    public const int Operations = Handlers * OperationsPerHandler;

    internal const string Topic = "bench.deposits";

    // A lost message would otherwise hang the run; a timeout fails it instead.
    private static readonly TimeSpan ArrivalTimeout = TimeSpan.FromMinutes(2);

    private readonly BatchSignal _arrived = new();
    private BenchmarkDatabase? _database;
    private ServiceProvider? _services;
    private IEventStore? _store;
    private IPublisher? _publisher;

    /// <summary>Gets or sets the store the events (and, for the outbox, the outgoing messages) are written to.</summary>
    [Params(StoreKind.Sqlite, StoreKind.Postgres)]
    public StoreKind Store { get; set; }

    [GlobalSetup(Target = nameof(AppendThenPublish))]
    public Task SetupAppendThenPublish() => SetupAsync(outbox: false);

    [GlobalSetup(Target = nameof(Outbox))]
    public Task SetupOutbox() => SetupAsync(outbox: true);

    [GlobalCleanup]
    public async Task Cleanup()
    {
        await Hosting.StopAndDisposeAsync(_services);
        if (_database is not null)
        {
            await _database.DropAsync();
        }
    }

    /// <summary>Without an outbox: <c>IEventStore.AppendAsync</c> of one event, then <c>IPublisher.PublishAsync</c> of one message.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Operations)]
    public async Task AppendThenPublish()
    {
        var arrived = _arrived.Reset(Operations);
        var store = _store!;
        var publisher = _publisher!;
        var handlers = new Task[Handlers];
        for (var h = 0; h < Handlers; h++)
        {
            var account = h;
            handlers[h] = Task.Run(async () =>
            {
                var stream = StreamOf(account);
                for (var i = 0; i < OperationsPerHandler; i++)
                {
                    await AppendThenPublishOnceAsync(store, publisher, stream, account);
                }
            });
        }

        await Task.WhenAll(handlers);
        await arrived.WaitAsync(ArrivalTimeout);
    }

    /// <summary>With the outbox: a scoped <c>IStoreSession</c>, <c>Append</c> + <c>Publish</c>, <c>CommitAsync</c>; the relay delivers.</summary>
    [Benchmark(OperationsPerInvoke = Operations)]
    public async Task Outbox()
    {
        var arrived = _arrived.Reset(Operations);
        var services = _services!;
        var handlers = new Task[Handlers];
        for (var h = 0; h < Handlers; h++)
        {
            var account = h;
            handlers[h] = Task.Run(async () =>
            {
                var stream = StreamOf(account);
                for (var i = 0; i < OperationsPerHandler; i++)
                {
                    await OutboxOnceAsync(services, stream, account);
                }
            });
        }

        await Task.WhenAll(handlers);
        await arrived.WaitAsync(ArrivalTimeout);
    }

    /// <summary>One baseline operation: the append, then the publication (not atomic).</summary>
    internal static async Task AppendThenPublishOnceAsync(IEventStore store, IPublisher publisher, string stream, int account)
    {
        await store.AppendAsync(stream, ExpectedVersion.Any, [new EventData(new AccountDeposited(account, 100))]);
        await publisher.PublishAsync(Topic, new DepositRecorded(account, 100));
    }

    /// <summary>One outbox operation: a session of its own, the append and the publication, one commit.</summary>
    internal static async Task OutboxOnceAsync(IServiceProvider services, string stream, int account)
    {
        await using var scope = services.CreateAsyncScope();
        var session = scope.ServiceProvider.GetRequiredService<IStoreSession>();
        session.Append(stream, ExpectedVersion.Any, [new EventData(new AccountDeposited(account, 100))]);
        session.Publish(Topic, new DepositRecorded(account, 100));
        await session.CommitAsync();
    }

    /// <summary>The store, the subscriber that signals each arrival, and (unless <paramref name="outbox"/> is null) the outbox.</summary>
    internal static ServiceCollection Services(BenchmarkDatabase database, BatchSignal arrived, Action<OutboxOptions>? outbox)
    {
        var services = new ServiceCollection();
        services.AddEventSourcing(es => database.Use(es).AddEvent<AccountDeposited>());
        services.AddPubSub(ps => ps.Subscribe<DepositRecorded>(
            (message, context, cancellationToken) =>
            {
                arrived.Signal();
                return ValueTask.CompletedTask;
            },
            topic: Topic,
            configure: o => o.ConsumerGroup = "bench"));
        if (outbox is not null)
        {
            services.AddOutbox(outbox);
        }

        return services;
    }

    internal static string StreamOf(int account) => "account-" + account.ToString(System.Globalization.CultureInfo.InvariantCulture);

    private async Task SetupAsync(bool outbox)
    {
        var database = _database = BenchmarkDatabase.Create(Store);
        var services = Services(database, _arrived, outbox ? _ => { } : null);

        _services = services.BuildServiceProvider();
        await Hosting.StartAsync(_services);
        _store = _services.GetRequiredService<IEventStore>();
        _publisher = _services.GetRequiredService<IPublisher>();

        // Opens the store (schema, first connections) before the first measured invocation.
        await _services.GetRequiredService<IEventStorage>().GetHeadPositionAsync();
    }
}
