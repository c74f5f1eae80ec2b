using FluentAssertions;
using Patterns.Storage;
using Xunit;

namespace Patterns.Conformance;

/// <summary>
/// Store guarantees that subscriptions and async projections rely on to never skip an event, and the
/// concurrent form of an idempotent retry.
/// </summary>
public abstract partial class EventStoreConformanceTests
{
    [Fact]
    public async Task GetHeadPosition_DuringConcurrentAppends_EveryPositionUpToTheHeadIsReadable()
    {
        // A subscription that has read everything its filter selects up to the head checkpoints the head itself;
        // a head ahead of an uncommitted lower position would make it skip that event once it commits.
        const int writers = 16;
        const int perWriter = 25;
        var total = writers * Enumerable.Range(0, perWriter).Sum(i => 1 + (i % 2));
        var store = await OpenAsync();
        var writing = Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < perWriter; i++)
            {
                await store.Events.AppendAsync(i % 5 == 0 ? "shared" : $"account-{w}", ExpectedVersion.Any, NewEvents(1 + (i % 2)), null, Timeout);
            }
        })));

        long seen = 0;
        while (seen < total)
        {
            Timeout.ThrowIfCancellationRequested();
            var head = await store.Events.GetHeadPositionAsync(Timeout);
            head.Should().BeGreaterThanOrEqualTo(seen, "the head never moves back");
            if (head == seen)
            {
                await store.Events.WaitForEventsAsync(seen, Timeout);
                continue;
            }

            var read = await ReadAll(store, seen, null, head - seen);
            read.Select(e => e.Position).Should().Equal(
                Enumerable.Range(1, (int)(head - seen)).Select(i => seen + i),
                $"every position up to the head ({head}) is committed and readable when the head is reported");
            seen = head;
        }

        await writing.WaitAsync(Timeout);
        (await store.Events.GetHeadPositionAsync(Timeout)).Should().Be(total);
    }

    [Fact]
    public async Task ReadAll_FilteredWithMaxCount_ReturnsFewerOnlyAtTheEndOfTheLog()
    {
        // A subscription reads batches of BatchSize and treats a shorter batch as "caught up to the head"; a store
        // that returned a short page while matching events remain would make it checkpoint past them.
        var store = await OpenAsync();
        var selected = new List<Guid>();
        for (var i = 0; i < 30; i++)
        {
            var batch = Enumerable.Range(0, 100).Select(n => NewEvent(n % 3 == 0 ? "wanted.happened" : "noise.made")).ToArray();
            await store.Events.AppendAsync(i % 2 == 0 ? "noise" : $"mixed-{i}", ExpectedVersion.Any, batch, null, Timeout);
            selected.AddRange(batch.Where(e => e.EventType == "wanted.happened").Select(e => e.EventId));
        }

        var byType = new EventFilter { EventTypes = ["wanted.happened"] };
        var first = await ReadAll(store, 0, byType, 700);
        var rest = await ReadAll(store, first[^1].Position, byType, 700);
        var byPrefix = await ReadAll(store, 0, new EventFilter { StreamPrefix = "mixed-" }, 1234);

        first.Select(e => e.EventId).Should().Equal(selected.Take(700), "a filtered read returns maxCount events while more match");
        rest.Select(e => e.EventId).Should().Equal(selected.Skip(700), "and fewer only when the log has no more");
        byPrefix.Should().HaveCount(1234);
        byPrefix.Should().OnlyContain(e => e.StreamId.StartsWith("mixed-", StringComparison.Ordinal));
        byPrefix.Select(e => e.Position).Should().BeInAscendingOrder();
    }

    [Fact]
    public async Task Append_SameAppendRetriedConcurrently_StoredOnceAndEveryCallGetsTheOriginalResult()
    {
        // A client that times out and retries while its first call is still in flight.
        const int callers = 16;
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);
        foreach (var expected in new[] { ExpectedVersion.Exact(1), ExpectedVersion.Any })
        {
            var events = NewEvents(3);
            var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var calls = Enumerable.Range(0, callers).Select(_ => Task.Run(async () =>
            {
                await start.Task;
                return await store.Events.AppendAsync("account-1", expected, events, null, Timeout);
            })).ToArray();
            start.SetResult();

            var results = await Task.WhenAll(calls).WaitAsync(Timeout);

            results.Distinct().Should().ContainSingle($"every concurrent call of one append ({expected}) returns the result of the one that stored it");
            var stream = await ReadStream(store, "account-1");
            stream.Select(e => e.EventId).Should().EndWith(events.Select(e => e.EventId));
            stream.Select(e => e.EventId).Should().OnlyHaveUniqueItems();
            results[0].LastPosition.Should().Be(stream[^1].Position);
        }

        (await ReadStream(store, "account-1")).Should().HaveCount(7);
        ShouldBeGapFreeFromOne(await ReadAll(store));
    }

    [Fact]
    public async Task Append_EventIdStoredInAnotherStream_IsStoredAsADifferentEvent()
    {
        // Idempotency is per stream: an id says "this append again" only within the stream that holds it.
        var store = await OpenAsync();
        var shared = NewEvent();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, [shared], null, Timeout);

        var other = await store.Events.AppendAsync("account-2", ExpectedVersion.NoStream, [shared], null, Timeout);

        other.Should().Be(new AppendResult("account-2", 1, 2, 2));
        (await ReadStream(store, "account-2")).Select(e => e.EventId).Should().Equal(shared.EventId);
        (await ReadAll(store)).Select(e => (e.StreamId, e.EventId)).Should().Equal(("account-1", shared.EventId), ("account-2", shared.EventId));
    }
}
