using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing;
using Patterns.EventSourcing.InMemory;
using Patterns.Storage;
using Patterns.Testing;

namespace Patterns.Core.Tests.EventSourcing;

/// <summary>
/// Two hosts share one store, as two processes of one application share a database: each subscription and projection
/// runs in one of them at a time (the lease owner), the other stands by, and between them every event is handled once.
/// The process-kill versions of this (owners killed with SIGKILL) are in the SQLite and PostgreSQL test projects.
/// </summary>
public sealed class SharedOwnershipTests
{
    private static readonly TimeSpan Step = TimeSpan.FromSeconds(1);

    [Fact]
    public async Task TwoHostsOnOneStore_OneIsLiveTheOtherStandby_AndEachEventIsHandledOnceInTotal()
    {
        var fake = new FakeTimeProvider(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
        var time = new TimerTracker(fake);
        var storage = new InMemoryEventStorage(timeProvider: time);
        var handled = new ConcurrentDictionary<Guid, int>();
        void Configure(EventSourcingBuilder es) => es
            .UseStorage(_ => storage)
            .Configure(o => o.LeaseDuration = TimeSpan.FromSeconds(15))
            .AddSubscription("audit", (e, _) =>
            {
                handled.AddOrUpdate(e.EventId, 1, (_, n) => n + 1);
                return ValueTask.CompletedTask;
            })
            .AddDocumentProjection<Tally>("tallies", "tallies", e => e.StreamId, (current, e) => (current ?? Tally.Empty).Apply(e.Data!), o => o.BatchSize = 3);

        using var first = await EventSourcingHost.StartAsync(Configure, time);
        await Eventually.HoldsAsync(() => IsOwner(first, "audit") && IsOwner(first, "tallies"));
        using var second = await EventSourcingHost.StartAsync(Configure, time);
        await Eventually.HoldsAsync(() => State(second, "audit") == SubscriptionState.Standby && State(second, "tallies") == SubscriptionState.Standby);

        // Appends while time passes: the owner renews its lease every 5 s, the standby polls as often and stays standby.
        var expected = new Dictionary<string, Tally>();
        long last = 0;
        for (var round = 0; round < 30; round++)
        {
            last = await AppendAsync(first, round, expected);
            fake.Advance(Step);
            await first.Subscriptions().WaitForPositionAsync("audit", last).WaitAsync(TestHost.Wait);
            await first.Subscriptions().WaitForPositionAsync("tallies", last).WaitAsync(TestHost.Wait);
            foreach (var name in new[] { "audit", "tallies" })
            {
                IsOwner(first, name).Should().BeTrue($"round {round}: the first host keeps renewing the lease of '{name}'");
                State(second, name).Should().Be(SubscriptionState.Standby, $"round {round}: one host at a time runs '{name}'");
            }
        }

        // A graceful stop releases the leases: the standby takes over at its next poll and resumes where the first stopped.
        await first.StopAsync();
        var deadline = DateTime.UtcNow + TestHost.Wait;
        while (!(IsOwner(second, "audit") && IsOwner(second, "tallies")))
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "the standby takes over");
            fake.Advance(Step);

            // A few turns for the timers' continuations before time moves on, so that the new owner's renewals keep up.
            for (var i = 0; i < 20 && !(IsOwner(second, "audit") && IsOwner(second, "tallies")); i++)
            {
                await Task.Yield();
            }
        }

        for (var round = 30; round < 40; round++)
        {
            last = await AppendAsync(second, round, expected);
            fake.Advance(Step);
            State(first, "audit").Should().Be(SubscriptionState.Stopped);
        }

        await second.Subscriptions().WaitForPositionAsync("audit", last).WaitAsync(TestHost.Wait);
        await second.Subscriptions().WaitForPositionAsync("tallies", last).WaitAsync(TestHost.Wait);
        var log = await second.Store().ReadAllAsync().CollectAsync();
        log.Should().HaveCount(expected.Values.Sum(t => t.Count));
        handled.Keys.Should().BeEquivalentTo(log.Select(e => e.EventId), "every event is handled");
        handled.Values.Should().OnlyContain(n => n == 1, "no event is handled by both hosts, or twice by one");
        var readModels = second.Services.GetRequiredService<IReadModels>();
        foreach (var (account, tally) in expected)
        {
            (await readModels.GetAsync<Tally>("tallies", account)).Should().Be(tally, $"the fold of {account} applies each event once");
        }
    }

    private static async Task<long> AppendAsync(IHost host, int round, Dictionary<string, Tally> expected)
    {
        var account = "account-" + (round % 3);
        object[] events = [new Deposited(round + 1), new Withdrawn(1m)];
        var result = await host.Store().AppendAsync(account, ExpectedVersion.Any, events);
        var tally = expected.GetValueOrDefault(account, Tally.Empty);
        expected[account] = events.Aggregate(tally, (t, e) => t.Apply(e));
        return result.LastPosition;
    }

    private static SubscriptionState State(IHost host, string name) => host.Subscriptions().GetStatus(name).State;

    private static bool IsOwner(IHost host, string name) => State(host, name) is SubscriptionState.CatchingUp or SubscriptionState.Live;
}
