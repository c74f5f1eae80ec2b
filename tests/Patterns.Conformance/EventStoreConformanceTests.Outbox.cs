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
