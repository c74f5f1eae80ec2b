using FluentAssertions;
using Microsoft.Extensions.DependencyInjection;
using Patterns.EventSourcing;
using Patterns.Storage;
using Xunit;

namespace Patterns.Conformance;

/// <summary>Async projections apply each event once, even when the process dies between two writes.</summary>
public abstract partial class EventStoreConformanceTests
{
    /// <summary>
    /// A fold projection (a running total) is stopped dead after a number of writes to the store, as a process killed at
    /// that moment would be: the write that crosses the limit and every later one fail. A new process then resumes from
    /// what the store holds. Before projections committed their read-model writes and checkpoint together, the events
    /// written since the last checkpoint were folded again on resume and the total counted them twice.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(5)]
    public async Task Facade_AsyncFoldProjection_AfterACrashBetweenWrites_AppliesEveryEventOnce(int crashAfterWrites)
    {
        var store = await OpenAsync();
        static ConformanceBalance? Apply(ConformanceBalance? current, RecordedEvent e) => e.Data switch
        {
            ConformanceOpened opened => current ?? new ConformanceBalance(opened.Owner, 0m), // a replayed opening keeps the total, as a real fold would
            ConformanceDepositedV3 deposit => current! with { Balance = current.Balance + deposit.Amount },
            _ => current,
        };
        void Configure(EventSourcingBuilder es) => es
            .AddEvent<ConformanceOpened>().AddEvent<ConformanceDepositedV3>()
            .AddDocumentProjection<ConformanceBalance>("totals", "totals", e => e.StreamId, Apply, o => o.BatchSize = 4);

        // Appended before the projection starts (and not through the crashing store), so it catches up over several pages.
        var events = new List<EventData> { new(new ConformanceOpened("ada")) };
        events.AddRange(Enumerable.Range(1, 39).Select(i => new EventData(new ConformanceDepositedV3(i, "EUR"))));
        long last;
        await using (var writer = await StartFacadeAsync(store, _ => { }))
        {
            last = (await writer.Store.AppendAsync("account-1", ExpectedVersion.NoStream, events, Timeout)).LastPosition;
        }

        var crashing = new CrashingStore(store, crashAfterWrites);
        crashing.Arm();
        await using (var first = await StartFacadeAsync(store, crashing, Configure, Clock))
        {
            await crashing.Crashed.WaitAsync(Timeout);
        }

        // The killed process never released its lease: the next one takes over once it expires.
        await using var second = await StartFacadeAsync(store, store.AsSingleStore(), Configure, Clock);
        var caughtUp = second.Subscriptions.WaitForPositionAsync("totals", last, Timeout);
        while (!caughtUp.IsCompleted)
        {
            Timeout.ThrowIfCancellationRequested();
            Clock.Advance(TimeSpan.FromSeconds(1));
            await Task.Yield();
        }

        await caughtUp;
        (await second.Services.GetRequiredService<IReadModels>().GetAsync<ConformanceBalance>("totals", "account-1", Timeout))
            .Should().Be(new ConformanceBalance("ada", Enumerable.Range(1, 39).Sum()), "each deposit is folded into the total exactly once");
    }
}
