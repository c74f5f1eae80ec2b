using System.Collections.Concurrent;
using System.Text;
using FluentAssertions;
using Patterns.Storage;
using Xunit;

namespace Patterns.Conformance;

/// <summary>
/// The contract every event store must keep: the <see cref="IEventStorage"/> SPI and the checkpoint, snapshot,
/// document and inbox stores beside it. A store's test class subclasses this and supplies
/// <see cref="CreateStoreAsync"/> and <see cref="ReopenAsync"/>; a durable store also overrides
/// <see cref="RunWriterAndKillAsync"/> to prove that an acknowledged append survives a killed process.
/// </summary>
/// <remarks>
/// <para>
/// Every test opens its own stores through <see cref="OpenAsync"/>, so tests are isolated and may run in
/// parallel with other test classes. Store names are unique, 16 characters of <c>[a-z0-9]</c> starting with a
/// letter, so they can name a file, a schema or a table prefix.
/// </para>
/// <para>
/// Global positions are one-based and gap-free: in a fresh store the log holds positions 1, 2, 3, ... with
/// no hole, even when appends conflict, fail in an inline projection or race each other.
/// </para>
/// <para>
/// No test sleeps: concurrent tests finish on their own with bounded loops, and every wait is bounded by
/// <see cref="WaitTimeout"/> so a broken store fails the test instead of hanging it.
/// </para>
/// </remarks>
public abstract partial class EventStoreConformanceTests : IAsyncLifetime
{
    private readonly List<EventStoreFixture> _fixtures = [];
    private CancellationTokenSource? _timeout;

    /// <summary>Gets how long a test may take before its waits are cancelled.</summary>
    protected virtual TimeSpan WaitTimeout => TimeSpan.FromSeconds(120);

    /// <summary>Gets how many events the long-stream paging test appends (create stores with a small read page size so it crosses many pages).</summary>
    protected virtual int LongStreamLength => 5_000;

    /// <summary>Gets a token cancelled when <see cref="WaitTimeout"/> has passed since the test started.</summary>
    protected CancellationToken Timeout => _timeout?.Token ?? CancellationToken.None;

    /// <summary>Creates a fresh, empty store for one test.</summary>
    /// <param name="name">A unique name (16 characters of <c>[a-z0-9]</c>) to isolate the store by: a file, a schema, a table prefix.</param>
    /// <returns>The store; the suite disposes it.</returns>
    protected abstract Task<EventStoreFixture> CreateStoreAsync(string name);

    /// <summary>
    /// Opens again the store created as <paramref name="name"/>, after the suite has disposed it, as an
    /// application does after a restart. A durable store must find everything committed before.
    /// </summary>
    /// <param name="name">The name the store was created with.</param>
    /// <returns>The reopened store; the suite disposes it.</returns>
    protected abstract Task<EventStoreFixture> ReopenAsync(string name);

    /// <summary>
    /// Crash safety, for durable stores: creates the store <paramref name="name"/>, starts a child process that
    /// appends to it through <see cref="CrashHarness.RunWriterAsync"/>, kills it once it has acknowledged
    /// <paramref name="killAfterAcks"/> appends (see <see cref="CrashHarness.RunAndKillAsync"/>), and returns what
    /// it acknowledged. The suite then calls <see cref="ReopenAsync"/> and checks every acknowledged event.
    /// </summary>
    /// <param name="name">The store's name.</param>
    /// <param name="killAfterAcks">How many acknowledged appends to wait for before the kill.</param>
    /// <param name="cancellationToken">Bounds the run.</param>
    /// <returns>The acknowledged appends; null (the default) for a store that is not durable.</returns>
    protected virtual Task<CrashRun?> RunWriterAndKillAsync(string name, int killAfterAcks, CancellationToken cancellationToken) =>
        Task.FromResult<CrashRun?>(null);

    /// <inheritdoc />
    public virtual ValueTask InitializeAsync()
    {
        _timeout = new CancellationTokenSource(WaitTimeout);
        return default;
    }

    /// <inheritdoc />
    public virtual async ValueTask DisposeAsync()
    {
        foreach (var fixture in _fixtures)
        {
            await fixture.DisposeAsync();
        }

        _timeout?.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>Creates a fresh store that the suite disposes after the test.</summary>
    /// <returns>The store.</returns>
    protected async Task<EventStoreFixture> OpenAsync() => Track(await CreateStoreAsync(NewName()));

    /// <summary>Makes a unique store name.</summary>
    /// <returns>16 characters of <c>[a-z0-9]</c>, starting with a letter.</returns>
    protected static string NewName() => "es" + Guid.NewGuid().ToString("N")[..14];

    /// <summary>Makes a serialized event with a fresh id.</summary>
    /// <param name="type">The event type name.</param>
    /// <param name="body">The body, as text.</param>
    /// <returns>The event.</returns>
    protected static SerializedEvent NewEvent(string type = "test.happened", string body = "{}") =>
        new(Guid.NewGuid(), type, Encoding.UTF8.GetBytes(body), new DateTimeOffset(2024, 5, 6, 7, 8, 9, 123, TimeSpan.Zero));

    /// <summary>Makes <paramref name="count"/> serialized events with fresh ids.</summary>
    /// <param name="count">How many.</param>
    /// <param name="type">Their type name.</param>
    /// <returns>The events.</returns>
    protected static SerializedEvent[] NewEvents(int count, string type = "test.happened") =>
        Enumerable.Range(0, count).Select(i => NewEvent(type, $"{{\"n\":{i}}}")).ToArray();

    /// <summary>Reads a sequence to a list.</summary>
    /// <typeparam name="T">The item type.</typeparam>
    /// <param name="source">The sequence.</param>
    /// <returns>The items.</returns>
    protected async Task<List<T>> ToListAsync<T>(IAsyncEnumerable<T> source)
    {
        var list = new List<T>();
        await foreach (var item in source.WithCancellation(Timeout))
        {
            list.Add(item);
        }

        return list;
    }

    /// <summary>Registers a store for disposal after the test.</summary>
    /// <param name="fixture">The store.</param>
    /// <returns><paramref name="fixture"/>.</returns>
    protected EventStoreFixture Track(EventStoreFixture fixture)
    {
        _fixtures.Add(fixture);
        return fixture;
    }

    private Task<List<StoredEvent>> ReadStream(EventStoreFixture store, string streamId, ReadDirection direction = ReadDirection.Forward, long? from = null, long max = long.MaxValue) =>
        ToListAsync(store.Events.ReadStreamAsync(streamId, direction, from, max, Timeout));

    private Task<List<StoredEvent>> ReadAll(EventStoreFixture store, long after = 0, EventFilter? filter = null, long max = long.MaxValue) =>
        ToListAsync(store.Events.ReadAllAsync(after, filter, max, Timeout));

    private static void ShouldBeGapFreeFromOne(IReadOnlyList<StoredEvent> log) =>
        log.Select(e => e.Position).Should().Equal(Enumerable.Range(1, log.Count).Select(i => (long)i), "global positions are one-based, gap-free and in order");

    // ----- Expected version -------------------------------------------------------------------------------

    [Fact]
    public async Task Append_NoStreamOnNewStream_StartsAtVersionOneAndPositionOne()
    {
        var store = await OpenAsync();
        var events = NewEvents(3);

        var result = await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, events, null, Timeout);

        result.Should().Be(new AppendResult("account-1", 3, 1, 3));
        var read = await ReadStream(store, "account-1");
        read.Select(e => e.Version).Should().Equal(1, 2, 3);
        read.Select(e => e.Position).Should().Equal(1, 2, 3);
        read.Select(e => e.EventId).Should().Equal(events.Select(e => e.EventId));
        (await store.Events.GetStreamStateAsync("account-1", Timeout)).Should().Be(new StreamState("account-1", 3, false, 0));
        (await store.Events.GetHeadPositionAsync(Timeout)).Should().Be(3);
    }

    [Fact]
    public async Task Append_NoStreamOnExistingStream_ThrowsWithStreamExpectedAndActualVersion()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);

        var act = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);

        var thrown = await act.Should().ThrowAsync<WrongExpectedVersionException>();
        thrown.Which.StreamId.Should().Be("account-1");
        thrown.Which.Expected.Should().Be(ExpectedVersion.NoStream);
        thrown.Which.Actual.Should().Be(2);
        thrown.Which.Message.Should().Contain("account-1");
    }

    [Fact]
    public async Task Append_StreamExistsOnNewStream_ThrowsWithActualZero()
    {
        var store = await OpenAsync();

        var act = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.StreamExists, NewEvents(1), null, Timeout);

        var thrown = await act.Should().ThrowAsync<WrongExpectedVersionException>();
        thrown.Which.Expected.Should().Be(ExpectedVersion.StreamExists);
        thrown.Which.Actual.Should().Be(0);
        (await store.Events.GetStreamStateAsync("account-1", Timeout)).Version.Should().Be(0);
    }

    [Fact]
    public async Task Append_StreamExistsOnExistingStream_Appends()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);

        var result = await store.Events.AppendAsync("account-1", ExpectedVersion.StreamExists, NewEvents(2), null, Timeout);

        result.Version.Should().Be(3);
    }

    [Fact]
    public async Task Append_ExactVersion_AppendsOnlyAtThatVersion()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.Exact(0), NewEvents(2), null, Timeout);

        var result = await store.Events.AppendAsync("account-1", ExpectedVersion.Exact(2), NewEvents(1), null, Timeout);
        var behind = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.Exact(2), NewEvents(1), null, Timeout);
        var ahead = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.Exact(7), NewEvents(1), null, Timeout);

        result.Version.Should().Be(3);
        (await behind.Should().ThrowAsync<WrongExpectedVersionException>()).Which.Should().Match<WrongExpectedVersionException>(
            e => e.Expected == ExpectedVersion.Exact(2) && e.Actual == 3 && e.StreamId == "account-1");
        (await ahead.Should().ThrowAsync<WrongExpectedVersionException>()).Which.Should().Match<WrongExpectedVersionException>(
            e => e.Expected == ExpectedVersion.Exact(7) && e.Actual == 3);
    }

    [Fact]
    public async Task Append_Any_AppendsToNewAndExistingStreams()
    {
        var store = await OpenAsync();

        var first = await store.Events.AppendAsync("account-1", ExpectedVersion.Any, NewEvents(2), null, Timeout);
        var second = await store.Events.AppendAsync("account-1", ExpectedVersion.Any, NewEvents(1), null, Timeout);

        first.Version.Should().Be(2);
        second.Should().Be(new AppendResult("account-1", 3, 3, 3));
    }

    [Fact]
    public async Task Append_Conflict_StoresNothing()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);

        var act = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.Exact(1), NewEvents(3), null, Timeout);

        await act.Should().ThrowAsync<WrongExpectedVersionException>();
        (await store.Events.GetStreamStateAsync("account-1", Timeout)).Version.Should().Be(2);
        (await store.Events.GetHeadPositionAsync(Timeout)).Should().Be(2);
        (await ReadAll(store)).Should().HaveCount(2);
        var next = await store.Events.AppendAsync("account-2", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);
        next.FirstPosition.Should().Be(3, "a failed append leaves no gap in the global log");
    }

    [Fact]
    public async Task Append_InvalidArguments_ThrowArgumentException()
    {
        var store = await OpenAsync();

        var noEvents = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.Any, [], null, Timeout);
        var noStream = async () => await store.Events.AppendAsync(string.Empty, ExpectedVersion.Any, NewEvents(1), null, Timeout);

        await noEvents.Should().ThrowAsync<ArgumentException>();
        await noStream.Should().ThrowAsync<ArgumentException>();
        (await store.Events.GetHeadPositionAsync(Timeout)).Should().Be(0);
    }

    // ----- Idempotency -----------------------------------------------------------------------------------

    [Fact]
    public async Task Append_RetriedWithSameEventIds_ReturnsOriginalResultAndStoresNoDuplicate()
    {
        var store = await OpenAsync();
        var events = NewEvents(2);
        var original = await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, events, null, Timeout);

        var retry = await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, events, null, Timeout);
        var retryAny = await store.Events.AppendAsync("account-1", ExpectedVersion.Any, events, null, Timeout);

        retry.Should().Be(original);
        retryAny.Should().Be(original);
        (await ReadStream(store, "account-1")).Should().HaveCount(2);
        (await ReadAll(store)).Should().HaveCount(2);
        (await store.Events.GetHeadPositionAsync(Timeout)).Should().Be(2);
    }

    [Fact]
    public async Task Append_RetriedAfterLaterAppends_ReturnsOriginalResult()
    {
        var store = await OpenAsync();
        var first = NewEvents(2);
        var original = await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, first, null, Timeout);
        var later = await store.Events.AppendAsync("account-1", ExpectedVersion.Exact(2), NewEvents(3), null, Timeout);

        var retry = await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, first, null, Timeout);
        var retryLater = await store.Events.AppendAsync("account-1", ExpectedVersion.Exact(2), (await ReadStream(store, "account-1", from: 3)).Select(e => new SerializedEvent(e.EventId, e.EventType, e.Data, e.Timestamp)).ToArray(), null, Timeout);

        retry.Should().Be(original);
        retryLater.Should().Be(later);
        (await store.Events.GetStreamStateAsync("account-1", Timeout)).Version.Should().Be(5);
    }

    [Fact]
    public async Task Append_StoredIdsMixedWithNewOnes_ThrowsDuplicateEventExceptionAndStoresNothing()
    {
        var store = await OpenAsync();
        var stored = NewEvents(2);
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, stored, null, Timeout);

        var mixed = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.Any, [stored[1], NewEvent()], null, Timeout);
        var reordered = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.Any, [stored[1], stored[0]], null, Timeout);

        var thrown = await mixed.Should().ThrowAsync<DuplicateEventException>();
        thrown.Which.StreamId.Should().Be("account-1");
        thrown.Which.EventId.Should().Be(stored[1].EventId);
        thrown.Which.Message.Should().Contain(stored[1].EventId.ToString());
        await reordered.Should().ThrowAsync<DuplicateEventException>();
        (await ReadStream(store, "account-1")).Select(e => e.EventId).Should().Equal(stored.Select(e => e.EventId));
        (await store.Events.GetHeadPositionAsync(Timeout)).Should().Be(2);
    }

    // ----- Atomicity and concurrency ---------------------------------------------------------------------

    [Fact]
    public async Task Append_SixteenWritersRaceForTheSameVersion_ExactlyOneWinsEachRound()
    {
        const int writers = 16;
        const int rounds = 10;
        var store = await OpenAsync();
        var winners = new List<Guid>();
        for (var round = 0; round < rounds; round++)
        {
            var expected = ExpectedVersion.Exact(round);
            var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var attempts = Enumerable.Range(0, writers).Select(_ => Task.Run(async () =>
            {
                var e = NewEvent();
                await start.Task;
                try
                {
                    var result = await store.Events.AppendAsync("race", expected, [e], null, Timeout);
                    return (Event: e, Result: (AppendResult?)result, Conflict: (WrongExpectedVersionException?)null);
                }
                catch (WrongExpectedVersionException ex)
                {
                    return (Event: e, Result: null, Conflict: ex);
                }
            })).ToArray();
            start.SetResult();
            var outcomes = await Task.WhenAll(attempts).WaitAsync(Timeout);

            var won = outcomes.Where(o => o.Result is not null).ToList();
            won.Should().ContainSingle($"exactly one of {writers} writers expecting version {round} can append");
            won[0].Result!.Value.Version.Should().Be(round + 1);
            outcomes.Where(o => o.Conflict is not null).Should().HaveCount(writers - 1)
                .And.OnlyContain(o => o.Conflict!.StreamId == "race" && o.Conflict.Expected == expected && o.Conflict.Actual == round + 1);
            winners.Add(won[0].Event.EventId);
        }

        var stream = await ReadStream(store, "race");
        stream.Select(e => e.EventId).Should().Equal(winners);
        stream.Select(e => e.Version).Should().Equal(Enumerable.Range(1, rounds).Select(i => (long)i));
        ShouldBeGapFreeFromOne(await ReadAll(store));
    }

    [Fact]
    public async Task Append_SixteenWritersOnOneStreamRetryingConflicts_NoLostOrDuplicateVersions()
    {
        const int writers = 16;
        const int perWriter = 15;
        var store = await OpenAsync();
        var conflicts = 0;
        var appended = new ConcurrentBag<Guid>();
        await Task.WhenAll(Enumerable.Range(0, writers).Select(_ => Task.Run(async () =>
        {
            var version = (await store.Events.GetStreamStateAsync("shared", Timeout)).Version;
            for (var i = 0; i < perWriter; i++)
            {
                var batch = NewEvents(1 + (i % 2));
                for (var attempt = 0; ; attempt++)
                {
                    attempt.Should().BeLessThan(10_000, "a writer must get through eventually");
                    try
                    {
                        version = (await store.Events.AppendAsync("shared", ExpectedVersion.Exact(version), batch, null, Timeout)).Version;
                        break;
                    }
                    catch (WrongExpectedVersionException ex)
                    {
                        Interlocked.Increment(ref conflicts);
                        ex.Actual.Should().BeGreaterThan(version);
                        version = ex.Actual;
                    }
                }

                foreach (var e in batch)
                {
                    appended.Add(e.EventId);
                }
            }
        }))).WaitAsync(Timeout);

        var total = writers * Enumerable.Range(0, perWriter).Sum(i => 1 + (i % 2));
        var stream = await ReadStream(store, "shared");
        stream.Select(e => e.Version).Should().Equal(Enumerable.Range(1, total).Select(i => (long)i));
        stream.Select(e => e.EventId).Should().OnlyHaveUniqueItems().And.BeEquivalentTo(appended);
        ShouldBeGapFreeFromOne(await ReadAll(store));
    }

    [Fact]
    public async Task Append_SixteenWritersWithAnyOnOneStream_EveryEventStoredOnceWithBatchesContiguous()
    {
        const int writers = 16;
        const int perWriter = 20;
        var store = await OpenAsync();
        var batches = new ConcurrentBag<(SerializedEvent[] Batch, AppendResult Result)>();
        await Task.WhenAll(Enumerable.Range(0, writers).Select(_ => Task.Run(async () =>
        {
            for (var i = 0; i < perWriter; i++)
            {
                var batch = NewEvents(1 + (i % 3));
                batches.Add((batch, await store.Events.AppendAsync("shared", ExpectedVersion.Any, batch, null, Timeout)));
            }
        }))).WaitAsync(Timeout);

        var stream = await ReadStream(store, "shared");
        stream.Select(e => e.Version).Should().Equal(Enumerable.Range(1, stream.Count).Select(i => (long)i));
        stream.Should().HaveCount(batches.Sum(b => b.Batch.Length));
        var byId = stream.ToDictionary(e => e.EventId);
        foreach (var (batch, result) in batches)
        {
            batch.Select(e => byId[e.EventId].Version).Should().Equal(
                Enumerable.Range(0, batch.Length).Select(i => result.Version - batch.Length + 1 + i), "an append's events get consecutive versions");
            byId[batch[^1].EventId].Position.Should().Be(result.LastPosition);
            byId[batch[0].EventId].Position.Should().Be(result.FirstPosition);
        }

        ShouldBeGapFreeFromOne(await ReadAll(store));
    }

    [Fact]
    public async Task Append_SixteenWritersOnSixteenStreams_EveryStreamCompleteAndLogGapFree()
    {
        const int writers = 16;
        const int perWriter = 25;
        var store = await OpenAsync();
        var expected = new ConcurrentDictionary<string, List<Guid>>();
        await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            var streamId = $"account-{w}";
            var ids = new List<Guid>();
            long version = 0;
            long lastPosition = 0;
            for (var i = 0; i < perWriter; i++)
            {
                var batch = NewEvents(1 + (i % 3));
                var result = await store.Events.AppendAsync(streamId, ExpectedVersion.Exact(version), batch, null, Timeout);
                result.Version.Should().Be(version + batch.Length);
                result.FirstPosition.Should().BeGreaterThan(lastPosition, "a later append commits after an earlier one");
                version = result.Version;
                lastPosition = result.LastPosition;
                ids.AddRange(batch.Select(e => e.EventId));
            }

            expected[streamId] = ids;
        }))).WaitAsync(Timeout);

        foreach (var (streamId, ids) in expected)
        {
            var stream = await ReadStream(store, streamId);
            stream.Select(e => e.EventId).Should().Equal(ids);
            stream.Select(e => e.Version).Should().Equal(Enumerable.Range(1, ids.Count).Select(i => (long)i));
        }

        var log = await ReadAll(store);
        ShouldBeGapFreeFromOne(log);
        log.Should().HaveCount(expected.Values.Sum(ids => ids.Count));
        foreach (var group in log.GroupBy(e => e.StreamId))
        {
            group.Select(e => e.Version).Should().BeInAscendingOrder("each stream's events appear in the log in version order");
        }
    }

    [Fact]
    public async Task ReadAll_TailingReaderDuringConcurrentAppends_SeesEveryEventExactlyOnceInPositionOrder()
    {
        const int writers = 16;
        const int perWriter = 30;
        var store = await OpenAsync();
        var appended = new ConcurrentBag<Guid>();
        var total = writers * Enumerable.Range(0, perWriter).Sum(i => 1 + (i % 3));
        var seen = new List<StoredEvent>();
        var reader = Task.Run(async () =>
        {
            long last = 0;
            while (seen.Count < total)
            {
                var read = 0;
                await foreach (var e in store.Events.ReadAllAsync(last, null, 37, Timeout))
                {
                    seen.Add(e);
                    last = e.Position;
                    read++;
                }

                if (read == 0)
                {
                    await store.Events.WaitForEventsAsync(last, Timeout);
                }
            }
        });
        await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < perWriter; i++)
            {
                var batch = NewEvents(1 + (i % 3));
                var streamId = i % 4 == 0 ? "shared" : $"account-{w}";
                await store.Events.AppendAsync(streamId, ExpectedVersion.Any, batch, null, Timeout);
                foreach (var e in batch)
                {
                    appended.Add(e.EventId);
                }
            }
        }))).WaitAsync(Timeout);
        await reader.WaitAsync(Timeout);

        seen.Select(e => e.Position).Should().Equal(Enumerable.Range(1, total).Select(i => (long)i), "the tailing reader sees every position once, in order, never skipping one that committed late");
        seen.Select(e => e.EventId).Should().OnlyHaveUniqueItems().And.BeEquivalentTo(appended);
        (await ReadAll(store, seen[^1].Position)).Should().BeEmpty();
    }

    // ----- Reads -----------------------------------------------------------------------------------------

    [Fact]
    public async Task ReadStream_ForwardAndBackwardFromVersionWithMaxCount_ReturnsTheRequestedSlice()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(10), null, Timeout);
        await store.Events.AppendAsync("account-2", ExpectedVersion.NoStream, NewEvents(3), null, Timeout);

        (await ReadStream(store, "account-1")).Select(e => e.Version).Should().Equal(1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
        (await ReadStream(store, "account-1", ReadDirection.Forward, 4, 3)).Select(e => e.Version).Should().Equal(4, 5, 6);
        (await ReadStream(store, "account-1", ReadDirection.Forward, 9, 5)).Select(e => e.Version).Should().Equal(9, 10);
        (await ReadStream(store, "account-1", ReadDirection.Forward, 11)).Should().BeEmpty();
        (await ReadStream(store, "account-1", ReadDirection.Backward)).Select(e => e.Version).Should().Equal(10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
        (await ReadStream(store, "account-1", ReadDirection.Backward, 5, 2)).Select(e => e.Version).Should().Equal(5, 4);
        (await ReadStream(store, "account-1", ReadDirection.Backward, 2, 10)).Select(e => e.Version).Should().Equal(2, 1);
        (await ReadStream(store, "account-1", ReadDirection.Backward, null, 1)).Select(e => e.Version).Should().Equal(10);
        (await ReadStream(store, "account-1", ReadDirection.Backward, 100, 2)).Select(e => e.Version).Should().Equal(10, 9);
        (await ReadStream(store, "account-1", ReadDirection.Forward, null, 0)).Should().BeEmpty();
        (await ReadStream(store, "account-2", ReadDirection.Forward)).Select(e => e.Position).Should().Equal(11, 12, 13);
    }

    [Fact]
    public async Task ReadStream_MissingStream_IsEmpty()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);

        (await ReadStream(store, "account-2")).Should().BeEmpty();
        (await ReadStream(store, "account-2", ReadDirection.Backward)).Should().BeEmpty();
        (await store.Events.GetStreamStateAsync("account-2", Timeout)).Should().Be(new StreamState("account-2", 0, false, 0));
    }

    [Fact]
    public async Task ReadStream_StoredEvent_CarriesEverythingAppended()
    {
        var store = await OpenAsync();
        var timestamp = new DateTimeOffset(2031, 12, 30, 23, 59, 58, 765, TimeSpan.Zero);
        var full = new SerializedEvent(Guid.NewGuid(), "bank.deposited", Encoding.UTF8.GetBytes("{\"amount\":12.5}"), timestamp)
        {
            CorrelationId = "corr-1",
            CausationId = "cause-1",
            Metadata = Encoding.UTF8.GetBytes("{\"user\":\"ada\"}"),
        };
        var bare = new SerializedEvent(Guid.NewGuid(), "bank.withdrawn", Encoding.UTF8.GetBytes("{}"), timestamp.AddSeconds(1));

        var result = await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, [full, bare], null, Timeout);
        var read = await ReadStream(store, "account-1");
        var fromLog = await ReadAll(store);

        foreach (var events in new[] { read, fromLog })
        {
            events.Should().HaveCount(2);
            var first = events[0];
            first.EventId.Should().Be(full.EventId);
            first.StreamId.Should().Be("account-1");
            first.Version.Should().Be(1);
            first.Position.Should().Be(result.FirstPosition);
            first.EventType.Should().Be("bank.deposited");
            Encoding.UTF8.GetString(first.Data.Span).Should().Be("{\"amount\":12.5}");
            first.Timestamp.Should().Be(timestamp);
            first.CorrelationId.Should().Be("corr-1");
            first.CausationId.Should().Be("cause-1");
            Encoding.UTF8.GetString(first.Metadata.Span).Should().Be("{\"user\":\"ada\"}");
            var second = events[1];
            second.Version.Should().Be(2);
            second.Position.Should().Be(result.LastPosition);
            second.CorrelationId.Should().BeNull();
            second.CausationId.Should().BeNull();
            second.Metadata.IsEmpty.Should().BeTrue();
            second.Timestamp.Should().Be(timestamp.AddSeconds(1));
        }
    }

    [Fact]
    public async Task ReadStream_LongStream_PagesInOrderBothWays()
    {
        var store = await OpenAsync();
        var length = LongStreamLength;
        var ids = new List<Guid>(length);
        for (var appended = 0; appended < length; appended += 100)
        {
            var batch = NewEvents(Math.Min(100, length - appended));
            await store.Events.AppendAsync("long", ExpectedVersion.Exact(appended), batch, null, Timeout);
            ids.AddRange(batch.Select(e => e.EventId));
        }

        var forward = await ReadStream(store, "long");
        var backward = await ReadStream(store, "long", ReadDirection.Backward);
        var slice = await ReadStream(store, "long", ReadDirection.Forward, length / 2, length / 4);
        var log = await ReadAll(store);
        var tail = await ReadAll(store, length - 10);

        forward.Select(e => e.EventId).Should().Equal(ids);
        forward.Select(e => e.Version).Should().Equal(Enumerable.Range(1, length).Select(i => (long)i));
        backward.Select(e => e.EventId).Should().Equal(Enumerable.Reverse(ids));
        slice.Select(e => e.Version).Should().Equal(Enumerable.Range(length / 2, length / 4).Select(i => (long)i));
        ShouldBeGapFreeFromOne(log);
        log.Select(e => e.EventId).Should().Equal(ids);
        tail.Select(e => e.Position).Should().Equal(Enumerable.Range(length - 9, 10).Select(i => (long)i));

        var early = new List<long>();
        await foreach (var e in store.Events.ReadStreamAsync("long", ReadDirection.Forward, null, long.MaxValue, Timeout))
        {
            early.Add(e.Version);
            if (early.Count == 3)
            {
                break;
            }
        }

        early.Should().Equal(1, 2, 3);
        (await ReadAll(store, 0, null, 1234)).Should().HaveCount(Math.Min(1234, length));
    }

    [Fact]
    public async Task ReadAll_FilterByTypeAndStreamPrefix_SelectsOnlyMatchingEventsInPositionOrder()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent("order.placed"), NewEvent("order.shipped")], null, Timeout);
        await store.Events.AppendAsync("invoice-1", ExpectedVersion.NoStream, [NewEvent("invoice.sent")], null, Timeout);
        await store.Events.AppendAsync("order-2", ExpectedVersion.NoStream, [NewEvent("order.placed")], null, Timeout);
        await store.Events.AppendAsync("orderly", ExpectedVersion.NoStream, [NewEvent("order.placed")], null, Timeout);
        await store.Events.AppendAsync("a_b-1", ExpectedVersion.NoStream, [NewEvent("x.y")], null, Timeout);
        await store.Events.AppendAsync("axb-1", ExpectedVersion.NoStream, [NewEvent("x.y")], null, Timeout);
        await store.Events.AppendAsync("p%q-1", ExpectedVersion.NoStream, [NewEvent("x.y")], null, Timeout);
        await store.Events.AppendAsync("pxq-1", ExpectedVersion.NoStream, [NewEvent("x.y")], null, Timeout);

        static string Describe(StoredEvent e) => $"{e.StreamId}@{e.Version}:{e.EventType}";

        (await ReadAll(store, 0, new EventFilter { EventTypes = ["order.placed"] })).Select(Describe)
            .Should().Equal("order-1@1:order.placed", "order-2@1:order.placed", "orderly@1:order.placed");
        (await ReadAll(store, 0, new EventFilter { StreamPrefix = "order-" })).Select(Describe)
            .Should().Equal("order-1@1:order.placed", "order-1@2:order.shipped", "order-2@1:order.placed");
        (await ReadAll(store, 0, new EventFilter { StreamPrefix = "order-", EventTypes = ["order.shipped"] })).Select(Describe)
            .Should().Equal("order-1@2:order.shipped");
        (await ReadAll(store, 0, new EventFilter { EventTypes = ["order.shipped", "invoice.sent"] }, 1)).Select(Describe)
            .Should().Equal("order-1@2:order.shipped");
        (await ReadAll(store, 2, new EventFilter { EventTypes = ["order.placed", "invoice.sent"] })).Select(Describe)
            .Should().Equal("invoice-1@1:invoice.sent", "order-2@1:order.placed", "orderly@1:order.placed");
        (await ReadAll(store, 0, new EventFilter { StreamPrefix = "a_b" })).Select(Describe).Should().Equal("a_b-1@1:x.y");
        (await ReadAll(store, 0, new EventFilter { StreamPrefix = "p%q" })).Select(Describe).Should().Equal("p%q-1@1:x.y");
        (await ReadAll(store, 0, new EventFilter { EventTypes = ["nothing.matches"] })).Should().BeEmpty();
        (await ReadAll(store, 0, EventFilter.All)).Should().HaveCount(9);
    }

    [Fact]
    public async Task ReadAll_FilterSelectingFewEventsInALongLog_FindsThemAll()
    {
        var store = await OpenAsync();
        var rare = new List<Guid>();
        for (var i = 0; i < 40; i++)
        {
            await store.Events.AppendAsync("noise", ExpectedVersion.Any, NewEvents(100, "noise.made"), null, Timeout);
            var e = NewEvent("rare.happened");
            await store.Events.AppendAsync($"rare-{i}", ExpectedVersion.NoStream, [e], null, Timeout);
            rare.Add(e.EventId);
        }

        (await ReadAll(store, 0, new EventFilter { EventTypes = ["rare.happened"] })).Select(e => e.EventId).Should().Equal(rare);
        (await ReadAll(store, 0, new EventFilter { StreamPrefix = "rare-" }, 5)).Select(e => e.EventId).Should().Equal(rare.Take(5));
    }

    [Fact]
    public async Task GetHeadPosition_TracksTheLastCommittedPosition()
    {
        var store = await OpenAsync();
        (await store.Events.GetHeadPositionAsync(Timeout)).Should().Be(0);
        (await ReadAll(store)).Should().BeEmpty();

        await store.Events.AppendAsync("a", ExpectedVersion.Any, NewEvents(3), null, Timeout);
        await store.Events.AppendAsync("b", ExpectedVersion.Any, NewEvents(2), null, Timeout);

        (await store.Events.GetHeadPositionAsync(Timeout)).Should().Be(5);
        (await ReadAll(store, 5)).Should().BeEmpty();
        (await ReadAll(store, 3)).Select(e => e.StreamId).Should().Equal("b", "b");
    }

    // ----- Deletion and truncation ------------------------------------------------------------------------

    [Fact]
    public async Task DeleteStream_Soft_ReadsAndAppendsThrowButEventsStayInTheLog()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);
        await store.Events.AppendAsync("account-2", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);

        await store.Events.DeleteStreamAsync("account-1", ExpectedVersion.Exact(2), StreamDeleteMode.Soft, Timeout);

        var read = async () => await ReadStream(store, "account-1");
        var append = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.Any, NewEvents(1), null, Timeout);
        (await read.Should().ThrowAsync<StreamDeletedException>()).Which.StreamId.Should().Be("account-1");
        (await append.Should().ThrowAsync<StreamDeletedException>()).Which.StreamId.Should().Be("account-1");
        (await store.Events.GetStreamStateAsync("account-1", Timeout)).Should().Match<StreamState>(s => s.IsDeleted && s.Version == 2 && !s.Exists);
        (await ReadAll(store)).Select(e => e.StreamId).Should().Equal("account-1", "account-1", "account-2");
        (await ReadStream(store, "account-2")).Should().HaveCount(1);
    }

    [Fact]
    public async Task DeleteStream_WrongExpectedVersion_ThrowsAndKeepsTheStream()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);

        var act = async () => await store.Events.DeleteStreamAsync("account-1", ExpectedVersion.Exact(1), StreamDeleteMode.Soft, Timeout);

        var thrown = await act.Should().ThrowAsync<WrongExpectedVersionException>();
        thrown.Which.Actual.Should().Be(2);
        thrown.Which.Expected.Should().Be(ExpectedVersion.Exact(1));
        (await store.Events.GetStreamStateAsync("account-1", Timeout)).IsDeleted.Should().BeFalse();
        (await ReadStream(store, "account-1")).Should().HaveCount(2);
    }

    [Fact]
    public async Task DeleteStream_Hard_RemovesEventsWhereSupportedAndOtherwiseActsSoft()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);
        await store.Events.AppendAsync("account-2", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);

        await store.Events.DeleteStreamAsync("account-1", ExpectedVersion.Any, StreamDeleteMode.Hard, Timeout);

        var read = async () => await ReadStream(store, "account-1");
        var append = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.Any, NewEvents(1), null, Timeout);
        await read.Should().ThrowAsync<StreamDeletedException>();
        await append.Should().ThrowAsync<StreamDeletedException>("a hard-deleted stream's id can never be used again");
        (await store.Events.GetStreamStateAsync("account-1", Timeout)).IsDeleted.Should().BeTrue();
        var log = await ReadAll(store);
        if (store.Events.Capabilities.HasFlag(EventStorageCapabilities.HardDelete))
        {
            log.Select(e => (e.StreamId, e.Position)).Should().Equal(("account-2", 3L));
        }
        else
        {
            log.Select(e => e.StreamId).Should().Equal("account-1", "account-1", "account-2");
        }

        var next = await store.Events.AppendAsync("account-3", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);
        next.FirstPosition.Should().Be(4, "positions are never reused");
    }

    [Fact]
    public async Task TruncateStream_HidesEarlierVersionsFromStreamReadsOnly()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(10), null, Timeout);

        await store.Events.TruncateStreamAsync("account-1", 4, Timeout);

        (await ReadStream(store, "account-1")).Select(e => e.Version).Should().Equal(4, 5, 6, 7, 8, 9, 10);
        (await ReadStream(store, "account-1", ReadDirection.Backward)).Select(e => e.Version).Should().Equal(10, 9, 8, 7, 6, 5, 4);
        (await ReadStream(store, "account-1", ReadDirection.Forward, 2, 3)).Select(e => e.Version).Should().Equal(4, 5, 6);
        (await ReadStream(store, "account-1", ReadDirection.Backward, 5, 10)).Select(e => e.Version).Should().Equal(5, 4);
        (await ReadAll(store)).Should().HaveCount(10, "truncated events stay in the global log");
        (await store.Events.GetStreamStateAsync("account-1", Timeout)).Should().Be(new StreamState("account-1", 10, false, 4));

        var next = await store.Events.AppendAsync("account-1", ExpectedVersion.Exact(10), NewEvents(1), null, Timeout);
        next.Version.Should().Be(11);

        await store.Events.TruncateStreamAsync("account-1", 12, Timeout);
        (await ReadStream(store, "account-1")).Should().BeEmpty();
        (await store.Events.GetStreamStateAsync("account-1", Timeout)).Version.Should().Be(11, "truncation never resets the version");
        (await store.Events.AppendAsync("account-1", ExpectedVersion.Exact(11), NewEvents(1), null, Timeout)).Version.Should().Be(12);
        (await ReadStream(store, "account-1")).Select(e => e.Version).Should().Equal(12);
    }

    // ----- Checkpoints, snapshots, documents, inbox ----------------------------------------------------------

    [Fact]
    public async Task Checkpoints_SaveAndLoad_LastWriteWins()
    {
        var store = await OpenAsync();

        (await store.Checkpoints.LoadAsync("projection-a", Timeout)).Should().BeNull();
        await store.Checkpoints.SaveAsync("projection-a", 10, Timeout);
        await store.Checkpoints.SaveAsync("projection-b", 3, Timeout);
        (await store.Checkpoints.LoadAsync("projection-a", Timeout)).Should().Be(10);
        await store.Checkpoints.SaveAsync("projection-a", 25, Timeout);
        (await store.Checkpoints.LoadAsync("projection-a", Timeout)).Should().Be(25);
        await store.Checkpoints.SaveAsync("projection-a", 0, Timeout);
        (await store.Checkpoints.LoadAsync("projection-a", Timeout)).Should().Be(0, "0 resets a subscription to the start of the log");
        (await store.Checkpoints.LoadAsync("projection-b", Timeout)).Should().Be(3);
    }

    [Fact]
    public async Task Reopen_AfterDispose_KeepsCheckpointsEventsAndPositions()
    {
        var name = NewName();
        var store = await CreateStoreAsync(name);
        try
        {
            await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(3), null, Timeout);
            await store.Checkpoints.SaveAsync("projection-a", 2, Timeout);
            await store.Checkpoints.SaveAsync("projection-b", 3, Timeout);
            await store.Documents.UpsertAsync("balances", "account-1", Encoding.UTF8.GetBytes("30"), Timeout);
        }
        finally
        {
            await store.DisposeAsync();
        }

        var reopened = Track(await ReopenAsync(name));

        (await reopened.Checkpoints.LoadAsync("projection-a", Timeout)).Should().Be(2);
        (await reopened.Checkpoints.LoadAsync("projection-b", Timeout)).Should().Be(3);
        (await reopened.Events.GetStreamStateAsync("account-1", Timeout)).Version.Should().Be(3);
        (await reopened.Events.GetHeadPositionAsync(Timeout)).Should().Be(3);
        Encoding.UTF8.GetString((await reopened.Documents.GetAsync("balances", "account-1", Timeout))!).Should().Be("30");
        var next = await reopened.Events.AppendAsync("account-1", ExpectedVersion.Exact(3), NewEvents(1), null, Timeout);
        next.Should().Be(new AppendResult("account-1", 4, 4, 4));
    }

    [Fact]
    public async Task Snapshots_SaveAndLoad_NewerVersionWins()
    {
        var store = await OpenAsync();
        var taken = new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero);
        var v5 = new StoredSnapshot("account-1", 5, "bank.account", 2, Encoding.UTF8.GetBytes("{\"balance\":5}"), taken);

        (await store.Snapshots.LoadAsync("account-1", Timeout)).Should().BeNull();
        await store.Snapshots.SaveAsync(v5, Timeout);
        await store.Snapshots.SaveAsync(v5 with { Version = 3, Data = Encoding.UTF8.GetBytes("{\"balance\":3}") }, Timeout);
        var loaded = await store.Snapshots.LoadAsync("account-1", Timeout);

        loaded.Should().NotBeNull();
        loaded!.StreamId.Should().Be("account-1");
        loaded.Version.Should().Be(5, "an older snapshot never replaces a newer one");
        loaded.SnapshotType.Should().Be("bank.account");
        loaded.SchemaVersion.Should().Be(2);
        Encoding.UTF8.GetString(loaded.Data.Span).Should().Be("{\"balance\":5}");
        loaded.Timestamp.Should().Be(taken);

        await store.Snapshots.SaveAsync(v5 with { Version = 9, SchemaVersion = 3, Data = Encoding.UTF8.GetBytes("{\"balance\":9}") }, Timeout);
        var newer = await store.Snapshots.LoadAsync("account-1", Timeout);
        newer!.Version.Should().Be(9);
        newer.SchemaVersion.Should().Be(3);
        Encoding.UTF8.GetString(newer.Data.Span).Should().Be("{\"balance\":9}");
        (await store.Snapshots.LoadAsync("account-2", Timeout)).Should().BeNull();
    }

    [Fact]
    public async Task Documents_UpsertGetDeleteListClear_BehaveAsATable()
    {
        var store = await OpenAsync();
        var docs = store.Documents;

        (await docs.GetAsync("balances", "a", Timeout)).Should().BeNull();
        await docs.UpsertAsync("balances", "a", Encoding.UTF8.GetBytes("1"), Timeout);
        await docs.UpsertAsync("balances", "a", Encoding.UTF8.GetBytes("2"), Timeout);
        await docs.UpsertAsync("other", "a", Encoding.UTF8.GetBytes("x"), Timeout);
        Encoding.UTF8.GetString((await docs.GetAsync("balances", "a", Timeout))!).Should().Be("2");
        (await docs.DeleteAsync("balances", "a", Timeout)).Should().BeTrue();
        (await docs.DeleteAsync("balances", "a", Timeout)).Should().BeFalse();
        (await docs.GetAsync("balances", "a", Timeout)).Should().BeNull();
        Encoding.UTF8.GetString((await docs.GetAsync("other", "a", Timeout))!).Should().Be("x");

        var ids = Enumerable.Range(0, 300).Select(i => $"doc-{i:D3}").ToList();
        foreach (var id in ids.OrderBy(_ => Random.Shared.Next()))
        {
            await docs.UpsertAsync("many", id, Encoding.UTF8.GetBytes(id.ToUpperInvariant()), Timeout);
        }

        var listed = await ToListAsync(docs.ListAsync("many", Timeout));
        listed.Select(kv => kv.Key).Should().Equal(ids, "documents are listed in id order");
        listed.Should().OnlyContain(kv => Encoding.UTF8.GetString(kv.Value) == kv.Key.ToUpperInvariant());
        (await ToListAsync(docs.ListAsync("empty", Timeout))).Should().BeEmpty();

        await docs.ClearAsync("many", Timeout);
        (await ToListAsync(docs.ListAsync("many", Timeout))).Should().BeEmpty();
        (await docs.GetAsync("many", "doc-001", Timeout)).Should().BeNull();
        (await docs.GetAsync("other", "a", Timeout)).Should().NotBeNull("clearing one collection leaves the others");
    }

    [Fact]
    public async Task Inbox_MarksEachMessageOncePerConsumerAndPrunes()
    {
        var store = await OpenAsync();
        if (store.Inbox is not { } inbox)
        {
            return;
        }

        (await inbox.ContainsAsync("billing", "m-1", Timeout)).Should().BeFalse();
        (await inbox.TryMarkHandledAsync("billing", "m-1", Timeout)).Should().BeTrue();
        (await inbox.TryMarkHandledAsync("billing", "m-1", Timeout)).Should().BeFalse("another delivery already marked it");
        (await inbox.ContainsAsync("billing", "m-1", Timeout)).Should().BeTrue();
        (await inbox.ContainsAsync("shipping", "m-1", Timeout)).Should().BeFalse();
        (await inbox.TryMarkHandledAsync("shipping", "m-1", Timeout)).Should().BeTrue();

        var concurrent = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(() => inbox.TryMarkHandledAsync("billing", "m-2", Timeout).AsTask())));
        concurrent.Count(won => won).Should().Be(1, "exactly one of concurrent deliveries wins");

        (await inbox.PruneAsync(DateTimeOffset.UtcNow.AddYears(-50), Timeout)).Should().Be(0);
        (await inbox.PruneAsync(DateTimeOffset.UtcNow.AddYears(50), Timeout)).Should().Be(3);
        (await inbox.ContainsAsync("billing", "m-1", Timeout)).Should().BeFalse();
    }

    [Fact]
    public async Task Inbox_ContainsMany_ReturnsTheIdsTheConsumerHandled_InOneCall()
    {
        var store = await OpenAsync();
        if (store.Inbox is not { } inbox)
        {
            return;
        }

        (await inbox.ContainsManyAsync("billing", [], Timeout)).Should().BeEmpty();
        (await inbox.TryMarkHandledAsync("billing", "m-1", Timeout)).Should().BeTrue();
        (await inbox.TryMarkHandledAsync("billing", "m-300", Timeout)).Should().BeTrue();
        (await inbox.TryMarkHandledAsync("shipping", "m-2", Timeout)).Should().BeTrue();
        await Units(store).CommitAsync(new UnitOfWork().ClaimInbox("billing", "m-150"), Timeout);

        // More ids than one statement's parameters would hold one by one; handled and unknown ones mixed.
        var ids = Enumerable.Range(1, 300).Select(i => $"m-{i}").ToList();
        (await inbox.ContainsManyAsync("billing", ids, Timeout)).Should().BeEquivalentTo(["m-1", "m-150", "m-300"], "marked, or claimed in a unit of work, by this consumer");
        (await inbox.ContainsManyAsync("shipping", ["m-1", "m-2", "m-2"], Timeout)).Should().BeEquivalentTo(["m-2"], "another consumer's marks are its own");
        (await inbox.ContainsManyAsync("nobody", ids, Timeout)).Should().BeEmpty();

        var noConsumer = async () => await inbox.ContainsManyAsync(string.Empty, [], Timeout);
        await noConsumer.Should().ThrowAsync<ArgumentException>("the consumer is checked even when there is no id to look up");
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        var whenCancelled = async () => await inbox.ContainsManyAsync("billing", ids, cancelled.Token);
        await whenCancelled.Should().ThrowAsync<OperationCanceledException>();
    }

    // ----- Inline projections ------------------------------------------------------------------------------

    [Fact]
    public async Task InlineProjection_SeesAppendedEventsAndCommitsItsDocumentsWithTheAppend()
    {
        var store = await OpenAsync();
        var seen = new List<StoredEvent>();

        async ValueTask Count(IReadOnlyList<StoredEvent> appended, IDocumentWriter documents, CancellationToken ct)
        {
            seen.AddRange(appended);
            var current = await documents.GetAsync("counters", "events", ct);
            var count = current is null ? 0 : int.Parse(Encoding.UTF8.GetString(current));
            await documents.UpsertAsync("counters", "events", Encoding.UTF8.GetBytes((count + appended.Count).ToString()), ct);
            var own = await documents.GetAsync("counters", "events", ct);
            Encoding.UTF8.GetString(own!).Should().Be((count + appended.Count).ToString(), "a projection reads its own writes");
            await documents.UpsertAsync("last", appended[^1].StreamId, Encoding.UTF8.GetBytes(appended[^1].Version.ToString()), ct);
        }

        var events = NewEvents(2, "bank.deposited");
        var result = await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, events, Count, Timeout);
        await store.Events.AppendAsync("account-2", ExpectedVersion.NoStream, NewEvents(3), Count, Timeout);

        seen.Should().HaveCount(5);
        seen.Take(2).Select(e => (e.EventId, e.StreamId, e.Version, e.Position, e.EventType)).Should().Equal(
            (events[0].EventId, "account-1", 1L, result.FirstPosition, "bank.deposited"),
            (events[1].EventId, "account-1", 2L, result.LastPosition, "bank.deposited"));
        Encoding.UTF8.GetString((await store.Documents.GetAsync("counters", "events", Timeout))!).Should().Be("5");
        Encoding.UTF8.GetString((await store.Documents.GetAsync("last", "account-2", Timeout))!).Should().Be("3");
    }

    [Fact]
    public async Task InlineProjection_Throws_AppendFailsAndNothingIsStored()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);

        static async ValueTask Fail(IReadOnlyList<StoredEvent> appended, IDocumentWriter documents, CancellationToken ct)
        {
            await documents.UpsertAsync("balances", "account-1", Encoding.UTF8.GetBytes("999"), ct);
            throw new InvalidOperationException("projection failed");
        }

        var act = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.Exact(1), NewEvents(2), Fail, Timeout);

        await act.Should().ThrowAsync<InvalidOperationException>().WithMessage("projection failed");
        if (!store.Events.Capabilities.HasFlag(EventStorageCapabilities.TransactionalProjections))
        {
            return;
        }

        (await store.Events.GetStreamStateAsync("account-1", Timeout)).Version.Should().Be(1);
        (await store.Events.GetHeadPositionAsync(Timeout)).Should().Be(1);
        (await ReadAll(store)).Should().HaveCount(1);
        (await store.Documents.GetAsync("balances", "account-1", Timeout)).Should().BeNull();
        var next = await store.Events.AppendAsync("account-1", ExpectedVersion.Exact(1), NewEvents(1), null, Timeout);
        next.Should().Be(new AppendResult("account-1", 2, 2, 2));
    }

    [Fact]
    public async Task InlineProjection_RetriedOrConflictingAppend_DoesNotProjectAgain()
    {
        var store = await OpenAsync();
        var calls = 0;

        async ValueTask Count(IReadOnlyList<StoredEvent> appended, IDocumentWriter documents, CancellationToken ct)
        {
            calls++;
            var current = await documents.GetAsync("counters", "events", ct);
            var count = current is null ? 0 : int.Parse(Encoding.UTF8.GetString(current));
            await documents.UpsertAsync("counters", "events", Encoding.UTF8.GetBytes((count + appended.Count).ToString()), ct);
        }

        var events = NewEvents(2);
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, events, Count, Timeout);
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, events, Count, Timeout);
        var conflict = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(1), Count, Timeout);
        await conflict.Should().ThrowAsync<WrongExpectedVersionException>();

        calls.Should().Be(1);
        Encoding.UTF8.GetString((await store.Documents.GetAsync("counters", "events", Timeout))!).Should().Be("2");
    }

    // ----- Waiting for events -------------------------------------------------------------------------------

    [Fact]
    public async Task WaitForEvents_WakesWhenAnAppendCommits()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("a", ExpectedVersion.Any, NewEvents(2), null, Timeout);

        await store.Events.WaitForEventsAsync(1, Timeout).AsTask().WaitAsync(Timeout);

        var woken = Task.Run(async () =>
        {
            // It may return early; a caller re-reads and waits again until the head moves.
            while (await store.Events.GetHeadPositionAsync(Timeout) <= 2)
            {
                await store.Events.WaitForEventsAsync(2, Timeout);
            }
        });
        await store.Events.AppendAsync("a", ExpectedVersion.Any, NewEvents(1), null, Timeout);
        await woken.WaitAsync(Timeout);
        (await ReadAll(store, 2)).Should().ContainSingle();
    }

    [Fact]
    public async Task WaitForEvents_Cancelled_EndsTheWait()
    {
        var store = await OpenAsync();
        using var cancel = new CancellationTokenSource();
        var waiting = Task.Run(async () =>
        {
            while (true)
            {
                await store.Events.WaitForEventsAsync(0, cancel.Token);
            }
        });

        await cancel.CancelAsync();

        await FluentActions.Awaiting(() => waiting.WaitAsync(Timeout)).Should().ThrowAsync<OperationCanceledException>();
    }

    // ----- Crash safety -----------------------------------------------------------------------------------

    [Fact]
    public async Task Crash_WriterProcessKilledMidLoad_EveryAcknowledgedAppendSurvives()
    {
        var name = NewName();
        var run = await RunWriterAndKillAsync(name, 300, Timeout);
        if (run is null)
        {
            var store = await OpenAsync();
            store.Events.Capabilities.HasFlag(EventStorageCapabilities.Durable).Should().BeFalse(
                "a durable store must override RunWriterAndKillAsync to show that an acknowledged append survives a killed process");
            return;
        }

        run.Acknowledged.Count.Should().BeGreaterThanOrEqualTo(300);
        var reopened = Track(await ReopenAsync(name));
        foreach (var group in run.Acknowledged.GroupBy(a => a.StreamId))
        {
            var stream = await ReadStream(reopened, group.Key);
            var byVersion = stream.ToDictionary(e => e.Version, e => e.EventId);
            foreach (var ack in group)
            {
                for (var i = 0; i < ack.EventIds.Count; i++)
                {
                    var version = ack.Version - ack.EventIds.Count + 1 + i;
                    byVersion.Should().ContainKey(version, $"the append of {group.Key} up to version {ack.Version} was acknowledged before the kill");
                    byVersion[version].Should().Be(ack.EventIds[i]);
                }
            }

            stream.Select(e => e.Version).Should().Equal(Enumerable.Range(1, stream.Count).Select(i => (long)i));
            var state = await reopened.Events.GetStreamStateAsync(group.Key, Timeout);
            (await reopened.Events.AppendAsync(group.Key, ExpectedVersion.Exact(state.Version), NewEvents(1), null, Timeout)).Version.Should().Be(state.Version + 1);
        }

        ShouldBeGapFreeFromOne(await ReadAll(reopened));
    }
}
