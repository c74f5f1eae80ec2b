using System.Text;
using System.Collections.Concurrent;
using FluentAssertions;
using Microsoft.Extensions.DependencyInjection;
using Patterns.EventSourcing;
using Patterns.Messaging;
using Patterns.Outbox;
using Patterns.Storage;
using Xunit;

namespace Patterns.Conformance;

/// <summary>The transactional outbox and its relay over each store.</summary>
public abstract partial class EventStoreConformanceTests
{
    [Fact]
    public async Task Facade_Outbox_CommittedMessagesReachTheConsumerInOrderAndARestartedRelaySendsTheRest()
    {
        var store = await OpenAsync();
        var received = new ConcurrentQueue<int>();
        var signals = new ConcurrentDictionary<int, TaskCompletionSource>();
        TaskCompletionSource Signal(int count) => signals.GetOrAdd(count, static _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        void Messaging(IServiceCollection services, bool relay) => services
            .AddOutbox(o => o.RunRelay = relay)
            .AddPubSub(ps => ps.Subscribe<ConformanceDepositedV3>((m, _, _) =>
            {
                received.Enqueue((int)m.Amount);
                Signal(received.Count).TrySetResult();
                return default;
            }, "deposits", o => o.ConsumerGroup = "ledger"));

        async Task CommitAsync(FacadeHost host, int amount, bool conflict = false)
        {
            await using var scope = host.Services.CreateAsyncScope();
            var session = scope.ServiceProvider.GetRequiredService<IStoreSession>();
            session.Append($"account-{amount}", conflict ? ExpectedVersion.Exact(99) : ExpectedVersion.NoStream, [new EventData(new ConformanceDepositedV3(amount, "EUR"))]);
            session.Publish("deposits", new ConformanceDepositedV3(amount, "EUR"), new MessageOptions { PartitionKey = "ledger" });
            await session.CommitAsync(Timeout);
        }

        await using (var first = await StartFacadeAsync(store, store.AsSingleStore(), es => es.AddEvent<ConformanceDepositedV3>(), more: s => Messaging(s, relay: true)))
        {
            for (var i = 1; i <= 5; i++)
            {
                await CommitAsync(first, i);
            }

            await FluentActions.Awaiting(() => CommitAsync(first, 100, conflict: true)).Should().ThrowAsync<WrongExpectedVersionException>();
            await Signal(5).Task.WaitAsync(Timeout);

            // The relay removes a batch once it has handed it over; stopping before that would send it again (at least
            // once), so wait for the removal to keep the counts below exact.
            while ((await Outbox(store).ReadOutboxAsync(0, 1, Timeout)).Count > 0)
            {
                await Task.Yield();
            }
        }

        // Committed while no relay runs: stored, not sent.
        await using (var writer = await StartFacadeAsync(store, store.AsSingleStore(), es => es.AddEvent<ConformanceDepositedV3>(), more: s => Messaging(s, relay: false)))
        {
            for (var i = 6; i <= 8; i++)
            {
                await CommitAsync(writer, i);
            }
        }

        (await Outbox(store).ReadOutboxAsync(0, 100, Timeout)).Should().HaveCount(3);
        await using var second = await StartFacadeAsync(store, store.AsSingleStore(), es => es.AddEvent<ConformanceDepositedV3>(), more: s => Messaging(s, relay: true));
        await Signal(8).Task.WaitAsync(Timeout);

        received.Should().Equal(1, 2, 3, 4, 5, 6, 7, 8);
        (await ReadStream(store, "account-100")).Should().BeEmpty();
    }
}

/// <summary>The relay's hand-over in memory beside its store reads, over each store.</summary>
public abstract partial class EventStoreConformanceTests
{
    [Fact]
    public async Task UnitOfWork_ConcurrentUnitsOfSeveralMessages_EachGetsConsecutiveSequenceNumbersEndingAtItsLast()
    {
        // The relay's in-memory hand-over numbers a unit's messages back from its LastOutboxSequence: every store must
        // give a unit's messages consecutive numbers, in the order they were enqueued, even while other units commit.
        var store = await OpenAsync();
        var lasts = new ConcurrentDictionary<string, long>();
        await Task.WhenAll(Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            for (var u = 0; u < 10; u++)
            {
                var work = new UnitOfWork();
                for (var k = 0; k < 3; k++)
                {
                    work.Enqueue(Message("q", $"{w}-{u}-{k}"));
                }

                lasts[$"{w}-{u}"] = (await Units(store).CommitAsync(work, Timeout)).LastOutboxSequence;
            }
        })));

        var stored = (await Outbox(store).ReadOutboxAsync(0, 1_000, Timeout)).ToDictionary(m => m.Sequence, m => Encoding.UTF8.GetString(m.Message.Payload.Span));
        stored.Should().HaveCount(120);
        foreach (var (unit, last) in lasts)
        {
            new[] { stored[last - 2], stored[last - 1], stored[last] }.Should().Equal($"{unit}-0", $"{unit}-1", $"{unit}-2");
        }
    }

    [Fact]
    public async Task Facade_Outbox_ConcurrentCommitsOfTheRelaysProcessAndOfAnother_EveryMessageArrivesOnceInSequenceOrder()
    {
        // Writers commit through the relay's own services (handed over in memory) and through services without a relay
        // (another process, to the relay: read from the store), interleaved, so the relay's in-memory run meets gaps that
        // only the store can fill. Each message must arrive exactly once, in sequence order, and the outbox end empty.
        var store = await OpenAsync();
        const int Writers = 4, PerWriter = 30;
        var received = new ConcurrentQueue<int>();
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var last = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var relay = await StartFacadeAsync(store, store.AsSingleStore(), es => es.AddEvent<ConformanceDepositedV3>(), more: s => s
            .AddOutbox()
            .AddPubSub(ps => ps.Subscribe<ConformanceDepositedV3>((m, _, _) =>
            {
                received.Enqueue((int)m.Amount);
                if (m.Amount == 0)
                {
                    last.TrySetResult();
                }

                if (received.Count == Writers * PerWriter)
                {
                    all.TrySetResult();
                }

                return default;
            }, "handoff-deposits", o => o.ConsumerGroup = "ledger")));
        await using var other = await StartFacadeAsync(store, store.AsSingleStore(), es => es.AddEvent<ConformanceDepositedV3>(), more: s => s.AddOutbox(o => o.RunRelay = false).AddPubSub(_ => { }));

        var committed = new ConcurrentDictionary<long, int>();
        await Task.WhenAll(Enumerable.Range(0, Writers).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < PerWriter; i++)
            {
                var amount = (w * PerWriter) + i + 1;
                await using var scope = (i % 3 == 1 ? other : relay).Services.CreateAsyncScope();
                var session = scope.ServiceProvider.GetRequiredService<IStoreSession>();
                session.Append($"handoff-{amount}", ExpectedVersion.NoStream, [new EventData(new ConformanceDepositedV3(amount, "EUR"))]);
                session.Publish("handoff-deposits", new ConformanceDepositedV3(amount, "EUR"), new MessageOptions { PartitionKey = "ledger" });
                committed[(await session.CommitAsync(Timeout)).LastOutboxSequence] = amount;
            }
        })));

        await all.Task.WaitAsync(Timeout);
        received.Should().Equal(committed.OrderBy(c => c.Key).Select(c => c.Value), "each message once, in the order of its sequence number");
        while ((await Outbox(store).ReadOutboxAsync(0, 1, Timeout)).Count > 0)
        {
            await Task.Yield();
        }

        // One more message, read from the store: whatever the relay would send again comes before it.
        await using (var scope = other.Services.CreateAsyncScope())
        {
            var session = scope.ServiceProvider.GetRequiredService<IStoreSession>();
            session.Publish("handoff-deposits", new ConformanceDepositedV3(0, "EUR"), new MessageOptions { PartitionKey = "ledger" });
            await session.CommitAsync(Timeout);
        }

        await last.Task.WaitAsync(Timeout);
        received.Should().HaveCount((Writers * PerWriter) + 1, "nothing arrives twice after the outbox emptied").And.EndWith(0);
    }
}
