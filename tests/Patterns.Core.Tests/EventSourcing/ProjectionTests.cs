using System.Collections.Concurrent;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.EventSourcing;
using Patterns.EventSourcing.InMemory;
using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

/// <summary>A projection class: counts events per type into one document per type.</summary>
public sealed class EventTypeCounter : IProjection
{
    public async ValueTask ProjectAsync(RecordedEvent @event, ProjectionContext context, CancellationToken cancellationToken) =>
        await context.Collection<CountView>("event-counts").UpdateAsync(@event.EventType, c => new CountView((c?.Count ?? 0) + 1), cancellationToken);
}

public sealed record CountView(int Count);

public sealed class ProjectionTests
{
    private static void Balances(EventSourcingBuilder es, ProjectionMode mode) =>
        es.AddDocumentProjection<BalanceView>("balances", "balances", e => e.StreamId, (view, e) => e.Data switch
        {
            AccountOpened => new BalanceView(e.StreamId, 0m, 1),
            Deposited d => view! with { Balance = view.Balance + d.Amount, Events = view.Events + 1 },
            Withdrawn w => view! with { Balance = view.Balance - w.Amount, Events = view.Events + 1 },
            AccountClosed => null,
            _ => view,
        }, o => o.Mode = mode);

    private static IReadModels ReadModels(IHost host) => host.Services.GetRequiredService<IReadModels>();

    [Fact]
    public async Task InlineProjection_ReadModelIsUpToDateWhenTheAppendReturns()
    {
        using var host = await EventSourcingHost.StartAsync(es => Balances(es, ProjectionMode.Inline));
        var store = host.Store();

        await store.AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(10m)]);
        await store.AppendAsync("account-1", ExpectedVersion.Exact(2), new Withdrawn(4m));
        await store.AppendAsync("account-2", ExpectedVersion.NoStream, [new AccountOpened("bob"), new AccountClosed("duplicate")]);

        (await ReadModels(host).GetAsync<BalanceView>("balances", "account-1")).Should().Be(new BalanceView("account-1", 6m, 3));
        (await ReadModels(host).GetAsync<BalanceView>("balances", "account-2")).Should().BeNull("closing the account deleted its document");
        host.Subscriptions().GetStatus("balances").State.Should().Be(SubscriptionState.Inline);
        await host.Subscriptions().WaitForPositionAsync("balances", 99).WaitAsync(TestHost.Wait);
    }

    [Fact]
    public async Task InlineProjection_AppendItCannotSelect_CarriesNoProjectionToTheStore()
    {
        // A store runs an append that carries a projection on its slow path (PostgreSQL: alone, outside group commit),
        // so the kernel passes one only when an inline projection may select the append's events.
        var storage = new InMemoryEventStorage();
        var events = new DelegatingEventStorage(storage);
        var fixture = new Patterns.Conformance.EventStoreFixture(events, storage, storage, storage, storage);
        using var host = await EventSourcingHost.StartAsync(es => es
            .UseStorage(_ => fixture.AsSingleStore())
            .AddProjection("a-deposits", (e, context, ct) => context.Documents.UpsertAsync("a-deposits", e.StreamId, "{}"u8.ToArray(), ct), o =>
            {
                o.Mode = ProjectionMode.Inline;
                o.StreamPrefix = "a-";
                o.EventTypes.Add(typeof(Deposited));
            }));
        var store = host.Store();

        await store.AppendAsync("b-1", ExpectedVersion.NoStream, new Deposited(1m));
        await store.AppendAsync("a-1", ExpectedVersion.NoStream, new AccountOpened("ada"));
        await store.AppendAsync("a-1", ExpectedVersion.Exact(1), [new Withdrawn(1m), new Deposited(2m)]);

        events.Appends.Should().Equal(("b-1", false), ("a-1", false), ("a-1", true));
        (await storage.GetAsync("a-deposits", "a-1")).Should().NotBeNull();
        (await storage.GetAsync("a-deposits", "b-1")).Should().BeNull();
    }

    [Fact]
    public async Task InlineProjection_OptionsOnlyASubscriptionHonours_FailTheStartNamingEach()
    {
        using var host = TestHost.Build(b => b.AddEventSourcing(es => es
            .AddProjection("inline-tuned", (_, _, _) => ValueTask.CompletedTask, o =>
            {
                o.Mode = ProjectionMode.Inline;
                o.BatchSize = 10;
                o.CheckpointInterval = 5;
                o.StartFrom = SubscriptionStartPosition.End;
                o.OnFailure = SubscriptionFailureMode.Park;
                o.Retry!.MaxRetryAttempts = 7;
                o.AttemptTimeout = TimeSpan.FromSeconds(1);
            })
            .AddProjection("inline-plain", (_, _, _) => ValueTask.CompletedTask, o => o.Mode = ProjectionMode.Inline)
            .AddProjection("inline-no-retry", (_, _, _) => ValueTask.CompletedTask, o => { o.Mode = ProjectionMode.Inline; o.Retry = null; })
            .AddProjection("async-tuned", (_, _, _) => ValueTask.CompletedTask, o => o.BatchSize = 10)), harness: false);

        var act = () => host.StartAsync();

        var failures = (await act.Should().ThrowAsync<Microsoft.Extensions.Options.OptionsValidationException>()).Which.Failures.ToList();
        failures.Should().ContainSingle(f => f.Contains("'inline-tuned'"))
            .Which.Should().ContainAll("inline", "BatchSize", "CheckpointInterval", "StartFrom", "OnFailure", "Retry", "AttemptTimeout");
        failures.Should().NotContain(f => f.Contains("'inline-plain'") || f.Contains("'inline-no-retry'") || f.Contains("'async-tuned'"));
    }

    [Fact]
    public async Task InlineProjection_Throws_TheAppendFailsAndNothingIsStored()
    {
        using var host = await EventSourcingHost.StartAsync(es => es.AddProjection("strict", async (e, context, ct) =>
        {
            await context.Documents.UpsertAsync("strict", e.StreamId, "{}"u8.ToArray(), ct);
            if (e.Data is Withdrawn)
            {
                throw new InvalidOperationException("withdrawals are not projected");
            }
        }, o => o.Mode = ProjectionMode.Inline));
        var store = host.Store();
        await store.AppendAsync("account-1", ExpectedVersion.NoStream, new AccountOpened("ada"));

        var act = async () => await store.AppendAsync("account-2", ExpectedVersion.NoStream, [new AccountOpened("bob"), new Withdrawn(1m)]);

        await act.Should().ThrowAsync<InvalidOperationException>().WithMessage("withdrawals are not projected");
        (await store.GetStreamStateAsync("account-2")).Version.Should().Be(0);
        (await store.GetHeadPositionAsync()).Should().Be(1);
        var documents = host.Services.GetRequiredService<IDocumentStorage>();
        (await documents.GetAsync("strict", "account-1")).Should().NotBeNull();
        (await documents.GetAsync("strict", "account-2")).Should().BeNull("the projection's writes were rolled back with the append");
    }

    [Fact]
    public async Task AsyncProjection_CatchesUpAfterTheAppend()
    {
        using var host = await EventSourcingHost.StartAsync(es => Balances(es, ProjectionMode.Async));
        var store = host.Store();

        await store.AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(10m)]);
        var result = await store.AppendAsync("account-2", ExpectedVersion.NoStream, [new AccountOpened("bob"), new Deposited(1m), new Deposited(2m)]);
        await host.Subscriptions().WaitForPositionAsync("balances", result.LastPosition).WaitAsync(TestHost.Wait);

        var all = await ReadModels(host).ListAsync<BalanceView>("balances").CollectAsync();
        all.Select(kv => kv.Value).Should().Equal(new BalanceView("account-1", 10m, 2), new BalanceView("account-2", 3m, 3));
        all.Select(kv => kv.Key).Should().Equal("account-1", "account-2");
        host.Subscriptions().GetStatus("balances").Checkpoint.Should().Be(5);
    }

    [Fact]
    public async Task AsyncProjection_ReadsTheNextPageWhileAPageCommits()
    {
        // The commit of the first page waits until the page after it is being read: a projection that read its next
        // page only after the commit would never get there, and the commit would time out.
        var storage = new InMemoryEventStorage();
        var secondPageRead = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var gated = 0;
        var events = new DelegatingEventStorage(storage)
        {
            OnReadAll = after =>
            {
                if (after == 2)
                {
                    secondPageRead.TrySetResult();
                }
            },
            OnCommit = async work =>
            {
                if (work.Checkpoints.Count > 0 && Interlocked.Exchange(ref gated, 1) == 0)
                {
                    await secondPageRead.Task.WaitAsync(TestHost.Wait);
                }
            },
        };
        var fixture = new Patterns.Conformance.EventStoreFixture(events, storage, storage, storage, storage);
        using var host = await EventSourcingHost.StartAsync(es => es
            .UseStorage(_ => fixture.AsSingleStore())
            .AddDocumentProjection<BalanceView>("paged", "paged", e => e.StreamId, (view, e) => e.Data switch
            {
                AccountOpened => new BalanceView(e.StreamId, 0m, 1),
                Deposited d => view! with { Balance = view.Balance + d.Amount, Events = view.Events + 1 },
                _ => view,
            }, o =>
            {
                o.BatchSize = 2;
                o.CheckpointInterval = 2;
            }));
        var store = host.Store();

        var result = await store.AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(1m), new Deposited(2m), new Deposited(3m), new Deposited(4m)]);
        await host.Subscriptions().WaitForPositionAsync("paged", result.LastPosition).WaitAsync(TestHost.Wait);

        secondPageRead.Task.IsCompleted.Should().BeTrue();
        (await ReadModels(host).GetAsync<BalanceView>("paged", "account-1")).Should().Be(new BalanceView("account-1", 10m, 5));
        host.Subscriptions().GetStatus("paged").Checkpoint.Should().Be(5);
        host.Subscriptions().GetStatus("paged").State.Should().Be(SubscriptionState.Live);
    }

    [Fact]
    public async Task RebuildAsync_AsyncProjection_ClearsItsCollectionAndReplaysFromZero()
    {
        var storage = new InMemoryEventStorage();
        using var host = await EventSourcingHost.StartAsync(es => { es.UseStorage(_ => storage); Balances(es, ProjectionMode.Async); });
        var store = host.Store();
        var result = await store.AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(10m)]);
        await host.Subscriptions().WaitForPositionAsync("balances", result.LastPosition).WaitAsync(TestHost.Wait);
        await storage.UpsertAsync("balances", "account-1", Encoding.UTF8.GetBytes("{\"accountId\":\"account-1\",\"balance\":999,\"events\":1}"));
        await storage.UpsertAsync("balances", "stray", Encoding.UTF8.GetBytes("{\"accountId\":\"stray\",\"balance\":1,\"events\":1}"));

        await host.Subscriptions().RebuildAsync("balances");
        await host.Subscriptions().WaitForPositionAsync("balances", result.LastPosition).WaitAsync(TestHost.Wait);

        var all = await ReadModels(host).ListAsync<BalanceView>("balances").CollectAsync();
        all.Select(kv => kv.Value).Should().Equal(new BalanceView("account-1", 10m, 2));
    }

    [Fact]
    public async Task RebuildAsync_InlineProjection_ReplaysTheLogBeforeReturning()
    {
        var storage = new InMemoryEventStorage();
        using var host = await EventSourcingHost.StartAsync(es => { es.UseStorage(_ => storage); Balances(es, ProjectionMode.Inline); });
        var store = host.Store();
        await store.AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(10m)]);
        await storage.ClearAsync("balances");
        (await ReadModels(host).GetAsync<BalanceView>("balances", "account-1")).Should().BeNull();

        await host.Subscriptions().RebuildAsync("balances");

        (await ReadModels(host).GetAsync<BalanceView>("balances", "account-1")).Should().Be(new BalanceView("account-1", 10m, 2));
    }

    [Fact]
    public async Task ProjectionType_FilteredByEventType_WritesOnlyThoseEvents()
    {
        using var host = await EventSourcingHost.StartAsync(es => es.AddProjection<EventTypeCounter>("counter", o =>
        {
            o.EventTypes.Add(typeof(Deposited));
            o.EventTypes.Add(typeof(Withdrawn));
            o.Collections.Add("event-counts");
        }));
        var result = await host.Store().AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(1m), new Deposited(2m), new Withdrawn(1m)]);

        await host.Subscriptions().WaitForPositionAsync("counter", result.LastPosition).WaitAsync(TestHost.Wait);

        var counts = await ReadModels(host).ListAsync<CountView>("event-counts").CollectAsync();
        counts.Should().Equal(
            new KeyValuePair<string, CountView>("bank.deposited", new CountView(2)),
            new KeyValuePair<string, CountView>("bank.withdrawn", new CountView(1)));
    }

    [Fact]
    public async Task DelegateProjection_ReadModelGoesWhereTheDelegateWrites()
    {
        var ledger = new ConcurrentDictionary<string, decimal>();
        using var host = await EventSourcingHost.StartAsync(es => es.AddProjection("ledger", (e, _, _) =>
        {
            if (e.Data is Deposited d)
            {
                ledger.AddOrUpdate(e.StreamId, d.Amount, (_, total) => total + d.Amount);
            }

            return ValueTask.CompletedTask;
        }));
        var result = await host.Store().AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(1m), new Deposited(2m)]);

        await host.Subscriptions().WaitForPositionAsync("ledger", result.LastPosition).WaitAsync(TestHost.Wait);

        ledger.Should().ContainSingle().Which.Should().Be(new KeyValuePair<string, decimal>("account-1", 3m));
    }

    [Fact]
    public async Task Rebuild_AsyncProjectionWithParkedEvents_ForgetsThemAndParksOnlyWhatFailsAgain()
    {
        var broken = true;
        var projected = new ConcurrentQueue<long>();
        using var host = await EventSourcingHost.StartAsync(es => es.AddProjection("ledger", (e, _, _) =>
        {
            if (e.Data is Withdrawn && (Volatile.Read(ref broken) || e.Version == 3))
            {
                throw new InvalidOperationException("no ledger account for withdrawals");
            }

            projected.Enqueue(e.Position);
            return ValueTask.CompletedTask;
        }, o => { o.OnFailure = SubscriptionFailureMode.Park; o.Retry = null; }));
        var result = await host.Store().AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Withdrawn(1m), new Withdrawn(2m)]);
        await host.Subscriptions().WaitForPositionAsync("ledger", result.LastPosition).WaitAsync(TestHost.Wait);
        (await host.Subscriptions().GetParkedEventsAsync("ledger").CollectAsync()).Select(p => p.Position).Should().Equal(2, 3);

        Volatile.Write(ref broken, false);
        await host.Subscriptions().RebuildAsync("ledger").WaitAsync(TestHost.Wait);
        await host.Subscriptions().WaitForPositionAsync("ledger", result.LastPosition).WaitAsync(TestHost.Wait);

        (await host.Subscriptions().GetParkedEventsAsync("ledger").CollectAsync()).Select(p => p.Position).Should().Equal([3L], "the event handled by the replay is no longer parked; the one that failed again is");
        projected.Should().Equal(1, 1, 2);
    }

    [Theory]
    [InlineData(ProjectionMode.Inline)]
    [InlineData(ProjectionMode.Async)]
    public async Task Start_EventTypesMatchingNoRegisteredEvent_FailsNamingTheProjection(ProjectionMode mode)
    {
        using var host = TestHost.Build(b => b.AddEventSourcing(es => es.AddEvent<Deposited>()
            .AddProjection("audit-trail", (_, _, _) => ValueTask.CompletedTask, o => { o.Mode = mode; o.EventTypes.Add(typeof(IUnregisteredEvent)); })), harness: false);

        var act = () => host.StartAsync();

        (await act.Should().ThrowAsync<InvalidOperationException>()).Which.Message
            .Should().Contain("projection 'audit-trail'").And.Contain(typeof(IUnregisteredEvent).FullName);
    }
}

public interface IUnregisteredEvent;
