using System.Text;
using FluentAssertions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.EventSourcing;
using Patterns.Messaging;
using Patterns.Storage;
using Polly;
using Polly.Retry;
using Xunit;

namespace Patterns.Conformance;

/// <summary>Events the facade-level conformance tests append.</summary>
[MessageName("conformance.opened")]
public sealed record ConformanceOpened(string Owner);

/// <summary>A deposit, current shape.</summary>
[MessageName("conformance.deposited.v3")]
public sealed record ConformanceDepositedV3(decimal Amount, string Currency);

/// <summary>A deposit, second shape.</summary>
[MessageName("conformance.deposited.v2")]
public sealed record ConformanceDepositedV2(decimal Amount);

/// <summary>A deposit, first shape.</summary>
[MessageName("conformance.deposited")]
public sealed record ConformanceDepositedV1(int Cents);

/// <summary>A read model the projection tests write.</summary>
public sealed record ConformanceBalance(string Owner, decimal Balance);

/// <summary>The facade (<see cref="IEventStore"/>, subscriptions, projections) over each store.</summary>
public abstract partial class EventStoreConformanceTests
{
    private static readonly RetryStrategyOptions OneQuickRetry = new() { MaxRetryAttempts = 1, Delay = TimeSpan.Zero, BackoffType = DelayBackoffType.Constant, UseJitter = false };

    [Fact]
    public async Task Facade_TypedEventsWithMetadata_RoundTripThroughTheStore()
    {
        var store = await OpenAsync();
        await using var facade = await StartFacadeAsync(store, _ => { });
        var opened = new EventData(new ConformanceOpened("ada"))
        {
            CorrelationId = "corr-1",
            CausationId = "cmd-1",
            Headers = new Dictionary<string, string> { ["user"] = "ada" },
        };

        var result = await facade.Store.AppendAsync("account-1", ExpectedVersion.NoStream, [opened, new EventData(new ConformanceDepositedV3(5m, "EUR"))], Timeout);
        var events = await ToListAsync(facade.Store.ReadStreamAsync("account-1", ReadDirection.Forward, null, long.MaxValue, Timeout));

        events.Select(e => e.Data).Should().Equal(new ConformanceOpened("ada"), new ConformanceDepositedV3(5m, "EUR"));
        events[0].Should().Match<RecordedEvent>(e => e.EventId == opened.EventId && e.EventType == "conformance.opened" && e.Version == 1
            && e.Position == result.FirstPosition && e.CorrelationId == "corr-1" && e.CausationId == "cmd-1" && e.Headers["user"] == "ada");
        (await ToListAsync(store.Events.ReadStreamAsync("account-1", ReadDirection.Forward, null, long.MaxValue, Timeout)))
            .Select(e => e.EventType).Should().Equal("conformance.opened", "conformance.deposited.v3");
    }

    [Fact]
    public async Task Facade_UpcastingChain_OldEventsReadAsTheNewestType()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream,
        [
            new SerializedEvent(Guid.NewGuid(), "conformance.deposited", Encoding.UTF8.GetBytes("{\"cents\":1250}"), DateTimeOffset.UnixEpoch),
            new SerializedEvent(Guid.NewGuid(), "conformance.deposited.v2", Encoding.UTF8.GetBytes("{\"amount\":3}"), DateTimeOffset.UnixEpoch),
            new SerializedEvent(Guid.NewGuid(), "legacy.credit", Encoding.UTF8.GetBytes("{\"cents\":700}"), DateTimeOffset.UnixEpoch),
        ], null, Timeout);
        await using var facade = await StartFacadeAsync(store, es => es
            .AddUpcaster<ConformanceDepositedV1, ConformanceDepositedV2>(v1 => new ConformanceDepositedV2(v1.Cents / 100m))
            .AddUpcaster<ConformanceDepositedV2, ConformanceDepositedV3>(v2 => new ConformanceDepositedV3(v2.Amount, "EUR"))
            .AddUpcaster("legacy.credit", "conformance.deposited", bytes => bytes));
        await facade.Store.AppendAsync("account-1", ExpectedVersion.Exact(3), new ConformanceDepositedV3(1m, "USD"), Timeout);

        var stream = await ToListAsync(facade.Store.ReadStreamAsync("account-1", ReadDirection.Forward, null, long.MaxValue, Timeout));
        var filtered = await ToListAsync(facade.Store.ReadAllAsync(0, facade.Store.CreateFilter(typeof(ConformanceDepositedV3)), long.MaxValue, Timeout));

        var expected = new object[] { new ConformanceDepositedV3(12.5m, "EUR"), new ConformanceDepositedV3(3m, "EUR"), new ConformanceDepositedV3(7m, "EUR"), new ConformanceDepositedV3(1m, "USD") };
        stream.Select(e => e.Data).Should().Equal(expected);
        stream.Select(e => e.StoredEventType).Should().Equal("conformance.deposited", "conformance.deposited.v2", "legacy.credit", "conformance.deposited.v3");
        filtered.Select(e => e.Data).Should().Equal(expected, "a filter on the newest type selects the older names that upcast to it");
    }

    [Fact]
    public async Task Facade_Subscription_CatchesUpGoesLiveAndResumesFromItsCheckpointAfterReopen()
    {
        var name = NewName();
        var store = await CreateStoreAsync(name);
        var seen = new List<long>();
        var gate = new Lock();
        ValueTask Record(RecordedEvent e, CancellationToken ct)
        {
            lock (gate)
            {
                seen.Add(e.Position);
            }

            return default;
        }

        try
        {
            await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(3, "conformance.opened").Select(e => e with { Data = Encoding.UTF8.GetBytes("{\"owner\":\"x\"}") }).ToArray(), null, Timeout);
            await using var facade = await StartFacadeAsync(store, es => es.AddEvent<ConformanceOpened>().AddSubscription("audit", Record, o => o.CheckpointInterval = 1000));
            await facade.Subscriptions.WaitForPositionAsync("audit", 3, Timeout);
            var live = await facade.Store.AppendAsync("account-2", ExpectedVersion.NoStream, [new ConformanceOpened("bob"), new ConformanceOpened("eve")], Timeout);
            await facade.Subscriptions.WaitForPositionAsync("audit", live.LastPosition, Timeout);
        }
        finally
        {
            await store.DisposeAsync();
        }

        lock (gate)
        {
            seen.Should().Equal(1, 2, 3, 4, 5);
            seen.Clear();
        }

        var reopened = Track(await ReopenAsync(name));
        (await reopened.Checkpoints.LoadAsync("audit", Timeout)).Should().Be(5, "stopping the host saved the checkpoint");
        await using var again = await StartFacadeAsync(reopened, es => es.AddEvent<ConformanceOpened>().AddSubscription("audit", Record));
        var next = await again.Store.AppendAsync("account-3", ExpectedVersion.NoStream, new ConformanceOpened("zoe"), Timeout);
        await again.Subscriptions.WaitForPositionAsync("audit", next.LastPosition, Timeout);

        lock (gate)
        {
            seen.Should().Equal(6);
        }
    }

    [Fact]
    public async Task Facade_Subscription_FailingHandler_FaultsAndNeverCheckpointsPastTheEvent()
    {
        var store = await OpenAsync();
        var attempts = 0;
        await using var facade = await StartFacadeAsync(store, es => es.AddEvent<ConformanceOpened>().AddEvent<ConformanceDepositedV3>().AddSubscription("billing", (e, _) =>
        {
            if (e.Data is ConformanceDepositedV3)
            {
                Interlocked.Increment(ref attempts);
                throw new InvalidOperationException("billing is down");
            }

            return default;
        }, o => { o.Retry = OneQuickRetry; o.CheckpointInterval = 1; }));
        await facade.Store.AppendAsync("account-1", ExpectedVersion.NoStream, [new ConformanceOpened("ada"), new ConformanceDepositedV3(1m, "EUR"), new ConformanceOpened("bob")], Timeout);

        var wait = () => facade.Subscriptions.WaitForPositionAsync("billing", 3, Timeout);

        var thrown = await wait.Should().ThrowAsync<SubscriptionFaultedException>();
        thrown.Which.Position.Should().Be(2);
        attempts.Should().Be(2);
        facade.Subscriptions.GetStatus("billing").State.Should().Be(SubscriptionState.Faulted);
        (await store.Checkpoints.LoadAsync("billing", Timeout)).Should().Be(1);
    }

    [Fact]
    public async Task Facade_Projections_InlineCommitsWithTheAppendAndAsyncCatchesUp()
    {
        var store = await OpenAsync();
        static ConformanceBalance? Apply(ConformanceBalance? current, RecordedEvent e) => e.Data switch
        {
            ConformanceOpened opened => new ConformanceBalance(opened.Owner, 0m),
            ConformanceDepositedV3 deposit => current! with { Balance = current.Balance + deposit.Amount },
            _ => current,
        };

        await using var facade = await StartFacadeAsync(store, es => es
            .AddEvent<ConformanceOpened>().AddEvent<ConformanceDepositedV3>()
            .AddDocumentProjection<ConformanceBalance>("inline-balances", "inline-balances", e => e.StreamId, Apply, o => o.Mode = ProjectionMode.Inline)
            .AddDocumentProjection<ConformanceBalance>("async-balances", "async-balances", e => e.StreamId, Apply));
        var readModels = facade.Services.GetRequiredService<IReadModels>();

        await facade.Store.AppendAsync("account-1", ExpectedVersion.NoStream, [new ConformanceOpened("ada"), new ConformanceDepositedV3(2m, "EUR")], Timeout);
        var last = await facade.Store.AppendAsync("account-1", ExpectedVersion.Exact(2), new ConformanceDepositedV3(3m, "EUR"), Timeout);

        (await readModels.GetAsync<ConformanceBalance>("inline-balances", "account-1", Timeout)).Should().Be(new ConformanceBalance("ada", 5m));
        await facade.Subscriptions.WaitForPositionAsync("async-balances", last.LastPosition, Timeout);
        (await readModels.GetAsync<ConformanceBalance>("async-balances", "account-1", Timeout)).Should().Be(new ConformanceBalance("ada", 5m));

        await store.Documents.ClearAsync("async-balances", Timeout);
        await facade.Subscriptions.RebuildAsync("async-balances", Timeout);
        await facade.Subscriptions.WaitForPositionAsync("async-balances", last.LastPosition, Timeout);
        (await readModels.GetAsync<ConformanceBalance>("async-balances", "account-1", Timeout)).Should().Be(new ConformanceBalance("ada", 5m), "a rebuild replays from position 0");
    }

    /// <summary>Builds the event-sourcing services over <paramref name="store"/> and starts their hosted services, as a host would.</summary>
    /// <param name="store">The store.</param>
    /// <param name="configure">Registers events, subscriptions, projections.</param>
    /// <returns>The running facade; disposing it stops the hosted services.</returns>
    protected Task<FacadeHost> StartFacadeAsync(EventStoreFixture store, Action<EventSourcingBuilder> configure) =>
        StartFacadeAsync(store, store.AsSingleStore(), configure);

    /// <summary>Builds the event-sourcing services over <paramref name="storage"/> (a wrapper of <paramref name="store"/>) and starts them.</summary>
    /// <typeparam name="TStorage">The storage type.</typeparam>
    /// <param name="store">The store under test.</param>
    /// <param name="storage">What the services use as their store.</param>
    /// <param name="configure">Registers events, subscriptions, projections.</param>
    /// <returns>The running facade; disposing it stops the hosted services.</returns>
    /// <param name="time">The clock the services use; the system clock when null.</param>
    /// <param name="more">Registers other services (messaging, the outbox) beside event sourcing.</param>
    protected async Task<FacadeHost> StartFacadeAsync<TStorage>(EventStoreFixture store, TStorage storage, Action<EventSourcingBuilder> configure, TimeProvider? time = null, Action<IServiceCollection>? more = null)
        where TStorage : class, IEventStorage, ICheckpointStore, ISnapshotStorage, IDocumentStorage
    {
        ArgumentNullException.ThrowIfNull(store);
        var services = new ServiceCollection();
        if (time is not null)
        {
            services.AddSingleton(time);
        }

        more?.Invoke(services);

        services.AddEventSourcing(es =>
        {
            es.UseStorage(_ => storage);
            configure(es);
        });
        var provider = services.BuildServiceProvider();
        var hosted = provider.GetServices<IHostedService>().ToList();
        foreach (var service in hosted)
        {
            await service.StartAsync(Timeout);
        }

        return new FacadeHost(provider, hosted, Timeout);
    }

    /// <summary>Event-sourcing services running over one store.</summary>
    protected sealed class FacadeHost(ServiceProvider services, IReadOnlyList<IHostedService> hosted, CancellationToken timeout) : IAsyncDisposable
    {
        /// <summary>Gets the services.</summary>
        public IServiceProvider Services => services;

        /// <summary>Gets the event store.</summary>
        public IEventStore Store => services.GetRequiredService<IEventStore>();

        /// <summary>Gets the subscriptions.</summary>
        public IEventSubscriptions Subscriptions => services.GetRequiredService<IEventSubscriptions>();

        /// <inheritdoc />
        public async ValueTask DisposeAsync()
        {
            foreach (var service in hosted.Reverse())
            {
                await service.StopAsync(timeout);
            }

            await services.DisposeAsync();
        }
    }
}
