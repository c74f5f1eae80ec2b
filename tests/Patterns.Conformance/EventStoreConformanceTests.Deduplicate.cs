using FluentAssertions;
using Microsoft.Extensions.DependencyInjection;
using Patterns.EventSourcing;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.Outbox;
using Patterns.PubSub;
using Patterns.Storage;
using Xunit;

namespace Patterns.Conformance;

public abstract partial class EventStoreConformanceTests
{
    /// <summary>
    /// The kernel's <see cref="PatternsOptions.Deduplicate"/> checks the inbox before the handler and marks it after: two
    /// copies of one message handled at the same moment in two processes both pass the check. A handler that writes
    /// through a store session must still take effect once: the session's commit claims the message in the same
    /// transaction, so the second copy's commit fails (it is a duplicate) and writes nothing.
    /// </summary>
    [Fact]
    public async Task Facade_Deduplicate_TwoProcessesHandleCopiesOfOneMessageAtOnce_TheHandlersStoreWritesApplyOnce()
    {
        var store = await OpenAsync();
        const int Rounds = 10;
        var race = new CopyRace();
        await using var first = await StartDeduplicatingAsync(store, race);
        await using var second = await StartDeduplicatingAsync(store, race);

        for (var round = 0; round < Rounds; round++)
        {
            var settled = race.Begin(round);
            var options = new MessageOptions { MessageId = Guid.NewGuid() };
            await first.Services.GetRequiredService<IPublisher>().PublishAsync("dedup-race", new ConformanceDepositedV3(round, "EUR"), options, Timeout);
            await second.Services.GetRequiredService<IPublisher>().PublishAsync("dedup-race", new ConformanceDepositedV3(round, "EUR"), options, Timeout);
            await settled.WaitAsync(Timeout);

            var events = new List<StoredEvent>();
            await foreach (var stored in store.Events.ReadStreamAsync($"dedup-race-{round}", cancellationToken: Timeout))
            {
                events.Add(stored);
            }

            events.Should().HaveCount(1, $"both copies of round {round}'s message passed the inbox check together, and only one handler's commit may take effect");
        }
    }

    private Task<FacadeHost> StartDeduplicatingAsync(EventStoreFixture store, CopyRace race) =>
        StartFacadeAsync(store, store.AsSingleStore(), es => es.AddEvent<ConformanceDepositedV3>(), more: s => s
            .Configure<PatternsOptions>(o => o.Deduplicate = true)
            .AddOutbox(o => o.RunRelay = false)
            .AddPubSub(ps => ps.Subscribe<ConformanceDepositedV3>(
                async (m, context, ct) =>
                {
                    try
                    {
                        // Both copies are past the inbox check before either commits.
                        await race.ArriveAsync().WaitAsync(Timeout);
                        var session = context.Services.GetRequiredService<IStoreSession>();
                        session.Append($"dedup-race-{(int)m.Amount}", ExpectedVersion.Any, [new EventData(m)]);
                        await session.CommitAsync(ct);
                    }
                    finally
                    {
                        race.Done();
                    }
                },
                "dedup-race",
                o => o.ConsumerGroup = "dedup-ledger")));

    /// <summary>Holds the two copies of a round's message until both arrived, and tells when both handlers ended.</summary>
    private sealed class CopyRace
    {
        private readonly Lock _gate = new();
        private TaskCompletionSource _arrived = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private TaskCompletionSource _settled = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _arrivals;
        private int _done;

        public Task Begin(int round)
        {
            lock (_gate)
            {
                _arrived = new(TaskCreationOptions.RunContinuationsAsynchronously);
                _settled = new(TaskCreationOptions.RunContinuationsAsynchronously);
                _arrivals = 0;
                _done = 0;
                return _settled.Task;
            }
        }

        public Task ArriveAsync()
        {
            lock (_gate)
            {
                if (++_arrivals == 2)
                {
                    _arrived.TrySetResult();
                }

                return _arrived.Task;
            }
        }

        public void Done()
        {
            lock (_gate)
            {
                if (++_done == 2)
                {
                    _settled.TrySetResult();
                }
            }
        }
    }
}
