using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing;
using Patterns.EventSourcing.InMemory;
using Patterns.Storage;
using Patterns.Testing;

namespace Patterns.Core.Tests.EventSourcing;

public sealed class AggregateTests
{
    private static IAggregateRepository<BankAccount> Accounts(IHost host) => host.Services.GetRequiredService<IAggregateRepository<BankAccount>>();

    [Fact]
    public async Task ExecuteAsync_LoadDecideAppend_StateFollowsTheEvents()
    {
        using var host = await EventSourcingHost.StartAsync(es => es.AddAggregate<BankAccount>(o => o.StreamPrefix = "account-"));
        var accounts = Accounts(host);

        var opened = await accounts.ExecuteAsync("42", _ => [new AccountOpened("ada"), new Deposited(100m)]);
        var after = await accounts.ExecuteAsync("42", account => account.Withdraw(30m));
        var loaded = await accounts.LoadAsync("42");

        opened.Version.Should().Be(2);
        after.Version.Should().Be(3);
        after.State.Balance.Should().Be(70m);
        loaded.StreamId.Should().Be("account-42");
        loaded.Exists.Should().BeTrue();
        loaded.State.Should().BeEquivalentTo(new { Owner = "ada", Balance = 70m, IsOpen = true });
        (await host.Store().ReadStreamAsync("account-42").CollectAsync()).Select(e => e.Data)
            .Should().Equal(new AccountOpened("ada"), new Deposited(100m), new Withdrawn(30m));
    }

    [Fact]
    public async Task ExecuteAsync_DecisionRejected_AppendsNothing()
    {
        using var host = await EventSourcingHost.StartAsync(es => es.AddAggregate<BankAccount>());
        var accounts = Accounts(host);
        await accounts.ExecuteAsync("1", _ => [new AccountOpened("ada"), new Deposited(10m)]);

        var act = async () => await accounts.ExecuteAsync("1", account => account.Withdraw(50m).ToList());

        await act.Should().ThrowAsync<InvalidOperationException>().WithMessage("Insufficient funds*");
        (await host.Store().GetStreamStateAsync("BankAccount-1")).Version.Should().Be(2, "the default prefix is the type name");
        (await accounts.ExecuteAsync("1", _ => [])).Version.Should().Be(2, "no events, no append");
    }

    [Fact]
    public async Task SaveAsync_ConcurrentAppendWon_ThrowsAndExecuteRetriesOnTheNewState()
    {
        using var host = await EventSourcingHost.StartAsync(es => es.AddAggregate<BankAccount>(o => o.ConflictRetries = 2));
        var accounts = Accounts(host);
        await accounts.ExecuteAsync("7", _ => [new AccountOpened("ada"), new Deposited(100m)]);
        var stale = await accounts.LoadAsync("7");
        await accounts.ExecuteAsync("7", a => a.Withdraw(60m));

        var save = async () => await accounts.SaveAsync(stale, [new Withdrawn(60m)]);
        await save.Should().ThrowAsync<WrongExpectedVersionException>();

        var decisions = 0;
        var interfering = true;
        var result = await accounts.ExecuteAsync("7", account =>
        {
            decisions++;
            if (interfering)
            {
                interfering = false;
                host.Store().AppendAsync("BankAccount-7", ExpectedVersion.Exact(3), new Deposited(5m)).AsTask().GetAwaiter().GetResult();
            }

            return account.Withdraw(40m);
        });

        decisions.Should().Be(2, "the first decision lost the race, so the aggregate was reloaded and decided again");
        result.State.Balance.Should().Be(5m);
        result.Version.Should().Be(5);
    }

    [Fact]
    public async Task LoadAsync_AsOfVersionAndPointInTime_ReturnsHistoricalState()
    {
        var fake = new FakeTimeProvider(new DateTimeOffset(2025, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var time = new TimerTracker(fake);
        using var host = await EventSourcingHost.StartAsync(es => es.AddAggregate<BankAccount>(), time);
        var accounts = Accounts(host);
        await accounts.ExecuteAsync("1", _ => [new AccountOpened("ada"), new Deposited(10m)]);
        fake.Advance(TimeSpan.FromDays(1));
        await accounts.ExecuteAsync("1", _ => [new Deposited(20m)]);
        fake.Advance(TimeSpan.FromDays(1));
        await accounts.ExecuteAsync("1", _ => [new Deposited(40m)]);

        var atVersion2 = await accounts.LoadAsync("1", 2);
        var atVersion0 = await accounts.LoadAsync("1", 0);
        var atVersion99 = await accounts.LoadAsync("1", 99);
        var endOfDay2 = await accounts.LoadAsOfAsync("1", new DateTimeOffset(2025, 1, 2, 23, 0, 0, TimeSpan.Zero));
        var beforeEverything = await accounts.LoadAsOfAsync("1", new DateTimeOffset(2024, 12, 31, 0, 0, 0, TimeSpan.Zero));

        atVersion2.State.Balance.Should().Be(10m);
        atVersion2.Version.Should().Be(2);
        atVersion0.Exists.Should().BeFalse();
        atVersion99.Version.Should().Be(4);
        endOfDay2.State.Balance.Should().Be(30m);
        endOfDay2.Version.Should().Be(3);
        beforeEverything.Version.Should().Be(0);
        beforeEverything.State.IsOpen.Should().BeFalse();
    }

    [Fact]
    public async Task Snapshots_EveryNEvents_SavedAndUsedOnLoad()
    {
        var storage = new InMemoryEventStorage();
        using var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddAggregate<BankAccount>(o => o.SnapshotEvery = 3));
        var accounts = Accounts(host);

        await accounts.ExecuteAsync("1", _ => [new AccountOpened("ada"), new Deposited(1m)]);
        (await ((ISnapshotStorage)storage).LoadAsync("BankAccount-1")).Should().BeNull("2 events do not reach the interval of 3");
        await accounts.ExecuteAsync("1", _ => [new Deposited(2m), new Deposited(3m)]);
        var snapshot = await ((ISnapshotStorage)storage).LoadAsync("BankAccount-1");
        snapshot.Should().NotBeNull();
        snapshot!.Version.Should().Be(4);
        snapshot.SchemaVersion.Should().Be(1);
        snapshot.SnapshotType.Should().Be(typeof(BankAccount).FullName);
        await accounts.ExecuteAsync("1", _ => [new Deposited(4m)]);

        var loaded = await accounts.LoadAsync("1");

        loaded.SnapshotVersion.Should().Be(4);
        loaded.Version.Should().Be(5);
        loaded.State.Balance.Should().Be(10m);
        loaded.State.Applied.Should().Be(5, "the snapshot carried the 4 applied events; one more was replayed");
        (await accounts.LoadAsync("1", 3)).SnapshotVersion.Should().BeNull("a snapshot newer than the requested version is not used");
    }

    [Fact]
    public async Task Snapshots_SchemaVersionChanged_IgnoredAndReplacedOnLoad()
    {
        var storage = new InMemoryEventStorage();
        using (var before = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddAggregate<BankAccount>(o => o.SnapshotEvery = 2)))
        {
            await Accounts(before).ExecuteAsync("1", _ => [new AccountOpened("ada"), new Deposited(5m), new Deposited(6m)]);
            await before.StopAsync();
        }

        // A snapshot written by an older shape of the state, under the old schema version.
        var stale = (await ((ISnapshotStorage)storage).LoadAsync("BankAccount-1"))!;
        await ((ISnapshotStorage)storage).SaveAsync(stale with { Data = Encoding.UTF8.GetBytes("{\"balance\":\"not a number\"}") });
        using var after = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddAggregate<BankAccount>(o => { o.SnapshotEvery = 2; o.SnapshotSchemaVersion = 2; }));

        var loaded = await Accounts(after).LoadAsync("1");

        loaded.SnapshotVersion.Should().BeNull("the snapshot's schema version is 1 and the aggregate's is now 2");
        loaded.State.Balance.Should().Be(11m);
        var replaced = await ((ISnapshotStorage)storage).LoadAsync("BankAccount-1");
        replaced!.SchemaVersion.Should().Be(2, "the load saved a snapshot in the new schema");
        (await Accounts(after).LoadAsync("1")).SnapshotVersion.Should().Be(3);
    }

    [Fact]
    public async Task Snapshots_CorruptSnapshot_IgnoredSafely()
    {
        var storage = new InMemoryEventStorage();
        using var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddAggregate<BankAccount>(o => o.SnapshotEvery = 100));
        await Accounts(host).ExecuteAsync("1", _ => [new AccountOpened("ada"), new Deposited(5m)]);
        await ((ISnapshotStorage)storage).SaveAsync(new StoredSnapshot("BankAccount-1", 2, typeof(BankAccount).FullName!, 1, Encoding.UTF8.GetBytes("{broken"), DateTimeOffset.UnixEpoch));

        var loaded = await Accounts(host).LoadAsync("1");

        loaded.SnapshotVersion.Should().BeNull();
        loaded.State.Balance.Should().Be(5m);
    }

    [Fact]
    public async Task FoldAggregate_ImmutableState_AppliesEveryEvent()
    {
        using var host = await EventSourcingHost.StartAsync(es => es.AddAggregate(() => Tally.Empty, (state, e) => state.Apply(e), o => { o.StreamPrefix = "tally-"; o.SnapshotEvery = 2; }));
        var tallies = host.Services.GetRequiredService<IAggregateRepository<Tally>>();

        var first = await tallies.ExecuteAsync("a", _ => [new Deposited(5m), new Withdrawn(2m)]);
        var second = await tallies.ExecuteAsync("a", state => state.Total > 0 ? [new Deposited(10m)] : []);
        var loaded = await tallies.LoadAsync("a");

        first.State.Should().Be(new Tally(2, 3m));
        second.State.Should().Be(new Tally(3, 13m));
        loaded.State.Should().Be(new Tally(3, 13m));
        loaded.SnapshotVersion.Should().Be(2);
        tallies.GetStreamId("a").Should().Be("tally-a");
    }

    [Fact]
    public async Task Start_InvalidAggregateOptions_FailsListingThem()
    {
        using var host = TestHost.Build(b => b.AddEventSourcing(es => es
            .AddAggregate<BankAccount>(o => { o.SnapshotEvery = -1; o.StreamPrefix = " "; })
            .AddAggregate<BankAccount>()), harness: false);

        var act = () => host.StartAsync();

        var thrown = await act.Should().ThrowAsync<OptionsValidationException>();
        thrown.Which.Failures.Should().Contain(f => f.Contains("SnapshotEvery"))
            .And.Contain(f => f.Contains("StreamPrefix must not be blank"))
            .And.Contain(f => f.Contains("registered more than once"));
    }

    [Fact]
    public async Task Load_TruncatedStreamWithoutAUsableSnapshot_ThrowsInsteadOfSkippingTheHiddenEvents()
    {
        var storage = new InMemoryEventStorage();
        var fake = new FakeTimeProvider(new DateTimeOffset(2025, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var time = new TimerTracker(fake);
        using (var before = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddAggregate<BankAccount>(o => o.SnapshotEvery = 4), time))
        {
            await Accounts(before).ExecuteAsync("1", _ => [new AccountOpened("ada"), new Deposited(5m), new Deposited(6m), new Deposited(7m)]);
            await Accounts(before).ExecuteAsync("1", _ => [new Deposited(8m)]);
            await before.Store().TruncateStreamAsync("BankAccount-1", 5);

            var fromSnapshot = await Accounts(before).LoadAsync("1");
            fromSnapshot.SnapshotVersion.Should().Be(4, "the snapshot reaches the truncation, so the load can use it");
            fromSnapshot.State.Balance.Should().Be(26m);
            await before.StopAsync();
        }

        // The aggregate's shape changed, so the snapshot at version 4 is ignored and the load would replay from version 1.
        using var after = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddAggregate<BankAccount>(o => { o.SnapshotEvery = 4; o.SnapshotSchemaVersion = 2; }), time);
        var accounts = Accounts(after);

        var latest = async () => await accounts.LoadAsync("1");
        var asOfVersion = async () => await accounts.LoadAsync("1", 2);
        var asOfTime = async () => await accounts.LoadAsOfAsync("1", time.GetUtcNow());
        var execute = async () => await accounts.ExecuteAsync("1", a => a.Withdraw(1m));

        (await latest.Should().ThrowAsync<InvalidOperationException>())
            .WithMessage("Stream 'BankAccount-1' is truncated: its events before version 5 are no longer read*snapshot at version 4 or later*");
        await asOfVersion.Should().ThrowAsync<InvalidOperationException>().WithMessage("*truncated*");
        await asOfTime.Should().ThrowAsync<InvalidOperationException>().WithMessage("*truncated*");
        await execute.Should().ThrowAsync<InvalidOperationException>().WithMessage("*truncated*");
        (await after.Store().GetStreamStateAsync("BankAccount-1")).Version.Should().Be(5, "nothing was appended on a wrongly rebuilt state");
    }

    [Fact]
    public async Task Load_EveryEventTruncatedAway_ThrowsInsteadOfReturningAnEmptyAggregate()
    {
        using var host = await EventSourcingHost.StartAsync(es => es.AddAggregate<BankAccount>());
        var accounts = Accounts(host);
        await accounts.ExecuteAsync("1", _ => [new AccountOpened("ada"), new Deposited(5m)]);
        await host.Store().TruncateStreamAsync("BankAccount-1", 10);

        var latest = async () => await accounts.LoadAsync("1");
        var asOfVersion = async () => await accounts.LoadAsync("1", 1);

        await latest.Should().ThrowAsync<InvalidOperationException>().WithMessage("*'BankAccount-1' is truncated*");
        await asOfVersion.Should().ThrowAsync<InvalidOperationException>().WithMessage("*truncated*");
        (await accounts.LoadAsync("1", 0)).Version.Should().Be(0, "version 0 needs no event");
        (await accounts.LoadAsync("2")).Exists.Should().BeFalse("a stream that never existed still loads as a new aggregate");
    }

    [Fact]
    public async Task Load_DeletedStreamWhoseSnapshotReachesTheVersionAsked_ThrowsStreamDeleted()
    {
        var storage = new InMemoryEventStorage();
        using var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddAggregate<BankAccount>(o => o.SnapshotEvery = 2));
        var accounts = Accounts(host);
        await accounts.ExecuteAsync("1", _ => [new AccountOpened("ada"), new Deposited(5m)]);
        (await ((ISnapshotStorage)storage).LoadAsync("BankAccount-1"))!.Version.Should().Be(2);
        await host.Store().DeleteStreamAsync("BankAccount-1", ExpectedVersion.Exact(2));

        var atSnapshot = async () => await accounts.LoadAsync("1", 2);
        var latest = async () => await accounts.LoadAsync("1");

        (await atSnapshot.Should().ThrowAsync<StreamDeletedException>()).Which.StreamId.Should().Be("BankAccount-1");
        await latest.Should().ThrowAsync<StreamDeletedException>();
    }

    [Fact]
    public async Task SaveAsync_CancelledWhileSavingTheSnapshot_ReturnsTheCommittedAppend()
    {
        var storage = new InMemoryEventStorage();
        using var cancel = new CancellationTokenSource();
        var fixture = new Patterns.Conformance.EventStoreFixture(storage, storage, new CancelledDuringSave(storage, cancel), storage, storage);
        using var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => fixture.AsSingleStore()).AddAggregate<BankAccount>(o => o.SnapshotEvery = 2));
        var accounts = Accounts(host);

        var saved = await accounts.ExecuteAsync("1", _ => [new AccountOpened("ada"), new Deposited(5m)], cancel.Token);

        cancel.IsCancellationRequested.Should().BeTrue("the token was cancelled while the snapshot was being saved");
        saved.Version.Should().Be(2, "the events were committed, so the call reports them instead of a failure that invites a second append");
        (await host.Store().GetStreamStateAsync("BankAccount-1")).Version.Should().Be(2);
        (await ((ISnapshotStorage)storage).LoadAsync("BankAccount-1")).Should().BeNull();
        (await accounts.LoadAsync("1")).State.Balance.Should().Be(5m);
    }

    private sealed class CancelledDuringSave(ISnapshotStorage inner, CancellationTokenSource cancel) : ISnapshotStorage
    {
        public ValueTask<StoredSnapshot?> LoadAsync(string streamId, CancellationToken cancellationToken = default) => inner.LoadAsync(streamId, cancellationToken);

        public ValueTask SaveAsync(StoredSnapshot snapshot, CancellationToken cancellationToken = default)
        {
            cancel.Cancel();
            cancellationToken.ThrowIfCancellationRequested();
            return inner.SaveAsync(snapshot, cancellationToken);
        }
    }
}
