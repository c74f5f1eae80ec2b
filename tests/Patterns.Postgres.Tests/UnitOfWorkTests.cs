using System.Text;
using Microsoft.Extensions.Time.Testing;
using Patterns.Storage;
using Patterns.Testing;

namespace Patterns.Postgres.Tests;

/// <summary>
/// Units of work on PostgreSQL beyond the conformance suite: group commit of units (held behind a row lock so the
/// queue is known before the group runs), and the guarantees that must hold between store instances, as between
/// processes: one inbox claim wins, one lease owner wins, outbox commits wake waiters through NOTIFY.
/// </summary>
public sealed class UnitOfWorkTests : PostgresTestBase
{
    private static OutboxMessage Message(string body) => new("q", OutboxMessageKind.Send, Encoding.UTF8.GetBytes(body));

    [Fact]
    public async Task CommitAsync_UnitsQueuedBehindARunningUnit_CommitInOneTransactionEachWithItsOwnOutcome()
    {
        var store = CreateSut();
        await store.AppendAsync("blocker", ExpectedVersion.NoStream, [TestEvents.One()]);
        var existing = TestEvents.Many(2);
        var original = await store.AppendAsync("existing", ExpectedVersion.NoStream, existing);
        (await store.TryMarkHandledAsync("handler", "handled-before")).Should().BeTrue();
        var stale = await store.TryAcquireLeaseAsync("relay", "process-a", TimeSpan.FromMinutes(1));
        await store.ReleaseLeaseAsync(stale!);
        (await store.TryAcquireLeaseAsync("relay", "process-b", TimeSpan.FromMinutes(1))).Should().NotBeNull();
        var head = await store.GetHeadPositionAsync();

        await using var blocking = await HoldStreamRowAsync("blocker");
        var leader = Commit(store, new UnitOfWork().Append("blocker", ExpectedVersion.Any, [TestEvents.One()]));
        var ok1 = Commit(store, new UnitOfWork().Append("ok-1", ExpectedVersion.NoStream, TestEvents.Many(2)).Enqueue(Message("ok-1")).SaveCheckpoint("cp", 7));
        var wrongVersion = Commit(store, Doomed("wrong-version").Append("existing", ExpectedVersion.Exact(5), [TestEvents.One()]));
        var handledBefore = Commit(store, Doomed("handled-before").ClaimInbox("handler", "handled-before"));
        var checkpointMoved = Commit(store, Doomed("checkpoint-moved").SaveCheckpoint("cp", 9, expectedPosition: 3));
        var leaseLost = Commit(store, Doomed("lease-lost").RequireLease(stale!));
        var ok2 = Commit(store, new UnitOfWork().ClaimInbox("handler", "m-2").Upsert("docs", "ok-2", Encoding.UTF8.GetBytes("{}")).Enqueue(Message("ok-2")));
        var claimedInGroup = Commit(store, Doomed("claimed-in-group").ClaimInbox("handler", "m-2"));
        var retry = Commit(store, new UnitOfWork().Append("existing", ExpectedVersion.NoStream, existing).Append("ok-3", ExpectedVersion.NoStream, [TestEvents.One()]));
        using var cancel = new CancellationTokenSource();
        var cancelled = store.CommitAsync(Doomed("cancelled"), cancel.Token).AsTask();

        store.QueuedUnits.Should().Be(9, "every unit after the running one waits for the next group");
        await cancel.CancelAsync();
        store.QueuedUnits.Should().Be(8, "a cancelled unit leaves the queue before its group runs");
        await blocking.CommitAsync();

        (await leader.WaitAsync(PostgresDatabase.Wait)).Appends[0].FirstPosition.Should().Be(head + 1);
        var ok1Result = await ok1.WaitAsync(PostgresDatabase.Wait);
        ok1Result.Appends[0].Should().Be(new AppendResult("ok-1", 2, head + 2, head + 3));
        (await wrongVersion.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<WrongExpectedVersionException>()).Which.Actual.Should().Be(2);
        (await handledBefore.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<DuplicateMessageException>()).Which.MessageId.Should().Be("handled-before");
        (await checkpointMoved.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<CheckpointConflictException>()).Which.Actual.Should().Be(7, "the unit before it in the group moved it");
        (await leaseLost.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<LeaseLostException>()).Which.CurrentOwner.Should().Be("process-b");
        var ok2Result = await ok2.WaitAsync(PostgresDatabase.Wait);
        (await claimedInGroup.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<DuplicateMessageException>()).Which.MessageId.Should().Be("m-2");
        var retryResult = await retry.WaitAsync(PostgresDatabase.Wait);
        retryResult.Appends[0].Should().Be(original, "an exact retry returns the original result and the rest of the unit commits");
        retryResult.Appends[1].FirstPosition.Should().Be(head + 4);
        await cancelled.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<OperationCanceledException>();

        store.UnitTransactions.Should().Be(2, "the leader committed alone, and the four units that committed after it shared one transaction");
        store.UnitGroups.Should().Be(1);
        var log = await store.ReadAllAsync(head).ToListAsync();
        log.Select(e => e.Position).Should().Equal(Enumerable.Range(1, 4).Select(i => head + i), "failed units leave no holes in the positions");
        log.Select(e => e.StreamId).Should().Equal("blocker", "ok-1", "ok-1", "ok-3");
        var outbox = await store.ReadOutboxAsync(0, 10);
        outbox.Select(m => Encoding.UTF8.GetString(m.Message.Payload.Span)).Should().Equal("ok-1", "ok-2");
        ok2Result.LastOutboxSequence.Should().Be(outbox[1].Sequence).And.BeGreaterThan(ok1Result.LastOutboxSequence);
        (await ((ICheckpointStore)store).LoadAsync("cp")).Should().Be(7);
        (await store.GetAsync("docs", "ok-2")).Should().NotBeNull();
        foreach (var doomed in new[] { "wrong-version", "handled-before", "checkpoint-moved", "lease-lost", "claimed-in-group", "cancelled" })
        {
            (await store.GetAsync("docs", doomed)).Should().BeNull($"unit '{doomed}' did not commit");
        }
    }

    /// <summary>
    /// A unit with many appends (a group of workflow tasks) appends them in one statement: in the order they were added
    /// (not sorted by stream), with the versions and positions each would have had alone; a conflict in any of them
    /// stores nothing of the unit and leaves no hole in the positions.
    /// </summary>
    [Fact]
    public async Task CommitAsync_UnitAppendingToManyStreams_AppendsInTheOrderAdded_AndAConflictStoresNothing()
    {
        var store = CreateSut();
        await store.AppendAsync("m-existing", ExpectedVersion.NoStream, TestEvents.Many(2));
        var head = await store.GetHeadPositionAsync();
        string[] names = ["m-z", "m-existing", "m-a", "m-q"];
        var work = new UnitOfWork().Upsert("docs", "many", Encoding.UTF8.GetBytes("{}"));
        foreach (var name in names)
        {
            work.Append(name, name == "m-existing" ? ExpectedVersion.Exact(2) : ExpectedVersion.NoStream, TestEvents.Many(2));
        }

        var result = await store.CommitAsync(work);

        result.Appends.Should().Equal(
            new AppendResult("m-z", 2, head + 1, head + 2),
            new AppendResult("m-existing", 4, head + 3, head + 4),
            new AppendResult("m-a", 2, head + 5, head + 6),
            new AppendResult("m-q", 2, head + 7, head + 8));
        (await store.ReadAllAsync(head).ToListAsync()).Select(e => (e.StreamId, e.Version)).Should().Equal(
            ("m-z", 1), ("m-z", 2), ("m-existing", 3), ("m-existing", 4), ("m-a", 1), ("m-a", 2), ("m-q", 1), ("m-q", 2));

        var conflicting = new UnitOfWork().Upsert("docs", "conflict", Encoding.UTF8.GetBytes("{}"))
            .Append("m-new-1", ExpectedVersion.NoStream, [TestEvents.One()])
            .Append("m-a", ExpectedVersion.Exact(1), [TestEvents.One()])
            .Append("m-new-2", ExpectedVersion.NoStream, [TestEvents.One()]);
        var act = () => store.CommitAsync(conflicting).AsTask();

        (await act.Should().ThrowAsync<WrongExpectedVersionException>()).Which.Actual.Should().Be(2);
        (await store.GetStreamStateAsync("m-new-1")).Version.Should().Be(0);
        (await store.GetStreamStateAsync("m-new-2")).Version.Should().Be(0);
        (await store.GetAsync("docs", "conflict")).Should().BeNull();
        (await store.AppendAsync("m-after", ExpectedVersion.NoStream, [TestEvents.One()])).FirstPosition.Should().Be(head + 9, "the refused unit took no position");
    }

    /// <summary>
    /// A unit's document changes go as one upsert and one delete statement: a document changed more than once ends as its
    /// last change left it, as applying them one by one would; an exact retry of an append in the same unit still resolves.
    /// </summary>
    [Fact]
    public async Task CommitAsync_UnitChangingDocumentsSeveralTimes_LeavesEachAsItsLastChange()
    {
        var store = CreateSut();
        static byte[] Doc(string text) => Encoding.UTF8.GetBytes($"{{\"v\":\"{text}\"}}");
        await store.CommitAsync(new UnitOfWork().Upsert("docs", "kept", Doc("old")).Upsert("docs", "removed", Doc("old")).Upsert("docs", "back", Doc("old")));
        var events = TestEvents.Many(2);
        var original = await store.AppendAsync("d-existing", ExpectedVersion.NoStream, events);
        var lease = await store.TryAcquireLeaseAsync("d-owner", "process-a", TimeSpan.FromMinutes(1));

        var result = await store.CommitAsync(new UnitOfWork()
            .RequireLease(lease!)
            .Upsert("docs", "kept", Doc("first"))
            .Delete("docs", "removed")
            .Upsert("docs", "kept", Doc("second"))
            .Delete("docs", "back")
            .Upsert("docs", "back", Doc("again"))
            .Upsert("docs", "fleeting", Doc("never"))
            .Delete("docs", "fleeting")
            .Upsert("other", "kept", Doc("other"))
            .Append("d-existing", ExpectedVersion.NoStream, events));

        result.Appends[0].Should().Be(original, "the exact retry is resolved after the documents and the savepoint ran in one batch");
        Encoding.UTF8.GetString((await store.GetAsync("docs", "kept"))!).Should().Be("{\"v\":\"second\"}");
        (await store.GetAsync("docs", "removed")).Should().BeNull();
        Encoding.UTF8.GetString((await store.GetAsync("docs", "back"))!).Should().Be("{\"v\":\"again\"}");
        (await store.GetAsync("docs", "fleeting")).Should().BeNull();
        Encoding.UTF8.GetString((await store.GetAsync("other", "kept"))!).Should().Be("{\"v\":\"other\"}");
    }

    /// <summary>
    /// A unit without inbox claims sends its fences, checkpoints, documents and appends (to distinct streams, in one
    /// <c>commit_units</c> call) as one batch: a stale fence, a moved checkpoint and a refused append each still fail the
    /// whole unit with their own exception and store nothing of it, and the unit that holds commits its appends in order.
    /// </summary>
    [Fact]
    public async Task CommitAsync_FenceCheckpointDocumentAndAppendsInOneBatch_AFailingPartCommitsNothing()
    {
        var store = CreateSut();
        await store.AppendAsync("b-taken", ExpectedVersion.NoStream, [TestEvents.One()]);
        var stale = await store.TryAcquireLeaseAsync("b-owner", "process-a", TimeSpan.FromMinutes(1));
        await store.ReleaseLeaseAsync(stale!);
        var current = await store.TryAcquireLeaseAsync("b-owner", "process-b", TimeSpan.FromMinutes(1));
        var head = await store.GetHeadPositionAsync();
        UnitOfWork Unit(Lease fence, long takenAt, long checkpointAt) => new UnitOfWork()
            .RequireLease(fence)
            .SaveCheckpoint("b-proj", 5, checkpointAt)
            .Upsert("docs", "b-doc", Encoding.UTF8.GetBytes("{}"))
            .Append("b-fresh", ExpectedVersion.NoStream, TestEvents.Many(2))
            .Append("b-taken", ExpectedVersion.Exact(takenAt), [TestEvents.One()]);

        await store.Invoking(s => s.CommitAsync(Unit(stale!, 1, 0)).AsTask()).Should().ThrowAsync<LeaseLostException>();
        await store.Invoking(s => s.CommitAsync(Unit(current!, 1, 3)).AsTask()).Should().ThrowAsync<CheckpointConflictException>();
        (await store.Invoking(s => s.CommitAsync(Unit(current!, 7, 0)).AsTask()).Should().ThrowAsync<WrongExpectedVersionException>()).Which.StreamId.Should().Be("b-taken");
        (await store.GetAsync("docs", "b-doc")).Should().BeNull();
        (await ((ICheckpointStore)store).LoadAsync("b-proj")).Should().BeNull();
        (await store.ReadAllAsync(head).ToListAsync()).Should().BeEmpty();

        var result = await store.CommitAsync(Unit(current!, 1, 0));

        result.Appends.Select(a => (a.StreamId, a.Version, a.FirstPosition, a.LastPosition)).Should().Equal(("b-fresh", 2L, head + 1, head + 2), ("b-taken", 2L, head + 3, head + 3));
        (await store.GetAsync("docs", "b-doc")).Should().NotBeNull();
        (await ((ICheckpointStore)store).LoadAsync("b-proj")).Should().Be(5);
    }

    /// <summary>
    /// Stream rows are taken in stream id order, a missing one created where it comes in that order, as
    /// <c>append_events</c> and <c>append_group</c> take them: a unit that waits for the row of a stream ("o-a") must not
    /// already hold a stream it creates that sorts after it ("o-b"), or an append to "o-b" in another process waits for
    /// the unit, and a group of appends that holds "o-a" and then creates "o-b" deadlocks with it.
    /// </summary>
    [Fact]
    public async Task CommitAsync_UnitWaitsForAStreamRow_HoldsNoStreamItCreatesThatSortsAfter()
    {
        var store = CreateSut();
        await store.AppendAsync("o-a", ExpectedVersion.NoStream, [TestEvents.One()]);
        await using var holder = await HoldStreamRowAsync("o-a");
        var unit = Commit(store, new UnitOfWork()
            .Upsert("docs", "o", Encoding.UTF8.GetBytes("{}"))
            .Append("o-a", ExpectedVersion.Exact(1), [TestEvents.One()])
            .Append("o-b", ExpectedVersion.NoStream, [TestEvents.One()]));
        await WaitForLockWaitAsync(holder);

        var otherProcess = CreateSut();
        var appended = await otherProcess.AppendAsync("o-b", ExpectedVersion.NoStream, [TestEvents.One()]).AsTask().WaitAsync(PostgresDatabase.Wait);

        appended.Version.Should().Be(1, "the waiting unit holds no row of o-b");
        await holder.CommitAsync();
        (await unit.Awaiting(u => u).Should().ThrowAsync<WrongExpectedVersionException>()).Which.StreamId.Should().Be("o-b");
        (await store.GetAsync("docs", "o")).Should().BeNull();
    }

    /// <summary>
    /// Units with several document changes in one group: a unit that fails on a conflict rolls back its own upserts and
    /// deletes (to its savepoint) and keeps those of the units before and after it in the group.
    /// </summary>
    [Fact]
    public async Task CommitAsync_ConflictingUnitWithDocumentsInAGroup_RollsBackItsOwnAndKeepsTheOthers()
    {
        var store = CreateSut();
        static byte[] Doc(string text) => Encoding.UTF8.GetBytes($"{{\"v\":\"{text}\"}}");
        await store.AppendAsync("g-blocker", ExpectedVersion.NoStream, [TestEvents.One()]);
        await store.AppendAsync("g-existing", ExpectedVersion.NoStream, [TestEvents.One()]);
        await store.CommitAsync(new UnitOfWork().Upsert("docs", "before-kept", Doc("old")).Upsert("docs", "doomed-kept", Doc("old")).Upsert("docs", "after-gone", Doc("old")));

        await using var blocking = await HoldStreamRowAsync("g-blocker");
        var leader = Commit(store, new UnitOfWork().Append("g-blocker", ExpectedVersion.Any, [TestEvents.One()]));
        var before = Commit(store, new UnitOfWork().Upsert("docs", "before-kept", Doc("before")).Upsert("docs", "before-new", Doc("before")).Delete("docs", "after-gone"));
        var doomed = Commit(store, new UnitOfWork()
            .Upsert("docs", "doomed-new", Doc("doomed"))
            .Upsert("docs", "before-new", Doc("doomed"))
            .Delete("docs", "doomed-kept")
            .Append("g-existing", ExpectedVersion.Exact(5), [TestEvents.One()]));
        var after = Commit(store, new UnitOfWork().Upsert("docs", "after-new", Doc("after")).Upsert("docs", "after-gone", Doc("after")));
        store.QueuedUnits.Should().Be(3);
        await blocking.CommitAsync();

        await leader.WaitAsync(PostgresDatabase.Wait);
        await before.WaitAsync(PostgresDatabase.Wait);
        await doomed.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<WrongExpectedVersionException>();
        await after.WaitAsync(PostgresDatabase.Wait);

        store.UnitGroups.Should().Be(1);
        async Task<string?> Read(string id) => await store.GetAsync("docs", id) is { } bytes ? Encoding.UTF8.GetString(bytes) : null;
        (await Read("before-kept")).Should().Be("{\"v\":\"before\"}");
        (await Read("before-new")).Should().Be("{\"v\":\"before\"}", "the failed unit's upsert of it was rolled back");
        (await Read("doomed-new")).Should().BeNull();
        (await Read("doomed-kept")).Should().Be("{\"v\":\"old\"}", "the failed unit's delete was rolled back");
        (await Read("after-new")).Should().Be("{\"v\":\"after\"}");
        (await Read("after-gone")).Should().Be("{\"v\":\"after\"}", "deleted by the unit before, stored again by the unit after");
    }

    [Fact]
    public async Task CommitAsync_HundredUnitsNeedingSavepointsQueued_CommitInTransactionsOfAtMost32InQueueOrder()
    {
        // One transaction for a whole queue of such units overflowed PostgreSQL's subtransaction cache and updated the
        // log head once per unit: 10,000 queued workflow starts ran for minutes in one transaction.
        const int Units = 100;
        var store = CreateSut();
        await store.AppendAsync("blocker", ExpectedVersion.NoStream, [TestEvents.One()]);
        var head = await store.GetHeadPositionAsync();

        await using var blocking = await HoldStreamRowAsync("blocker");
        var leader = Commit(store, new UnitOfWork().Append("blocker", ExpectedVersion.Any, [TestEvents.One()]));
        var queued = Enumerable.Range(0, Units)
            .Select(i => Commit(store, new UnitOfWork()
                .Upsert("docs", "unit-" + i, Encoding.UTF8.GetBytes("{}"))
                .Append("unit-" + i, ExpectedVersion.NoStream, [TestEvents.One()])))
            .ToArray();
        store.QueuedUnits.Should().Be(Units);
        await blocking.CommitAsync();

        await leader.WaitAsync(PostgresDatabase.Wait);
        var results = await Task.WhenAll(queued).WaitAsync(PostgresDatabase.Wait);

        store.UnitTransactions.Should().Be(1 + 4, "the leader alone, then the 100 queued units in transactions of 32, 32, 32 and 4");
        results.Select(r => r.Appends[0].FirstPosition).Should().Equal(Enumerable.Range(2, Units).Select(i => head + i), "the units commit in the order they were queued");
        (await store.GetAsync("docs", "unit-99")).Should().NotBeNull();
    }

    [Fact]
    public async Task CommitAsync_AppendClaimAndSendUnitsQueuedTogether_CommitInOneStatementEachWithItsOwnOutcome()
    {
        var store = CreateSut();
        await store.AppendAsync("blocker", ExpectedVersion.NoStream, [TestEvents.One()]);
        var existing = TestEvents.Many(2);
        var original = await store.AppendAsync("existing", ExpectedVersion.NoStream, existing);
        (await store.TryMarkHandledAsync("handler", "handled-before")).Should().BeTrue();
        var head = await store.GetHeadPositionAsync();

        await using var blocking = await HoldStreamRowAsync("blocker");
        var leader = Commit(store, new UnitOfWork().Append("blocker", ExpectedVersion.Any, [TestEvents.One()]));
        var ok1 = Commit(store, new UnitOfWork().ClaimInbox("handler", "m-1").Append("ok-1", ExpectedVersion.NoStream, TestEvents.Many(2)).Enqueue(Message("ok-1")));
        var wrongVersion = Commit(store, new UnitOfWork().ClaimInbox("handler", "m-wrong").Append("existing", ExpectedVersion.Exact(5), [TestEvents.One()]).Enqueue(Message("wrong")));
        var handledBefore = Commit(store, new UnitOfWork().ClaimInbox("handler", "handled-before").Append("stream-hb", ExpectedVersion.Any, [TestEvents.One()]).Enqueue(Message("hb")));
        var ok2 = Commit(store, new UnitOfWork().Enqueue(Message("ok-2")));
        var claimedInGroup = Commit(store, new UnitOfWork().ClaimInbox("handler", "m-1").Enqueue(Message("dup")));
        var retry = Commit(store, new UnitOfWork().Append("existing", ExpectedVersion.NoStream, existing).Enqueue(Message("retry")));
        var ok1Next = Commit(store, new UnitOfWork().Append("ok-1", ExpectedVersion.Exact(2), [TestEvents.One()]).Enqueue(Message("ok-1b")));
        store.QueuedUnits.Should().Be(7);
        await blocking.CommitAsync();

        (await leader.WaitAsync(PostgresDatabase.Wait)).Appends[0].FirstPosition.Should().Be(head + 1);
        (await ok1.WaitAsync(PostgresDatabase.Wait)).Appends[0].Should().Be(new AppendResult("ok-1", 2, head + 2, head + 3));
        (await ok1Next.WaitAsync(PostgresDatabase.Wait)).Appends[0].Should().Be(new AppendResult("ok-1", 3, head + 4, head + 4), "a later unit of the group sees the earlier unit's append");
        (await wrongVersion.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<WrongExpectedVersionException>()).Which.Actual.Should().Be(2);
        (await handledBefore.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<DuplicateMessageException>()).Which.MessageId.Should().Be("handled-before");
        (await claimedInGroup.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<DuplicateMessageException>()).Which.MessageId.Should().Be("m-1");
        (await ok2.WaitAsync(PostgresDatabase.Wait)).Appends.Should().BeEmpty();
        (await retry.WaitAsync(PostgresDatabase.Wait)).Appends[0].Should().Be(original, "an exact retry returns the original result");

        store.UnitTransactions.Should().Be(3, "the leader alone, the group in one statement, and the exact retry again on its own");
        store.UnitGroups.Should().Be(1);
        var log = await store.ReadAllAsync(head).ToListAsync();
        log.Select(e => e.Position).Should().Equal(Enumerable.Range(1, 4).Select(i => head + i), "refused units leave no holes in the positions");
        log.Select(e => e.StreamId).Should().Equal("blocker", "ok-1", "ok-1", "ok-1");
        (await store.ReadStreamAsync("stream-hb").ToListAsync()).Should().BeEmpty();
        var outbox = (await store.ReadOutboxAsync(0, 20)).Select(m => Encoding.UTF8.GetString(m.Message.Payload.Span)).ToList();
        outbox.Should().BeEquivalentTo(["ok-1", "ok-1b", "ok-2", "retry"]);
        outbox.IndexOf("ok-1").Should().BeLessThan(outbox.IndexOf("ok-1b"));
        (await store.TryMarkHandledAsync("handler", "m-wrong")).Should().BeTrue("the refused unit gave its claim back");
        (await store.TryMarkHandledAsync("handler", "m-1")).Should().BeFalse();
    }

    [Fact]
    public async Task CommitAsync_UnitInAGroupDeadlocksWithAnotherTransaction_EveryoneStillCommits()
    {
        var store = CreateSut();
        await store.AppendAsync("blocker", ExpectedVersion.NoStream, [TestEvents.One()]);
        await store.AppendAsync("x", ExpectedVersion.NoStream, [TestEvents.One()]);
        var head = await store.GetHeadPositionAsync();

        await using var blocking = await HoldStreamRowAsync("blocker");
        var leader = Commit(store, new UnitOfWork().Append("blocker", ExpectedVersion.Any, [TestEvents.One()]));
        var enqueuing = Commit(store, new UnitOfWork().Enqueue(Message("first")));
        var appending = Commit(store, new UnitOfWork().Upsert("docs", "appending", Encoding.UTF8.GetBytes("{}")).Append("x", ExpectedVersion.Any, [TestEvents.One()]));
        store.QueuedUnits.Should().Be(2);

        // Another transaction locks stream x as an append would, then wants the position lock, which the group holds
        // (the first unit enqueued) while its second unit waits for x: a deadlock that PostgreSQL breaks.
        await using var other = await HoldStreamRowAsync("x");
        await blocking.CommitAsync();
        await WaitForLockWaitAsync(other);
        var otherWantsPositions = other.ExecuteAsync($"UPDATE \"{SchemaName}\".log_head SET position = position");

        await leader.WaitAsync(PostgresDatabase.Wait);
        (await enqueuing.WaitAsync(PostgresDatabase.Wait)).LastOutboxSequence.Should().BeGreaterThan(0);
        var otherAborted = false;
        try
        {
            await otherWantsPositions.WaitAsync(PostgresDatabase.Wait);
            await other.CommitAsync();
        }
        catch (Npgsql.PostgresException ex) when (ex.SqlState == Npgsql.PostgresErrorCodes.DeadlockDetected)
        {
            otherAborted = true; // PostgreSQL chose the other transaction; disposing it rolls it back.
        }

        (await appending.WaitAsync(PostgresDatabase.Wait)).Appends[0].Version.Should().Be(2);
        store.UnitTransactions.Should().Be(otherAborted ? 2 : 3, "when PostgreSQL aborts the unit, it runs again alone after its group");
        (await store.GetAsync("docs", "appending")).Should().NotBeNull();
        (await store.ReadAllAsync(head).ToListAsync()).Select(e => e.Position).Should().Equal(head + 1, head + 2);
    }

    [Fact]
    public async Task CommitAsync_OneMessageClaimedThroughTwoInstances_CommitsOnce()
    {
        var stores = new[] { CreateSut(), CreateSut() };
        await stores[0].MigrateAsync();

        var outcomes = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => Task.Run(async () =>
        {
            try
            {
                await stores[i % 2].CommitAsync(new UnitOfWork().ClaimInbox("handler", "same-id").Append("effects", ExpectedVersion.Any, [TestEvents.One()]));
                return true;
            }
            catch (DuplicateMessageException)
            {
                return false;
            }
        }))).WaitAsync(PostgresDatabase.Wait);

        outcomes.Count(ok => ok).Should().Be(1);
        (await stores[0].ReadStreamAsync("effects").ToListAsync()).Should().ContainSingle();
    }

    [Fact]
    public async Task TryAcquireLeaseAsync_RacingInstances_OneOwnerWins()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var stores = Enumerable.Range(0, 4).Select(_ => CreateSut(time: time)).ToArray();
        await stores[0].MigrateAsync();

        var leases = await Task.WhenAll(stores.Select((store, i) => Task.Run(() => store.TryAcquireLeaseAsync("relay", $"process-{i}", TimeSpan.FromSeconds(30)).AsTask())))
            .WaitAsync(PostgresDatabase.Wait);

        leases.Should().ContainSingle(l => l != null).Which!.Token.Should().Be(1);
        fake.Advance(TimeSpan.FromSeconds(31));
        var next = await stores[3].TryAcquireLeaseAsync("relay", "process-late", TimeSpan.FromSeconds(30));
        next!.Token.Should().Be(2, "the expired lease is taken over with the next token");
    }

    [Fact]
    public async Task WaitForLeaseAsync_LeaseReleasedByAnotherInstance_WakesTheStandbyThroughNotify()
    {
        var owner = CreateSut();
        await owner.MigrateAsync();
        var time = new TimerTracker(new FakeTimeProvider(DateTimeOffset.UtcNow));
        var standby = CreateSut(time: time);
        var listening = standby.Listener.NextConnection;
        var lease = await owner.TryAcquireLeaseAsync("relay", "process-a", TimeSpan.FromMinutes(1));

        var wait = standby.WaitForLeaseAsync("relay", TimeSpan.FromMinutes(5)).AsTask();
        await listening.WaitAsync(PostgresDatabase.Wait);
        await time.WaitForPendingTimersAsync().WaitAsync(PostgresDatabase.Wait);
        wait.IsCompleted.Should().BeFalse("the lease is held and the clock has not moved");
        await owner.ReleaseLeaseAsync(lease!);

        await wait.WaitAsync(PostgresDatabase.Wait);
        (await standby.TryAcquireLeaseAsync("relay", "process-b", TimeSpan.FromMinutes(1)))!.Token.Should().Be(2);
    }

    [Fact]
    public async Task WaitForLeaseAsync_HolderNeverReleases_EndsWhenItsLeaseExpires()
    {
        var fake = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var time = new TimerTracker(fake);
        var store = CreateSut(o => o.Notifications = false, time);
        await store.MigrateAsync();
        await store.TryAcquireLeaseAsync("relay", "process-a", TimeSpan.FromSeconds(10));

        var wait = store.WaitForLeaseAsync("relay", TimeSpan.FromMinutes(5)).AsTask();
        await time.WaitForPendingTimersAsync().WaitAsync(PostgresDatabase.Wait);
        fake.Advance(TimeSpan.FromSeconds(9));
        wait.IsCompleted.Should().BeFalse("the holder's lease runs for another second");
        fake.Advance(TimeSpan.FromSeconds(1));

        await wait.WaitAsync(PostgresDatabase.Wait);
        (await store.TryAcquireLeaseAsync("relay", "process-b", TimeSpan.FromSeconds(10))).Should().NotBeNull();
        await store.WaitForLeaseAsync("missing", TimeSpan.FromMinutes(5)).AsTask().WaitAsync(PostgresDatabase.Wait); // a lease nobody holds is free at once
    }

    [Fact]
    public async Task WaitForOutboxAsync_UnitCommittedByAnotherInstance_WakesTheWaiterThroughNotify()
    {
        var writer = CreateSut();
        await writer.MigrateAsync();
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var waiter = CreateSut(o => o.PollInterval = TimeSpan.FromMinutes(5), time);
        var listening = waiter.Listener.NextConnection;

        var wait = waiter.WaitForOutboxAsync(0, CancellationToken.None).AsTask();
        await listening.WaitAsync(PostgresDatabase.Wait);
        wait.IsCompleted.Should().BeFalse("nothing was enqueued and the clock has not moved");
        var committed = await writer.CommitAsync(new UnitOfWork().Enqueue(Message("a")));

        await wait.WaitAsync(PostgresDatabase.Wait);
        waiter.Listener.Outbox.Known.Should().Be(committed.LastOutboxSequence, "the notification carries the last sequence number");
        waiter.Listener.KnownHead.Should().Be(0, "outbox notifications do not move the event head");
    }

    [Fact]
    public async Task DeleteOutboxAsync_WithAFence_ChecksTheLeaseInTheSameTransaction()
    {
        var store = CreateSut();
        var lease = await store.TryAcquireLeaseAsync("relay", "process-a", TimeSpan.FromMinutes(1));
        await store.CommitAsync(new UnitOfWork().Enqueue(Message("a")).Enqueue(Message("b")));

        await using (var blocking = await HoldLeaseRowAsync("relay"))
        {
            // The delete waits on the lease row; the transaction holding it then releases the lease.
            var delete = store.DeleteOutboxAsync(long.MaxValue, lease).AsTask();
            await Task.Delay(200);
            delete.IsCompleted.Should().BeFalse();
            await blocking.CommitAsync();
            await delete.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<LeaseLostException>();
        }

        (await store.ReadOutboxAsync(0, 10)).Should().HaveCount(2);
    }

    private static Task<UnitOfWorkResult> Commit(PostgresEventStore store, UnitOfWork work) => store.CommitAsync(work).AsTask();

    /// <summary>A unit that writes a document named after it; the test adds the part that makes it fail.</summary>
    private static UnitOfWork Doomed(string name) =>
        new UnitOfWork().Upsert("docs", name, Encoding.UTF8.GetBytes("{}")).Enqueue(Message(name)).Append($"stream-{name}", ExpectedVersion.Any, [TestEvents.One()]);

    /// <summary>Waits until a transaction waits for a lock that <paramref name="holder"/> holds.</summary>
    private static async Task WaitForLockWaitAsync(RowLock holder)
    {
        var sql = $"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND {holder.ProcessId} = ANY (pg_blocking_pids(pid)) AND pid <> pg_backend_pid()";
        using var timeout = new CancellationTokenSource(PostgresDatabase.Wait);
        while (await PostgresDatabase.ScalarAsync<long>(sql) == 0)
        {
            await Task.Delay(10, timeout.Token);
        }
    }

    /// <summary>Releases a lease from another connection and keeps its row locked until the returned transaction commits.</summary>
    private async Task<RowLock> HoldLeaseRowAsync(string name)
    {
        var connection = await DataSource.OpenConnectionAsync();
        var transaction = await connection.BeginTransactionAsync();
        await using var command = new Npgsql.NpgsqlCommand($"UPDATE \"{SchemaName}\".leases SET owner = NULL WHERE name = $1", connection, transaction);
        command.Parameters.Add(new Npgsql.NpgsqlParameter<string> { TypedValue = name });
        (await command.ExecuteNonQueryAsync()).Should().Be(1);
        return new RowLock(connection, transaction);
    }
}
