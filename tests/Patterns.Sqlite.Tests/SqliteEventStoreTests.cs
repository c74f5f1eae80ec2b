using System.Text;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Time.Testing;
using Patterns.Conformance;
using Patterns.Storage;
using Patterns.Testing;

namespace Patterns.Sqlite.Tests;

/// <summary>What is particular to the SQLite store: group commit, the file on disk, the schema, options and errors.</summary>
public sealed class SqliteEventStoreTests : IAsyncLifetime
{
    private readonly TempDatabase _db = new();

    private static CancellationToken Timeout => TestContext.Current.CancellationToken;

    public ValueTask InitializeAsync() => default;

    public ValueTask DisposeAsync() => _db.DisposeAsync();

    // ----- Error classification -----------------------------------------------------------------------------

    [Theory]
    [InlineData(5, StorageErrorKind.Transient)] // SQLITE_BUSY
    [InlineData(6, StorageErrorKind.Transient)] // SQLITE_LOCKED
    [InlineData(261, StorageErrorKind.Transient)] // SQLITE_BUSY_RECOVERY
    [InlineData(19, StorageErrorKind.Permanent)] // SQLITE_CONSTRAINT
    [InlineData(13, StorageErrorKind.Transient)] // SQLITE_FULL: the disk may have room later
    [InlineData(14, StorageErrorKind.Transient)] // SQLITE_CANTOPEN
    [InlineData(11, StorageErrorKind.Permanent)] // SQLITE_CORRUPT
    public async Task Classify_SqliteErrors_BusyLockedAndUnavailableAreTransient(int errorCode, StorageErrorKind kind)
    {
        await using var store = new SqliteEventStore(_db.File());

        StorageErrors.Classify(new SqliteException("driver error", errorCode), store).Should().Be(kind);
    }

    // ----- Busy database ------------------------------------------------------------------------------------

    [Fact]
    public async Task AppendAsync_DatabaseLockedByAnotherConnection_RunsAgainAfterABackOffAndCommitsOnceReleased()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var store = _db.Open(o => { o.BusyTimeout = TimeSpan.Zero; o.TimeProvider = time; });
        await store.AppendAsync("opened", ExpectedVersion.NoStream, [NewEvent()], cancellationToken: Timeout);
        using var other = LockDatabase();

        var append = store.AppendAsync("s", ExpectedVersion.NoStream, NewEvents(2), cancellationToken: Timeout).AsTask();
        await Task.WhenAny(append, time.WaitForPendingTimersAsync(1, Timeout));
        append.IsCompleted.Should().BeFalse("the writer waits to run the busy transaction again instead of failing it");
        fake.Advance(SqliteWriter.FirstBusyDelay);
        await time.WaitForPendingTimersAsync(1, Timeout);
        append.IsCompleted.Should().BeFalse("the lock is still held: the second run found it busy too");

        Execute(other, "ROLLBACK");
        fake.Advance(SqliteWriter.FirstBusyDelay * 2);

        (await append.WaitAsync(TempDatabase.Wait, Timeout)).Should().Be(new AppendResult("s", 2, 2, 3));
        (await ToListAsync(store.ReadStreamAsync("s", cancellationToken: Timeout))).Should().HaveCount(2);
    }

    [Fact]
    public async Task CommitAsync_DatabaseLockedLongerThanTheBackOff_FailsWithTheBusyErrorAndStoresNothing()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var store = _db.Open(o => { o.BusyTimeout = TimeSpan.Zero; o.TimeProvider = time; });
        await store.AppendAsync("opened", ExpectedVersion.NoStream, [NewEvent()], cancellationToken: Timeout);
        using var other = LockDatabase();
        var start = time.GetUtcNow();

        var commit = store.CommitAsync(new UnitOfWork().Append("s", ExpectedVersion.NoStream, [NewEvent()]).Enqueue(new OutboxMessage("q", OutboxMessageKind.Send, new byte[] { 1 })), Timeout).AsTask();
        // Each back-off is a timer of the store's clock; moving it on runs the transaction again (maybe several times
        // in one move, as the delays are short), until the attempts run out.
        while (!commit.IsCompleted)
        {
            await Task.WhenAny(commit, time.WaitForPendingTimersAsync(1, Timeout));
            fake.Advance(SqliteWriter.MaxBusyDelay);
        }

        var error = (await commit.Invoking(t => t.WaitAsync(TempDatabase.Wait, Timeout)).Should().ThrowAsync<SqliteException>()).Which;
        error.SqliteErrorCode.Should().Be(5, "SQLITE_BUSY");
        (time.GetUtcNow() - start).Should().BeGreaterThanOrEqualTo(TimeSpan.FromMilliseconds(20 + 40 + 80 + 160 + 320 + 640 + 1000), "it ran 8 times, waiting 20 ms doubling up to 1 s in between");
        StorageErrors.Classify(error, store).Should().Be(StorageErrorKind.Transient);
        Execute(other, "ROLLBACK");
        (await store.ReadOutboxAsync(0, 10, Timeout)).Should().BeEmpty();
        (await store.GetHeadPositionAsync(Timeout)).Should().Be(1);
    }

    /// <summary>Opens a second connection to the store's file and takes SQLite's write lock on it (BEGIN IMMEDIATE).</summary>
    private SqliteConnection LockDatabase()
    {
        var connection = new SqliteConnection($"Data Source={_db.File()};Pooling=False");
        connection.Open();
        Execute(connection, "BEGIN IMMEDIATE");
        return connection;
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    // ----- Group commit -------------------------------------------------------------------------------------

    [Fact]
    public async Task AppendAsync_FifteenAppendsQueuedBehindAnOpenTransaction_ShareTheNextCommit()
    {
        var store = _db.Open();
        var (blocker, release) = await StartBlockingAppendAsync(store);
        var before = store.CommitCount;

        var queued = Enumerable.Range(0, 15)
            .Select(i => store.AppendAsync($"queued-{i}", ExpectedVersion.NoStream, [NewEvent()], null, Timeout).AsTask())
            .ToArray();
        release.SetResult();
        await blocker.WaitAsync(TempDatabase.Wait, Timeout);
        var results = await Task.WhenAll(queued).WaitAsync(TempDatabase.Wait, Timeout);

        (store.CommitCount - before).Should().Be(2, "the blocked append commits alone, then the 15 queued behind it commit together");
        results.Select(r => r.FirstPosition).Should().Equal(Enumerable.Range(2, 15).Select(i => (long)i), "positions follow queue order");
        (await store.GetHeadPositionAsync(Timeout)).Should().Be(16);
    }

    [Fact]
    public async Task Metrics_GroupCommit_RecordsWritesPerCommitAndCommitDuration()
    {
        var writes = new System.Collections.Concurrent.ConcurrentBag<int>();
        var durations = new System.Collections.Concurrent.ConcurrentBag<double>();
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == SqliteDiagnostics.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<int>((instrument, value, _, _) =>
        {
            if (instrument.Name == "patterns.sqlite.commit.writes")
            {
                writes.Add(value);
            }
        });
        listener.SetMeasurementEventCallback<double>((instrument, value, _, _) =>
        {
            if (instrument.Name == "patterns.sqlite.commit.duration")
            {
                durations.Add(value);
            }
        });
        listener.Start();
        var store = _db.Open();
        var (blocker, release) = await StartBlockingAppendAsync(store);

        var queued = Enumerable.Range(0, 15).Select(i => store.AppendAsync($"q-{i}", ExpectedVersion.NoStream, [NewEvent()], null, Timeout).AsTask()).ToArray();
        release.SetResult();
        await Task.WhenAll(queued.Append(blocker)).WaitAsync(TempDatabase.Wait, Timeout);

        writes.Should().Contain(15, "the 15 queued appends were committed as one group");
        durations.Should().NotBeEmpty().And.OnlyContain(d => d > 0);
    }

    [Fact]
    public async Task AppendAsync_SixteenConcurrentAppenders_CommitFewerTransactionsThanAppends()
    {
        const int writers = 16;
        const int perWriter = 40;
        var store = _db.Open();
        await store.MigrateAsync(Timeout);
        var before = store.CommitCount;

        // One thread per appender, so that they are concurrent however busy the thread pool is (a lone appender commits
        // on its own thread, so tasks that the pool happened to run one after another would never overlap).
        using var start = new Barrier(writers);
        await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Factory.StartNew(() =>
        {
            start.SignalAndWait(TempDatabase.Wait, Timeout);
            for (var i = 0; i < perWriter; i++)
            {
                store.AppendAsync($"writer-{w}", ExpectedVersion.Exact(i), [NewEvent()], null, Timeout).AsTask().Wait(Timeout);
            }
        }, Timeout, TaskCreationOptions.LongRunning, TaskScheduler.Default))).WaitAsync(TempDatabase.Wait, Timeout);

        var commits = store.CommitCount - before;
        commits.Should().BeLessThan(writers * perWriter, "appends queued while a commit syncs share the next transaction");
        TestContext.Current.SendDiagnosticMessage($"{writers * perWriter} appends in {commits} commits");
        var log = await ToListAsync(store.ReadAllAsync(0, null, long.MaxValue, Timeout));
        log.Select(e => e.Position).Should().Equal(Enumerable.Range(1, writers * perWriter).Select(i => (long)i));
    }

    [Fact]
    public async Task AppendAsync_ConflictAndFailingProjectionInOneGroup_FailAloneWhileTheOthersCommit()
    {
        var store = _db.Open();
        await store.AppendAsync("existing", ExpectedVersion.NoStream, [NewEvent()], null, Timeout);
        var (blocker, release) = await StartBlockingAppendAsync(store);
        var before = store.CommitCount;

        var ok1 = store.AppendAsync("a", ExpectedVersion.NoStream, NewEvents(2), null, Timeout).AsTask();
        var conflict = store.AppendAsync("existing", ExpectedVersion.NoStream, [NewEvent()], null, Timeout).AsTask();
        var failing = store.AppendAsync("b", ExpectedVersion.NoStream, NewEvents(3), static async (_, documents, ct) =>
        {
            await documents.UpsertAsync("docs", "b", "written"u8.ToArray(), ct);
            throw new InvalidOperationException("projection failed");
        }, Timeout).AsTask();
        var ok2 = store.AppendAsync("c", ExpectedVersion.NoStream, [NewEvent()], null, Timeout).AsTask();
        release.SetResult();
        await blocker.WaitAsync(TempDatabase.Wait, Timeout);

        (await ok1.WaitAsync(TempDatabase.Wait, Timeout)).Should().Be(new AppendResult("a", 2, 3, 4));
        (await FluentActions.Awaiting(() => conflict).Should().ThrowAsync<WrongExpectedVersionException>()).Which.Actual.Should().Be(1);
        await FluentActions.Awaiting(() => failing).Should().ThrowAsync<InvalidOperationException>().WithMessage("projection failed");
        (await ok2.WaitAsync(TempDatabase.Wait, Timeout)).Should().Be(new AppendResult("c", 1, 5, 5), "failed appends leave no gap");
        (store.CommitCount - before).Should().Be(2);
        (await ((IDocumentStorage)store).GetAsync("docs", "b", Timeout)).Should().BeNull("the failing projection's write was rolled back with its append");
        (await store.GetStreamStateAsync("b", Timeout)).Version.Should().Be(0);
        (await ToListAsync(store.ReadAllAsync(0, null, long.MaxValue, Timeout))).Select(e => e.StreamId).Should().Equal("existing", "blocker", "a", "a", "c");
    }

    [Fact]
    public async Task AppendAsync_CancelledWhileQueued_IsNotStored()
    {
        var store = _db.Open();
        var (blocker, release) = await StartBlockingAppendAsync(store);
        using var cancel = new CancellationTokenSource();

        var cancelled = store.AppendAsync("cancelled", ExpectedVersion.NoStream, [NewEvent()], null, cancel.Token).AsTask();
        await cancel.CancelAsync();
        release.SetResult();
        await blocker.WaitAsync(TempDatabase.Wait, Timeout);

        await FluentActions.Awaiting(() => cancelled.WaitAsync(TempDatabase.Wait, Timeout)).Should().ThrowAsync<OperationCanceledException>();
        (await store.GetStreamStateAsync("cancelled", Timeout)).Version.Should().Be(0);
        (await store.GetHeadPositionAsync(Timeout)).Should().Be(1);
    }

    [Fact]
    public async Task InlineProjection_DocumentWriterUsedAfterTheProjection_Throws()
    {
        var store = _db.Open();
        IDocumentWriter? kept = null;
        await store.AppendAsync("a", ExpectedVersion.NoStream, [NewEvent()], (_, documents, _) =>
        {
            kept = documents;
            return ValueTask.CompletedTask;
        }, Timeout);

        var late = async () => await kept!.UpsertAsync("docs", "a", "late"u8.ToArray(), Timeout);

        (await late.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain("only be used while the projection runs");
    }

    // ----- Units of work, the outbox and leases --------------------------------------------------------------

    [Fact]
    public async Task CommitAsync_EightUnitsQueuedBehindAnOpenTransaction_ShareOneCommitAndEachKeepsItsOwnOutcome()
    {
        var store = _db.Open();
        await store.AppendAsync("taken", ExpectedVersion.NoStream, [NewEvent()], null, Timeout);
        await ((IInboxStore)store).TryMarkHandledAsync("handler", "seen", Timeout);
        await store.CommitAsync(new UnitOfWork().SaveCheckpoint("proj", 8), Timeout);
        var lease = (await store.TryAcquireLeaseAsync("proj", "me", TimeSpan.FromMinutes(5), Timeout))!;
        var (blocker, release) = await StartBlockingAppendAsync(store);
        var (commits, writes) = (store.CommitCount, store.CommittedWrites);

        static UnitOfWork Unit(int i) => new UnitOfWork()
            .Append($"unit-{i}", ExpectedVersion.NoStream, NewEvents(2))
            .Upsert("docs", $"d-{i}", "{}"u8.ToArray())
            .Enqueue(new OutboxMessage("q", OutboxMessageKind.Send, Encoding.UTF8.GetBytes($"m-{i}")));
        UnitOfWork[] units =
        [
            Unit(0),
            Unit(1).Append("taken", ExpectedVersion.NoStream, [NewEvent()]),
            Unit(2).ClaimInbox("handler", "seen"), // marked through IInboxStore.TryMarkHandledAsync
            Unit(3).ClaimInbox("handler", "fresh"),
            Unit(4).ClaimInbox("handler", "fresh"), // claimed by unit 3, earlier in the same transaction
            Unit(5).RequireLease(lease with { Owner = "someone-else" }),
            Unit(6).SaveCheckpoint("proj", 9, expectedPosition: 7),
            Unit(7).RequireLease(lease).SaveCheckpoint("proj", 9, expectedPosition: 8),
        ];
        var tasks = units.Select(u => store.CommitAsync(u, Timeout).AsTask()).ToArray();
        release.SetResult();
        await blocker.WaitAsync(TempDatabase.Wait, Timeout);

        (await tasks[0].WaitAsync(TempDatabase.Wait, Timeout)).Appends.Should().Equal(new AppendResult("unit-0", 2, 3, 4));
        (await FluentActions.Awaiting(() => tasks[1]).Should().ThrowAsync<WrongExpectedVersionException>()).Which.StreamId.Should().Be("taken");
        (await FluentActions.Awaiting(() => tasks[2]).Should().ThrowAsync<DuplicateMessageException>()).Which.MessageId.Should().Be("seen");
        (await tasks[3]).Appends.Should().Equal(new AppendResult("unit-3", 2, 5, 6));
        (await FluentActions.Awaiting(() => tasks[4]).Should().ThrowAsync<DuplicateMessageException>()).Which.MessageId.Should().Be("fresh");
        (await FluentActions.Awaiting(() => tasks[5]).Should().ThrowAsync<LeaseLostException>()).Which.CurrentOwner.Should().Be("me");
        (await FluentActions.Awaiting(() => tasks[6]).Should().ThrowAsync<CheckpointConflictException>()).Which.Actual.Should().Be(8);
        (await tasks[7]).Appends.Should().ContainSingle().Which.Should().Be(new AppendResult("unit-7", 2, 7, 8), "failed units leave no gap");
        (store.CommitCount - commits).Should().Be(2, "the blocked append commits alone, then the eight units queued behind it commit together");
        (store.CommittedWrites - writes).Should().Be(9);

        int[] committed = [0, 3, 7];
        var log = await ToListAsync(store.ReadAllAsync(0, null, long.MaxValue, Timeout));
        log.Select(e => e.StreamId).Distinct().Should().Equal(new[] { "taken", "blocker" }.Concat(committed.Select(i => $"unit-{i}")));
        var outbox = await store.ReadOutboxAsync(0, 100, Timeout);
        outbox.Select(m => Encoding.UTF8.GetString(m.Message.Payload.Span)).Should().Equal(committed.Select(i => $"m-{i}"));
        outbox.Select(m => m.Sequence).Should().BeInAscendingOrder().And.OnlyHaveUniqueItems();
        outbox[^1].Sequence.Should().Be((await tasks[7]).LastOutboxSequence);
        for (var i = 0; i < units.Length; i++)
        {
            (await ((IDocumentStorage)store).GetAsync("docs", $"d-{i}", Timeout) is not null).Should().Be(committed.Contains(i), $"unit {i}'s document commits with it or not at all");
        }

        (await ((ICheckpointStore)store).LoadAsync("proj", Timeout)).Should().Be(9);
        (await ((IInboxStore)store).ContainsAsync("handler", "fresh", Timeout)).Should().BeTrue();
    }

    [Fact]
    public async Task Open_FileOfSchemaVersion1_IsMigratedInPlaceAndKeepsItsData()
    {
        var old = _db.Open();
        await old.AppendAsync("a", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);
        await ((ICheckpointStore)old).SaveAsync("proj", 2, Timeout);
        await old.DisposeAsync();

        // What version 1 left in a file: the same tables without the outbox and the leases, and version 1.
        Execute("DROP TABLE patterns_outbox; DROP TABLE patterns_leases; UPDATE patterns_schema SET version = 1");
        var store = _db.Open();
        var result = await store.CommitAsync(new UnitOfWork()
            .Append("a", ExpectedVersion.Exact(2), [NewEvent()])
            .Enqueue(new OutboxMessage("q", OutboxMessageKind.Publish, "m"u8.ToArray())), Timeout);

        Scalar("SELECT version FROM patterns_schema").Should().Be(2);
        result.Appends.Should().Equal(new AppendResult("a", 3, 3, 3));
        (await store.ReadOutboxAsync(0, 10, Timeout)).Should().ContainSingle().Which.Sequence.Should().Be(result.LastOutboxSequence);
        (await ((ICheckpointStore)store).LoadAsync("proj", Timeout)).Should().Be(2);
        (await store.TryAcquireLeaseAsync("relay", "me", TimeSpan.FromSeconds(30), Timeout)).Should().NotBeNull();
    }

    [Fact]
    public async Task WaitForOutboxAsync_CommitByAnotherStoreOnTheFile_IsNoticedByTheChangeCheck()
    {
        // The poll interval is a day: only the check of the file's version can wake the relay.
        var relay = _db.Open(o => o.PollInterval = TimeSpan.FromDays(1));
        var producer = _db.Open();
        await relay.MigrateAsync(Timeout);
        var relayed = Task.Run(async () =>
        {
            while (true)
            {
                if (await relay.ReadOutboxAsync(0, 10, Timeout) is { Count: > 0 } messages)
                {
                    return messages;
                }

                await relay.WaitForOutboxAsync(0, Timeout);
            }
        }, Timeout);

        var result = await producer.CommitAsync(new UnitOfWork().Enqueue(new OutboxMessage("q", OutboxMessageKind.Send, "m"u8.ToArray())), Timeout);

        (await relayed.WaitAsync(TempDatabase.Wait, Timeout)).Should().ContainSingle().Which.Sequence.Should().Be(result.LastOutboxSequence);
        var idle = _db.Open(o => o.PollInterval = TimeSpan.FromDays(1));
        idle.WaitForOutboxAsync(0, Timeout).AsTask().IsCompletedSuccessfully.Should().BeTrue("a message after sequence 0 is already stored");
    }

    [Fact]
    public async Task Lease_TakenOverThroughAnotherStoreOnTheFile_FencesOffTheFirstOwner()
    {
        var fake = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var time = new TimerTracker(fake);
        var first = _db.Open(o => o.TimeProvider = time);
        var second = _db.Open(o => o.TimeProvider = time);
        var held = (await first.TryAcquireLeaseAsync("relay", "process-a", TimeSpan.FromSeconds(30), Timeout))!;
        (await second.TryAcquireLeaseAsync("relay", "process-b", TimeSpan.FromSeconds(30), Timeout)).Should().BeNull();

        fake.Advance(TimeSpan.FromSeconds(31));
        var taken = (await second.TryAcquireLeaseAsync("relay", "process-b", TimeSpan.FromSeconds(30), Timeout))!;
        var commit = async () => await first.CommitAsync(new UnitOfWork().RequireLease(held).SaveCheckpoint("relay", 5), Timeout);

        taken.Token.Should().Be(held.Token + 1);
        Scalar("SELECT expires_at FROM patterns_leases WHERE name = 'relay'").Should().Be(taken.ExpiresAt.UtcTicks);
        (await commit.Should().ThrowAsync<LeaseLostException>()).Which.CurrentOwner.Should().Be("process-b");
        (await ((ICheckpointStore)second).LoadAsync("relay", Timeout)).Should().BeNull();
        (await first.RenewLeaseAsync(held, TimeSpan.FromSeconds(30), Timeout)).Should().BeNull();
    }

    // ----- Durability and the file ---------------------------------------------------------------------------

    [Fact]
    public async Task Open_Database_UsesWalAndSynchronousFull()
    {
        var store = _db.Open();
        await store.MigrateAsync(Timeout);

        (await store.WriterPragmaAsync("synchronous")).Should().Be(2, "synchronous=FULL (2) syncs the WAL at every commit");
        (await store.WriterPragmaAsync("busy_timeout")).Should().Be(30_000);
        using var connection = new SqliteConnection($"Data Source={_db.File()};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode";
        (command.ExecuteScalar() as string).Should().Be("wal");
    }

    [Fact]
    public async Task Crash_WriterKilledMidLoad_FilePassesIntegrityCheckAndRecoversToTheLastCommit()
    {
        var host = Path.Combine(AppContext.BaseDirectory, "Patterns.Sqlite.CrashHost.dll");
        var start = new System.Diagnostics.ProcessStartInfo("dotnet") { ArgumentList = { host, _db.File(), "16" } };

        var run = await CrashHarness.RunAndKillAsync(start, 200, Timeout);

        File.Exists(_db.File() + "-wal").Should().BeTrue("the killed writer never checkpointed or closed the log");
        Query("PRAGMA integrity_check").Should().Be("ok");
        var store = _db.Open();
        var log = await ToListAsync(store.ReadAllAsync(0, null, long.MaxValue, Timeout));
        log.Select(e => e.Position).Should().Equal(Enumerable.Range(1, log.Count).Select(i => (long)i));
        (await store.GetHeadPositionAsync(Timeout)).Should().Be(log.Count, "the head is the highest committed position");
        var ids = log.Select(e => e.EventId).ToHashSet();
        run.Acknowledged.SelectMany(a => a.EventIds).Should().OnlyContain(id => ids.Contains(id));
        foreach (var stream in log.GroupBy(e => e.StreamId))
        {
            (await store.GetStreamStateAsync(stream.Key, Timeout)).Version.Should().Be(stream.Count(), "the stream row commits with its events");
        }
    }

    [Fact]
    public async Task Crash_UnitWriterKilledMidLoad_EveryAcknowledgedUnitIsWholeAndNoUnitIsPartial()
    {
        var host = Path.Combine(AppContext.BaseDirectory, "Patterns.Sqlite.CrashHost.dll");
        var start = new System.Diagnostics.ProcessStartInfo("dotnet") { ArgumentList = { host, _db.File(), "16", "units" } };

        var run = await CrashHarness.RunAndKillAsync(start, 200, Timeout);

        Query("PRAGMA integrity_check").Should().Be("ok");
        var store = _db.Open();
        var log = await ToListAsync(store.ReadAllAsync(0, null, long.MaxValue, Timeout));
        var ids = log.Select(e => e.EventId).ToHashSet();
        run.Acknowledged.SelectMany(a => a.EventIds).Should().OnlyContain(id => ids.Contains(id), "an acknowledged unit survives the kill");
        var outbox = await store.ReadOutboxAsync(0, int.MaxValue, Timeout);
        var relayed = outbox.SelectMany(m => m.Message.Payload.ToArray().Chunk(16).Select(b => new Guid(b))).ToList();
        relayed.Should().BeEquivalentTo(ids, "each unit's outbox message commits with its events, or neither does");
        foreach (var stream in log.GroupBy(e => e.StreamId))
        {
            var document = await ((IDocumentStorage)store).GetAsync("crash", stream.Key, Timeout);
            Encoding.UTF8.GetString(document!).Should().Be(stream.Count().ToString(System.Globalization.CultureInfo.InvariantCulture), "the unit's document commits with its events");
        }
    }

    [Fact]
    public async Task DisposeAsync_WithQueuedAppends_CommitsThemBeforeClosing()
    {
        var store = _db.Open();
        var (blocker, release) = await StartBlockingAppendAsync(store);
        var queued = Enumerable.Range(0, 5).Select(i => store.AppendAsync($"s-{i}", ExpectedVersion.NoStream, [NewEvent()], null, Timeout).AsTask()).ToArray();

        var disposing = store.DisposeAsync().AsTask();
        release.SetResult();
        await disposing.WaitAsync(TempDatabase.Wait, Timeout);
        await Task.WhenAll(queued.Append(blocker)).WaitAsync(TempDatabase.Wait, Timeout);

        var reopened = _db.Open();
        (await reopened.GetHeadPositionAsync(Timeout)).Should().Be(6);
        var afterDispose = async () => await store.AppendAsync("late", ExpectedVersion.Any, [NewEvent()], null, Timeout);
        await afterDispose.Should().ThrowAsync<ObjectDisposedException>();
    }

    [Fact]
    public async Task AppendAsync_Rows_StoreIdsAsSixteenByteBlobsAndEmptyOptionalsAsNull()
    {
        var store = _db.Open();
        var e = NewEvent();

        await store.AppendAsync("a", ExpectedVersion.NoStream, [e], null, Timeout);

        Query("SELECT typeof(event_id) || ':' || length(event_id) FROM patterns_events").Should().Be("blob:16");
        Query("SELECT hex(event_id) FROM patterns_events").Should().Be(Convert.ToHexString(e.EventId.ToByteArray()));
        Query("SELECT typeof(metadata) || typeof(correlation_id) || typeof(causation_id) FROM patterns_events").Should().Be("nullnullnull");
        Scalar("SELECT timestamp FROM patterns_events").Should().Be(e.Timestamp.UtcTicks);
    }

    [Fact]
    public async Task ReadStreamAsync_EmptyBodyAndPartlySetOptionals_RoundTrip()
    {
        var store = _db.Open();
        var empty = NewEvent() with { Data = ReadOnlyMemory<byte>.Empty };
        var causedOnly = NewEvent() with { CausationId = "cause-7" };
        var sliced = NewEvent() with { Data = new byte[] { 9, 1, 2, 3, 9 }.AsMemory(1, 3), Metadata = new byte[] { 0, 5, 0 }.AsMemory(1, 1) };

        await store.AppendAsync("a", ExpectedVersion.NoStream, [empty, causedOnly, sliced], null, Timeout);
        var read = await ToListAsync(store.ReadStreamAsync("a", ReadDirection.Forward, null, long.MaxValue, Timeout));

        read[0].Data.Length.Should().Be(0);
        read[1].CausationId.Should().Be("cause-7");
        read[1].CorrelationId.Should().BeNull();
        read[1].Metadata.IsEmpty.Should().BeTrue();
        read[2].Data.ToArray().Should().Equal(1, 2, 3);
        read[2].Metadata.ToArray().Should().Equal(5);
    }

    [Fact]
    public async Task DeleteStream_Hard_RemovesTheRowsFromTheFile()
    {
        var store = _db.Open();
        await store.AppendAsync("doomed", ExpectedVersion.NoStream, NewEvents(3), null, Timeout);
        await store.AppendAsync("kept", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);

        await store.DeleteStreamAsync("doomed", ExpectedVersion.Exact(3), StreamDeleteMode.Hard, Timeout);

        Scalar("SELECT count(*) FROM patterns_events WHERE stream_id = 'doomed'").Should().Be(0);
        Scalar("SELECT count(*) FROM patterns_events").Should().Be(2);
        Scalar("SELECT deleted FROM patterns_streams WHERE stream_id = 'doomed'").Should().Be(2);
    }

    [Fact]
    public async Task DeleteStream_HardDeleteOfTheTopOfTheLog_PositionsAreNeverReusedEvenAfterReopening()
    {
        var store = _db.Open();
        await store.AppendAsync("a", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);
        await store.AppendAsync("top", ExpectedVersion.NoStream, NewEvents(3), null, Timeout);

        await store.DeleteStreamAsync("top", ExpectedVersion.Any, StreamDeleteMode.Hard, Timeout);
        await store.DisposeAsync();
        var reopened = _db.Open();

        (await reopened.GetHeadPositionAsync(Timeout)).Should().Be(5);
        (await reopened.AppendAsync("b", ExpectedVersion.NoStream, [NewEvent()], null, Timeout)).FirstPosition.Should().Be(6);
        (await ToListAsync(reopened.ReadAllAsync(0, null, long.MaxValue, Timeout))).Select(e => e.Position).Should().Equal(1, 2, 6);
    }

    [Fact]
    public async Task TwoStoresOnOneFile_AppendConcurrently_PositionsStayGapFreeInCommitOrder()
    {
        // Two store instances stand in for two processes: two writers on one file, serialized by SQLite's lock.
        var first = _db.Open();
        var second = _db.Open();
        await Task.WhenAll(new[] { first, second }.SelectMany((store, s) => Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < 25; i++)
            {
                await store.AppendAsync($"store{s}-writer{w}", ExpectedVersion.Exact(i * 2), NewEvents(2), null, Timeout);
            }
        }, Timeout)))).WaitAsync(TempDatabase.Wait, Timeout);

        var log = await ToListAsync(first.ReadAllAsync(0, null, long.MaxValue, Timeout));
        log.Select(e => e.Position).Should().Equal(Enumerable.Range(1, 400).Select(i => (long)i));
        foreach (var stream in log.GroupBy(e => e.StreamId))
        {
            stream.Select(e => e.Version).Should().Equal(Enumerable.Range(1, 50).Select(i => (long)i));
        }

        (await second.GetHeadPositionAsync(Timeout)).Should().Be(400);
    }

    [Fact]
    public async Task WaitForEventsAsync_AppendByAnotherStoreOnTheFile_WithChangeChecksOff_IsNoticedAtThePollInterval()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var reader = _db.Open(o =>
        {
            o.TimeProvider = time;
            o.PollInterval = TimeSpan.FromSeconds(5);
            o.ChangeCheckInterval = TimeSpan.Zero;
        });
        var writer = _db.Open();
        await reader.MigrateAsync(Timeout);

        var waiting = reader.WaitForEventsAsync(0, Timeout).AsTask();
        await time.WaitForPendingTimersAsync(1, Timeout);
        await writer.AppendAsync("elsewhere", ExpectedVersion.NoStream, [NewEvent()], null, Timeout);
        waiting.IsCompleted.Should().BeFalse("the other store's commit signals only its own waiters");
        fake.Advance(TimeSpan.FromSeconds(5));
        await waiting.WaitAsync(TempDatabase.Wait, Timeout);

        (await ToListAsync(reader.ReadAllAsync(0, null, long.MaxValue, Timeout))).Should().ContainSingle().Which.StreamId.Should().Be("elsewhere");
    }

    [Fact]
    public async Task WaitForEventsAsync_AppendByAnotherStoreOnTheFile_IsNoticedByTheChangeCheck_WithoutThePollInterval()
    {
        var fake = new FakeTimeProvider();
        var reader = _db.Open(o =>
        {
            o.TimeProvider = fake;
            o.PollInterval = TimeSpan.FromDays(1);
        });
        var writer = _db.Open();
        await reader.MigrateAsync(Timeout);
        var head = await reader.GetHeadPositionAsync(Timeout);

        // The reader's clock never moves, so its poll interval never elapses: only the check of the file's version wakes it.
        var waiting = reader.WaitForEventsAsync(head, Timeout).AsTask();
        await writer.AppendAsync("elsewhere", ExpectedVersion.NoStream, [NewEvent()], null, Timeout);
        await waiting.WaitAsync(TempDatabase.Wait, Timeout);

        (await reader.GetHeadPositionAsync(Timeout)).Should().Be(head + 1);
        await reader.WaitForEventsAsync(head, Timeout); // the head it learned from the check is known: returns at once
    }

    [Fact]
    public async Task TablePrefix_TwoStoresInOneFile_AreIndependent()
    {
        var orders = _db.Open(o => o.TablePrefix = "orders_");
        var billing = _db.Open(o => o.TablePrefix = "billing_");

        await orders.AppendAsync("order-1", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);
        await billing.AppendAsync("invoice-1", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);

        (await orders.GetHeadPositionAsync(Timeout)).Should().Be(2);
        (await billing.GetHeadPositionAsync(Timeout)).Should().Be(1);
        (await ToListAsync(billing.ReadAllAsync(0, null, long.MaxValue, Timeout))).Should().ContainSingle().Which.StreamId.Should().Be("invoice-1");
        Scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name LIKE 'orders\\_%' ESCAPE '\\'").Should().Be(10);
    }

    [Fact]
    public async Task ReadAllAsync_StreamPrefixWithNonAsciiAndWildcardCharacters_MatchesOrdinally()
    {
        var store = _db.Open(o => o.PageSize = 2);
        foreach (var stream in new[] { "café-1", "cafe-1", "café-2", "CAFÉ-3", "caf_-1", "café" })
        {
            await store.AppendAsync(stream, ExpectedVersion.NoStream, [NewEvent()], null, Timeout);
        }

        var cafe = await ToListAsync(store.ReadAllAsync(0, new EventFilter { StreamPrefix = "café-" }, long.MaxValue, Timeout));
        var underscore = await ToListAsync(store.ReadAllAsync(0, new EventFilter { StreamPrefix = "caf_" }, long.MaxValue, Timeout));

        cafe.Select(e => e.StreamId).Should().Equal("café-1", "café-2");
        underscore.Select(e => e.StreamId).Should().Equal("caf_-1");
    }

    [Fact]
    public async Task Inbox_MarksAreStampedWithTheConfiguredClock()
    {
        var fake = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var time = new TimerTracker(fake);
        IInboxStore inbox = _db.Open(o => o.TimeProvider = time);
        await inbox.TryMarkHandledAsync("billing", "old", Timeout);
        fake.Advance(TimeSpan.FromHours(2));
        await inbox.TryMarkHandledAsync("billing", "new", Timeout);

        (await inbox.PruneAsync(time.GetUtcNow().AddHours(-1), Timeout)).Should().Be(1);

        (await inbox.ContainsAsync("billing", "old", Timeout)).Should().BeFalse();
        (await inbox.ContainsAsync("billing", "new", Timeout)).Should().BeTrue();
    }

    // ----- Schema ------------------------------------------------------------------------------------------

    [Fact]
    public async Task MigrateAsync_RunRepeatedlyAndByTwoStores_IsIdempotentAndKeepsData()
    {
        var store = _db.Open();
        await store.MigrateAsync(Timeout);
        await store.AppendAsync("a", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);
        await store.MigrateAsync(Timeout);
        var other = _db.Open();
        await other.MigrateAsync(Timeout);
        await other.MigrateAsync(Timeout);

        (await other.GetHeadPositionAsync(Timeout)).Should().Be(2);
        Scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name LIKE 'patterns\\_%' ESCAPE '\\'").Should().Be(10);
        Scalar("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name LIKE 'patterns\\_%' ESCAPE '\\'").Should().Be(3);
        Scalar("SELECT version FROM patterns_schema").Should().Be(2);
    }

    [Fact]
    public async Task MigrateAsync_TablesDroppedWhileOpen_RecreatesThem()
    {
        var store = _db.Open();
        await store.MigrateAsync(Timeout);
        Execute("DROP TABLE patterns_inbox");

        await store.MigrateAsync(Timeout);

        Scalar("SELECT count(*) FROM sqlite_master WHERE name = 'patterns_inbox'").Should().Be(1);
    }

    [Fact]
    public async Task Open_SchemaFromANewerVersion_ThrowsNamingBothVersions()
    {
        await _db.Open().MigrateAsync(Timeout);
        Execute("UPDATE patterns_schema SET version = 7");
        var store = _db.Open();

        var open = async () => await store.AppendAsync("a", ExpectedVersion.Any, [NewEvent()], null, Timeout);

        (await open.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain("schema version 7").And.Contain("uses version 2");
    }

    // ----- Bad input ---------------------------------------------------------------------------------------

    [Fact]
    public void Constructor_InvalidOptions_ListsEveryProblem()
    {
        var create = () => new SqliteEventStore(new SqliteEventStoreOptions
        {
            ConnectionString = "",
            TablePrefix = "drop table;",
            PageSize = 0,
            PollInterval = TimeSpan.Zero,
            ChangeCheckInterval = TimeSpan.FromMilliseconds(-1),
            BusyTimeout = TimeSpan.FromSeconds(-1),
        });

        var thrown = create.Should().Throw<ArgumentException>().Which;
        thrown.Message.Should().Contain("ConnectionString").And.Contain("TablePrefix").And.Contain("PageSize")
            .And.Contain("PollInterval").And.Contain("ChangeCheckInterval").And.Contain("BusyTimeout");
    }

    [Theory]
    [InlineData("Data Source=:memory:", "in-memory")]
    [InlineData("Data Source=x.db;Mode=Memory", "in-memory")]
    [InlineData("Data Source=x.db;Mode=ReadOnly", "read-only")]
    [InlineData("Data Source=x.db;Bogus=1", "not a valid connection string")]
    public void Constructor_UnusableConnectionString_SaysWhy(string connectionString, string reason)
    {
        var create = () => new SqliteEventStore(connectionString);

        create.Should().Throw<ArgumentException>().Which.Message.Should().Contain(reason);
    }

    [Fact]
    public async Task Open_DirectoryMissing_ThrowsNamingTheFile()
    {
        var path = Path.Combine(_db.Directory, "missing", "events.db");
        await using var store = new SqliteEventStore(path);

        var open = async () => await store.MigrateAsync(Timeout);

        (await open.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain(path).And.Contain("directory");
    }

    [Fact]
    public async Task Constructor_PlainFilePath_IsUsedAsTheDataSource()
    {
        await using var store = new SqliteEventStore(_db.File("plain.db"));

        await store.AppendAsync("a", ExpectedVersion.NoStream, [NewEvent()], null, Timeout);

        File.Exists(_db.File("plain.db")).Should().BeTrue();
    }

    [Fact]
    public async Task AppendAsync_BadEvents_ThrowArgumentExceptionNamingTheEvent()
    {
        var store = _db.Open();
        var e = NewEvent();

        var twice = async () => await store.AppendAsync("a", ExpectedVersion.Any, [e, e], null, Timeout);
        var emptyId = async () => await store.AppendAsync("a", ExpectedVersion.Any, [e with { EventId = Guid.Empty }], null, Timeout);
        var noType = async () => await store.AppendAsync("a", ExpectedVersion.Any, [NewEvent(), e with { EventType = "" }], null, Timeout);
        var nullEvent = async () => await store.AppendAsync("a", ExpectedVersion.Any, [null!], null, Timeout);

        (await twice.Should().ThrowAsync<ArgumentException>()).Which.Message.Should().Contain(e.EventId.ToString()).And.Contain("more than once");
        (await emptyId.Should().ThrowAsync<ArgumentException>()).Which.Message.Should().Contain("empty event id");
        (await noType.Should().ThrowAsync<ArgumentException>()).Which.Message.Should().Contain("Event 1").And.Contain("no event type");
        (await nullEvent.Should().ThrowAsync<ArgumentException>()).Which.Message.Should().Contain("is null");
        (await store.GetHeadPositionAsync(Timeout)).Should().Be(0);
    }

    [Fact]
    public async Task OtherCalls_BadArguments_Throw()
    {
        var store = _db.Open();

        await FluentActions.Awaiting(async () => await store.TruncateStreamAsync("a", -1, Timeout)).Should().ThrowAsync<ArgumentOutOfRangeException>();
        await FluentActions.Awaiting(async () => await ((ICheckpointStore)store).SaveAsync("", 1, Timeout)).Should().ThrowAsync<ArgumentException>();
        await FluentActions.Awaiting(async () => await ((ICheckpointStore)store).SaveAsync("p", -1, Timeout)).Should().ThrowAsync<ArgumentOutOfRangeException>();
        await FluentActions.Awaiting(async () => await ((IDocumentStorage)store).UpsertAsync("docs", "", "x"u8.ToArray(), Timeout)).Should().ThrowAsync<ArgumentException>();
        FluentActions.Invoking(() => store.ReadAllAsync(-1)).Should().Throw<ArgumentOutOfRangeException>();
        FluentActions.Invoking(() => store.ReadStreamAsync("a", (ReadDirection)7)).Should().Throw<ArgumentOutOfRangeException>();
        FluentActions.Invoking(() => store.ReadStreamAsync("")).Should().Throw<ArgumentException>();
    }

    // ----- helpers -----------------------------------------------------------------------------------------

    /// <summary>Starts an append whose inline projection holds the writer's transaction open until released.</summary>
    private static async Task<(Task Blocker, TaskCompletionSource Release)> StartBlockingAppendAsync(SqliteEventStore store)
    {
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var blocker = store.AppendAsync("blocker", ExpectedVersion.NoStream, [NewEvent()], async (_, _, _) =>
        {
            entered.TrySetResult();
            await release.Task;
        }, Timeout).AsTask();
        await entered.Task.WaitAsync(TempDatabase.Wait, Timeout);
        return (blocker, release);
    }

    private long Scalar(string sql) => Convert.ToInt64(Query(sql));

    private object? Query(string sql)
    {
        using var connection = new SqliteConnection($"Data Source={_db.File()};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return command.ExecuteScalar();
    }

    private void Execute(string sql)
    {
        using var connection = new SqliteConnection($"Data Source={_db.File()};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private static SerializedEvent NewEvent() =>
        new(Guid.NewGuid(), "test.happened", Encoding.UTF8.GetBytes("{}"), new DateTimeOffset(2024, 1, 2, 3, 4, 5, TimeSpan.Zero));

    private static SerializedEvent[] NewEvents(int count) => Enumerable.Range(0, count).Select(_ => NewEvent()).ToArray();

    private static async Task<List<T>> ToListAsync<T>(IAsyncEnumerable<T> source)
    {
        var list = new List<T>();
        await foreach (var item in source)
        {
            list.Add(item);
        }

        return list;
    }
}
