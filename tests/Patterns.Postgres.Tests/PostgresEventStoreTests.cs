using System.Text;
using Microsoft.Extensions.Time.Testing;
using Npgsql;
using Patterns.Storage;
using Patterns.Testing;

namespace Patterns.Postgres.Tests;

public sealed class PostgresEventStoreTests : PostgresTestBase
{
    [Theory]
    [InlineData(PostgresErrorCodes.DeadlockDetected, StorageErrorKind.Conflict)]
    [InlineData(PostgresErrorCodes.SerializationFailure, StorageErrorKind.Conflict)]
    [InlineData(PostgresErrorCodes.CannotConnectNow, StorageErrorKind.Transient)]
    [InlineData(PostgresErrorCodes.UniqueViolation, StorageErrorKind.Permanent)]
    [InlineData(PostgresSchema.WrongExpectedVersionState, StorageErrorKind.Permanent)]
    public void Classify_PostgresErrors_DeadlocksAndSerializationFailuresAreConflicts(string sqlState, StorageErrorKind kind)
    {
        var store = CreateSut();

        StorageErrors.Classify(new PostgresException("driver error", "ERROR", "ERROR", sqlState), store).Should().Be(kind);
    }

    [Fact]
    public async Task AppendAsync_ThenRead_RoundTripsEveryField()
    {
        var store = CreateSut();
        var e = new SerializedEvent(Guid.NewGuid(), "order-placed", Encoding.UTF8.GetBytes("{\"total\":12}"), TestEvents.Epoch.AddTicks(12))
        {
            CorrelationId = "corr-1",
            CausationId = "cause-1",
            Metadata = Encoding.UTF8.GetBytes("{\"h\":1}"),
        };

        var result = await store.AppendAsync("order-1", ExpectedVersion.NoStream, [e, TestEvents.One()]);

        result.Should().Be(new AppendResult("order-1", 2, result.FirstPosition, result.FirstPosition + 1));
        var read = await store.ReadStreamAsync("order-1").ToListAsync();
        read.Should().HaveCount(2);
        var first = read[0];
        first.EventId.Should().Be(e.EventId);
        first.StreamId.Should().Be("order-1");
        first.Version.Should().Be(1);
        first.Position.Should().Be(result.FirstPosition);
        first.EventType.Should().Be("order-placed");
        Encoding.UTF8.GetString(first.Data.Span).Should().Be("{\"total\":12}");
        first.Timestamp.Should().BeCloseTo(e.Timestamp, TimeSpan.FromMicroseconds(1), "PostgreSQL keeps microseconds");
        first.Timestamp.Offset.Should().Be(TimeSpan.Zero);
        first.CorrelationId.Should().Be("corr-1");
        first.CausationId.Should().Be("cause-1");
        Encoding.UTF8.GetString(first.Metadata.Span).Should().Be("{\"h\":1}");
        read[1].Metadata.IsEmpty.Should().BeTrue();
        read[1].CorrelationId.Should().BeNull();
        (await store.GetHeadPositionAsync()).Should().Be(result.LastPosition);
    }

    [Fact]
    public async Task AppendAsync_WrongExpectedVersion_ThrowsWithStreamExpectedAndActual()
    {
        var store = CreateSut();
        await store.AppendAsync("s", ExpectedVersion.Any, TestEvents.Many(3));

        var act = () => store.AppendAsync("s", ExpectedVersion.Exact(1), [TestEvents.One()]).AsTask();
        var thrown = (await act.Should().ThrowAsync<WrongExpectedVersionException>()).Which;
        thrown.StreamId.Should().Be("s");
        thrown.Expected.Should().Be(ExpectedVersion.Exact(1));
        thrown.Actual.Should().Be(3);

        var missing = () => store.AppendAsync("nothing", ExpectedVersion.StreamExists, [TestEvents.One()]).AsTask();
        (await missing.Should().ThrowAsync<WrongExpectedVersionException>()).Which.Actual.Should().Be(0);
        (await store.GetStreamStateAsync("nothing")).Should().Be(new StreamState("nothing", 0, false, 0), "a failed first append leaves no stream row");
    }

    [Fact]
    public async Task AppendAsync_ExactRetry_ReturnsOriginalResultAndStoresNothing()
    {
        var store = CreateSut();
        var batch = TestEvents.Many(3);
        var original = await store.AppendAsync("s", ExpectedVersion.NoStream, batch);
        await store.AppendAsync("s", ExpectedVersion.Exact(3), [TestEvents.One()]);

        // The retry's expected version no longer holds (the function raises), and with Any the unique index fires.
        (await store.AppendAsync("s", ExpectedVersion.NoStream, batch)).Should().Be(original);
        (await store.AppendAsync("s", ExpectedVersion.Any, batch)).Should().Be(original);

        (await store.ReadAllAsync().ToListAsync()).Should().HaveCount(4);
    }

    [Fact]
    public async Task AppendAsync_ReusedIdsElsewhere_ThrowsDuplicateEvent()
    {
        var store = CreateSut();
        var batch = TestEvents.Many(2);
        await store.AppendAsync("s", ExpectedVersion.Any, batch);

        var mixed = () => store.AppendAsync("s", ExpectedVersion.Any, [TestEvents.One(), batch[1]]).AsTask();
        (await mixed.Should().ThrowAsync<DuplicateEventException>()).Which.EventId.Should().Be(batch[1].EventId);

        var reordered = () => store.AppendAsync("s", ExpectedVersion.Any, [batch[1], batch[0]]).AsTask();
        (await reordered.Should().ThrowAsync<DuplicateEventException>()).Which.EventId.Should().Be(batch[1].EventId);

        // The same id in another stream is a different event.
        (await store.AppendAsync("other", ExpectedVersion.NoStream, [batch[0]])).Version.Should().Be(1);
        (await store.GetStreamStateAsync("s")).Version.Should().Be(2);
    }

    [Fact]
    public async Task AppendAsync_SixteenWritersOnOneStreamWithAny_GetConsecutiveVersions()
    {
        var store = CreateSut();
        const int Writers = 16, Appends = 10;
        var results = await Task.WhenAll(Enumerable.Range(0, Writers).Select(_ => Task.Run(async () =>
        {
            var mine = new List<AppendResult>();
            for (var i = 0; i < Appends; i++)
            {
                mine.Add(await store.AppendAsync("shared", ExpectedVersion.Any, TestEvents.Many(2)));
            }

            return mine;
        }))).WaitAsync(PostgresDatabase.Wait);

        results.SelectMany(r => r).Select(r => r.Version).Should().OnlyHaveUniqueItems().And.HaveCount(Writers * Appends);
        var read = await store.ReadStreamAsync("shared").ToListAsync();
        read.Select(e => e.Version).Should().Equal(Enumerable.Range(1, Writers * Appends * 2).Select(v => (long)v));
        read.Select(e => e.Position).Should().BeInAscendingOrder();
    }

    [Fact]
    public async Task AppendAsync_SixteenWritersRacingForTheSameVersion_OneWinsOthersSeeTheActualVersion()
    {
        var store = CreateSut();
        await store.AppendAsync("race", ExpectedVersion.NoStream, [TestEvents.One()]);
        using var start = new SemaphoreSlim(0);
        var attempts = Enumerable.Range(0, 16).Select(_ => Task.Run(async () =>
        {
            await start.WaitAsync();
            try
            {
                await store.AppendAsync("race", ExpectedVersion.Exact(1), [TestEvents.One()]);
                return (Won: true, Actual: 2L);
            }
            catch (WrongExpectedVersionException ex)
            {
                return (Won: false, ex.Actual);
            }
        })).ToArray();
        start.Release(16);

        var outcomes = await Task.WhenAll(attempts).WaitAsync(PostgresDatabase.Wait);

        outcomes.Count(o => o.Won).Should().Be(1);
        outcomes.Where(o => !o.Won).Should().OnlyContain(o => o.Actual == 2);
        (await store.GetStreamStateAsync("race")).Version.Should().Be(2);
    }

    [Fact]
    public async Task AppendAsync_SixteenWritersCreatingOneStream_ExactlyOneNoStreamAppendWins()
    {
        var store = CreateSut();
        await store.MigrateAsync();
        using var start = new SemaphoreSlim(0);
        var attempts = Enumerable.Range(0, 16).Select(_ => Task.Run(async () =>
        {
            await start.WaitAsync();
            try
            {
                await store.AppendAsync("new-stream", ExpectedVersion.NoStream, [TestEvents.One()]);
                return true;
            }
            catch (WrongExpectedVersionException ex) when (ex.Actual == 1)
            {
                return false;
            }
        })).ToArray();
        start.Release(16);

        (await Task.WhenAll(attempts).WaitAsync(PostgresDatabase.Wait)).Count(won => won).Should().Be(1);
        (await store.ReadStreamAsync("new-stream").ToListAsync()).Should().ContainSingle();
    }

    [Fact]
    public async Task ReadStreamAsync_LongStreamInSmallPages_ReadsForwardBackwardAndFromAVersion()
    {
        var store = CreateSut(o => o.PageSize = 7);
        for (var i = 0; i < 10; i++)
        {
            await store.AppendAsync("long", ExpectedVersion.Any, TestEvents.Many(10));
        }

        (await store.ReadStreamAsync("long").ToListAsync()).Select(e => e.Version).Should().Equal(Range(1, 100));
        (await store.ReadStreamAsync("long", ReadDirection.Backward).ToListAsync()).Select(e => e.Version).Should().Equal(Range(1, 100).Reverse());
        (await store.ReadStreamAsync("long", ReadDirection.Forward, 95).ToListAsync()).Select(e => e.Version).Should().Equal(Range(95, 6));
        (await store.ReadStreamAsync("long", ReadDirection.Backward, 20, 15).ToListAsync()).Select(e => e.Version).Should().Equal(Range(6, 15).Reverse());
        (await store.ReadStreamAsync("long", ReadDirection.Forward, 30, 14).ToListAsync()).Select(e => e.Version).Should().Equal(Range(30, 14));
        (await store.ReadStreamAsync("long", ReadDirection.Backward, 500, 3).ToListAsync()).Select(e => e.Version).Should().Equal(100, 99, 98);
        (await store.ReadStreamAsync("missing").ToListAsync()).Should().BeEmpty();
    }

    [Fact]
    public async Task TruncateStreamAsync_HidesEarlierVersionsFromStreamReadsButNotFromTheLog()
    {
        var store = CreateSut(o => o.PageSize = 4);
        await store.AppendAsync("t", ExpectedVersion.NoStream, TestEvents.Many(10));

        await store.TruncateStreamAsync("t", 6);
        await store.TruncateStreamAsync("t", 3); // never moves back
        await store.TruncateStreamAsync("never-existed", 3);

        (await store.ReadStreamAsync("t").ToListAsync()).Select(e => e.Version).Should().Equal(Range(6, 5));
        (await store.ReadStreamAsync("t", ReadDirection.Backward).ToListAsync()).Select(e => e.Version).Should().Equal(Range(6, 5).Reverse());
        (await store.ReadStreamAsync("t", ReadDirection.Forward, 2, 2).ToListAsync()).Select(e => e.Version).Should().Equal(6, 7);
        (await store.ReadAllAsync().ToListAsync()).Should().HaveCount(10);
        (await store.GetStreamStateAsync("t")).Should().Be(new StreamState("t", 10, false, 6));
        (await store.GetStreamStateAsync("never-existed")).Exists.Should().BeFalse();
    }

    [Fact]
    public async Task DeleteStreamAsync_Soft_KeepsEventsInTheLogAndRefusesStreamReadsAndAppends()
    {
        var store = CreateSut();
        await store.AppendAsync("gone", ExpectedVersion.NoStream, TestEvents.Many(3));
        await store.AppendAsync("kept", ExpectedVersion.NoStream, TestEvents.Many(1));

        var wrong = () => store.DeleteStreamAsync("gone", ExpectedVersion.Exact(2)).AsTask();
        (await wrong.Should().ThrowAsync<WrongExpectedVersionException>()).Which.Actual.Should().Be(3);
        await store.DeleteStreamAsync("gone", ExpectedVersion.Exact(3));

        (await store.GetStreamStateAsync("gone")).Should().Be(new StreamState("gone", 3, true, 0));
        var read = () => store.ReadStreamAsync("gone").ToListAsync();
        (await read.Should().ThrowAsync<StreamDeletedException>()).Which.StreamId.Should().Be("gone");
        var append = () => store.AppendAsync("gone", ExpectedVersion.Any, [TestEvents.One()]).AsTask();
        await append.Should().ThrowAsync<StreamDeletedException>();
        var truncate = () => store.TruncateStreamAsync("gone", 2).AsTask();
        await truncate.Should().ThrowAsync<StreamDeletedException>();
        (await store.ReadAllAsync().ToListAsync()).Should().HaveCount(4);
    }

    [Fact]
    public async Task DeleteStreamAsync_Hard_RemovesEventsAndSnapshotAndTheIdStaysUnusable()
    {
        var store = CreateSut();
        await store.AppendAsync("gone", ExpectedVersion.NoStream, TestEvents.Many(3));
        await store.AppendAsync("kept", ExpectedVersion.NoStream, TestEvents.Many(2));
        ISnapshotStorage snapshots = store;
        await snapshots.SaveAsync(new StoredSnapshot("gone", 3, "state", 1, new byte[] { 1 }, TestEvents.Epoch));

        await store.DeleteStreamAsync("gone", ExpectedVersion.Any, StreamDeleteMode.Hard);

        (await PostgresDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{SchemaName}\".events WHERE stream_id = 'gone'")).Should().Be(0);
        (await snapshots.LoadAsync("gone")).Should().BeNull();
        (await store.ReadAllAsync().ToListAsync()).Select(e => e.StreamId).Should().Equal("kept", "kept");
        var append = () => store.AppendAsync("gone", ExpectedVersion.Any, [TestEvents.One()]).AsTask();
        await append.Should().ThrowAsync<StreamDeletedException>();
        store.Capabilities.Should().Be(EventStorageCapabilities.HardDelete | EventStorageCapabilities.TransactionalProjections | EventStorageCapabilities.Durable);
    }

    [Fact]
    public async Task DeleteStreamAsync_StreamThatNeverExisted_LeavesATombstone()
    {
        var store = CreateSut();

        await store.DeleteStreamAsync("never", ExpectedVersion.NoStream);

        (await store.GetStreamStateAsync("never")).Should().Be(new StreamState("never", 0, true, 0));
        var append = () => store.AppendAsync("never", ExpectedVersion.NoStream, [TestEvents.One()]).AsTask();
        await append.Should().ThrowAsync<StreamDeletedException>();
    }

    [Fact]
    public async Task ReadAllAsync_FiltersByTypeAndPrefixInSqlAcrossPages()
    {
        var store = CreateSut(o => o.PageSize = 3);
        for (var i = 0; i < 5; i++)
        {
            await store.AppendAsync($"order-{i}", ExpectedVersion.NoStream, [TestEvents.One("placed"), TestEvents.One("paid")]);
            await store.AppendAsync($"invoice-{i}", ExpectedVersion.NoStream, [TestEvents.One("placed")]);
            await store.AppendAsync($"ordering_{i}", ExpectedVersion.NoStream, [TestEvents.One("paid")]);
        }

        var all = await store.ReadAllAsync().ToListAsync();
        all.Should().HaveCount(20);
        all.Select(e => e.Position).Should().BeInAscendingOrder().And.OnlyHaveUniqueItems();

        var paid = await store.ReadAllAsync(0, new EventFilter { EventTypes = ["paid"] }).ToListAsync();
        paid.Should().HaveCount(10).And.OnlyContain(e => e.EventType == "paid");

        var orders = await store.ReadAllAsync(0, new EventFilter { StreamPrefix = "order-" }).ToListAsync();
        orders.Should().HaveCount(10).And.OnlyContain(e => e.StreamId.StartsWith("order-", StringComparison.Ordinal));

        var paidOrders = await store.ReadAllAsync(0, new EventFilter { StreamPrefix = "order", EventTypes = ["paid", "nothing"] }).ToListAsync();
        paidOrders.Should().HaveCount(10).And.OnlyContain(e => e.EventType == "paid");

        // LIKE wildcards in a prefix are literal characters.
        (await store.ReadAllAsync(0, new EventFilter { StreamPrefix = "order_" }).ToListAsync()).Should().BeEmpty();

        var tail = await store.ReadAllAsync(all[13].Position, maxCount: 4).ToListAsync();
        tail.Select(e => e.Position).Should().Equal(all.Skip(14).Take(4).Select(e => e.Position));
    }

    [Fact]
    public async Task AppendAsync_InlineProjection_CommitsDocumentsWithTheEvents()
    {
        var store = CreateSut();
        IDocumentWriter? kept = null;
        InlineProjection count = async (appended, documents, ct) =>
        {
            kept = documents;
            var current = await documents.GetAsync("counts", "all", ct);
            var total = (current is null ? 0 : int.Parse(Encoding.UTF8.GetString(current), System.Globalization.CultureInfo.InvariantCulture)) + appended.Count;
            await documents.UpsertAsync("counts", "all", Encoding.UTF8.GetBytes(total.ToString(System.Globalization.CultureInfo.InvariantCulture)), ct);
            appended.Select(e => e.Version).Should().BeInAscendingOrder();
            appended[0].Position.Should().BeGreaterThan(0);
        };

        await store.AppendAsync("p", ExpectedVersion.NoStream, TestEvents.Many(3), count);
        var second = await store.AppendAsync("p", ExpectedVersion.Exact(3), TestEvents.Many(2), count);

        Encoding.UTF8.GetString((await store.GetAsync("counts", "all"))!).Should().Be("5");
        second.Should().Be(new AppendResult("p", 5, second.FirstPosition, second.FirstPosition + 1));
        var late = () => kept!.GetAsync("counts", "all").AsTask();
        await late.Should().ThrowAsync<InvalidOperationException>().WithMessage("*append has finished*");
    }

    [Fact]
    public async Task AppendAsync_InlineProjectionThrows_StoresNeitherEventsNorDocuments()
    {
        var store = CreateSut();
        await store.AppendAsync("p", ExpectedVersion.NoStream, [TestEvents.One()]);
        var head = await store.GetHeadPositionAsync();

        var act = () => store.AppendAsync("p", ExpectedVersion.Exact(1), TestEvents.Many(2), async (_, documents, ct) =>
        {
            await documents.UpsertAsync("docs", "x", new byte[] { 1 }, ct);
            throw new InvalidOperationException("projection failed");
        }).AsTask();

        await act.Should().ThrowAsync<InvalidOperationException>().WithMessage("projection failed");
        (await store.GetAsync("docs", "x")).Should().BeNull();
        (await store.GetStreamStateAsync("p")).Version.Should().Be(1);
        (await store.GetHeadPositionAsync()).Should().Be(head);

        // The rolled-back append gave its positions back: the log stays contiguous.
        var next = await store.AppendAsync("p", ExpectedVersion.Exact(1), [TestEvents.One()]);
        next.FirstPosition.Should().Be(head + 1);
        (await store.ReadAllAsync().ToListAsync()).Select(e => e.Position).Should().Equal(1, 2);
    }

    [Fact]
    public async Task Documents_UpsertGetListDeleteClear()
    {
        var store = CreateSut(o => o.PageSize = 2);
        foreach (var id in new[] { "b", "a", "é", "B", "c" })
        {
            await store.UpsertAsync("col", id, Encoding.UTF8.GetBytes(id));
        }

        await store.UpsertAsync("col", "a", Encoding.UTF8.GetBytes("a2"));
        await store.UpsertAsync("other", "a", new byte[] { 9 });

        Encoding.UTF8.GetString((await store.GetAsync("col", "a"))!).Should().Be("a2");
        var listed = await store.ListAsync("col").ToListAsync();
        listed.Select(d => d.Key).Should().Equal(new[] { "B", "a", "b", "c", "é" }, "ids are listed in ordinal order");
        (await store.DeleteAsync("col", "b")).Should().BeTrue();
        (await store.DeleteAsync("col", "b")).Should().BeFalse();
        await store.ClearAsync("col");
        (await store.ListAsync("col").ToListAsync()).Should().BeEmpty();
        (await store.GetAsync("other", "a")).Should().Equal(9);
    }

    [Fact]
    public async Task Checkpoints_And_Snapshots_PersistAcrossStoreInstances()
    {
        ICheckpointStore checkpoints = CreateSut();
        (await checkpoints.LoadAsync("projection")).Should().BeNull();
        await checkpoints.SaveAsync("projection", 42);
        await checkpoints.SaveAsync("projection", 43);
        ISnapshotStorage snapshots = (PostgresEventStore)checkpoints;
        await snapshots.SaveAsync(new StoredSnapshot("s", 10, "state", 2, new byte[] { 1, 2 }, TestEvents.Epoch));
        await snapshots.SaveAsync(new StoredSnapshot("s", 5, "state", 2, new byte[] { 9 }, TestEvents.Epoch)); // older: ignored

        var reopened = CreateSut();
        (await ((ICheckpointStore)reopened).LoadAsync("projection")).Should().Be(43);
        var snapshot = await ((ISnapshotStorage)reopened).LoadAsync("s");
        snapshot.Should().NotBeNull();
        snapshot!.Version.Should().Be(10);
        snapshot.SchemaVersion.Should().Be(2);
        snapshot.SnapshotType.Should().Be("state");
        snapshot.Data.ToArray().Should().Equal(1, 2);
        snapshot.Timestamp.Should().Be(TestEvents.Epoch);
    }

    [Fact]
    public async Task Inbox_MarksOnceAndPrunesByTheStoreClock()
    {
        var fake = new FakeTimeProvider(TestEvents.Epoch);
        var time = new TimerTracker(fake);
        IInboxStore inbox = CreateSut(time: time);

        (await inbox.TryMarkHandledAsync("orders", "m1")).Should().BeTrue();
        (await inbox.TryMarkHandledAsync("orders", "m1")).Should().BeFalse();
        (await inbox.TryMarkHandledAsync("billing", "m1")).Should().BeTrue();
        fake.Advance(TimeSpan.FromHours(1));
        (await inbox.TryMarkHandledAsync("orders", "m2")).Should().BeTrue();

        (await inbox.PruneAsync(TestEvents.Epoch.AddMinutes(30))).Should().Be(2);
        (await inbox.ContainsAsync("orders", "m1")).Should().BeFalse();
        (await inbox.ContainsAsync("orders", "m2")).Should().BeTrue();
    }

    [Fact]
    public async Task Stores_OnDifferentSchemas_AreIsolated()
    {
        var store = CreateSut();
        var otherSchema = PostgresDatabase.NewSchema();
        var other = new PostgresEventStore(PostgresDatabase.Options(otherSchema));
        try
        {
            await store.AppendAsync("s", ExpectedVersion.NoStream, TestEvents.Many(2));
            await other.AppendAsync("s", ExpectedVersion.NoStream, TestEvents.Many(1));

            (await store.ReadAllAsync().ToListAsync()).Should().HaveCount(2);
            (await other.ReadAllAsync().ToListAsync()).Should().ContainSingle();
            (await other.GetStreamStateAsync("s")).Version.Should().Be(1);
        }
        finally
        {
            await other.DisposeAsync();
            await PostgresDatabase.DropSchemaAsync(otherSchema);
        }
    }

    [Fact]
    public void Constructor_InvalidOptions_ListsEveryProblem()
    {
        var act = () => new PostgresEventStore(new PostgresEventStoreOptions
        {
            Schema = "Bad-Schema",
            PageSize = 0,
            PollInterval = TimeSpan.Zero,
        });

        var message = act.Should().Throw<ArgumentException>().Which.Message;
        message.Should().Contain("ConnectionString or a DataSource")
            .And.Contain("PollInterval must be positive")
            .And.Contain("Schema must be lower-case")
            .And.Contain("PageSize");
    }

    [Fact]
    public void Constructor_MalformedConnectionString_Throws()
    {
        var act = () => new PostgresEventStore(new PostgresEventStoreOptions { ConnectionString = "Host=localhost;NoSuchKeyword=1" });

        act.Should().Throw<ArgumentException>().WithMessage("*nosuchkeyword*");
    }

    [Fact]
    public async Task Operations_BadArguments_ThrowNamingTheProblem()
    {
        var store = CreateSut();
        var e = TestEvents.One();

        await Invoking<AppendResult>(() => store.AppendAsync("", ExpectedVersion.Any, [e])).Should().ThrowAsync<ArgumentException>();
        await Invoking<AppendResult>(() => store.AppendAsync("a\0b", ExpectedVersion.Any, [e])).Should().ThrowAsync<ArgumentException>().WithMessage("*NUL*");
        await Invoking<AppendResult>(() => store.AppendAsync("s", ExpectedVersion.Any, [])).Should().ThrowAsync<ArgumentException>().WithMessage("*at least one event*");
        await Invoking<AppendResult>(() => store.AppendAsync("s", ExpectedVersion.Any, [e, e])).Should().ThrowAsync<ArgumentException>().WithMessage($"*{e.EventId}*more than once*");
        await Invoking<AppendResult>(() => store.AppendAsync("s", ExpectedVersion.Any, [e with { EventType = "" }])).Should().ThrowAsync<ArgumentException>().WithMessage("*no event type*");
        await Invoking<AppendResult>(() => store.AppendAsync("s", ExpectedVersion.Any, [e with { CorrelationId = "x\0" }])).Should().ThrowAsync<ArgumentException>().WithMessage("*correlation id*NUL*");
        await ((Func<Task>)(() => store.ReadStreamAsync("s", maxCount: -1).ToListAsync())).Should().ThrowAsync<ArgumentOutOfRangeException>();
        await ((Func<Task>)(() => store.ReadAllAsync(-1).ToListAsync())).Should().ThrowAsync<ArgumentOutOfRangeException>();
        await Invoking(() => store.TruncateStreamAsync("s", -1)).Should().ThrowAsync<ArgumentOutOfRangeException>();
        await Invoking(() => store.UpsertAsync("c", "", new byte[1])).Should().ThrowAsync<ArgumentException>();
        await Invoking(() => ((ICheckpointStore)store).SaveAsync("p", -5)).Should().ThrowAsync<ArgumentOutOfRangeException>();
        (await store.GetStreamStateAsync("s")).Version.Should().Be(0, "nothing invalid reached the database");
    }

    [Fact]
    public async Task Operations_ServerUnreachable_ThrowNpgsqlException()
    {
        await PostgresDatabase.RequireAsync();
        var store = CreateSut(o =>
        {
            o.DataSource = null;
            o.ConnectionString = "Host=127.0.0.1;Port=1;Username=x;Password=x;Database=x;Timeout=2";
        });

        var act = () => store.AppendAsync("s", ExpectedVersion.Any, [TestEvents.One()]).AsTask();

        await act.Should().ThrowAsync<NpgsqlException>();
    }

    [Fact]
    public async Task AppendAsync_Cancelled_StoresNothing()
    {
        var store = CreateSut();
        await store.MigrateAsync();
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();

        var act = () => store.AppendAsync("s", ExpectedVersion.Any, [TestEvents.One()], cancellationToken: cancelled.Token).AsTask();

        await act.Should().ThrowAsync<OperationCanceledException>();
        (await store.GetStreamStateAsync("s")).Version.Should().Be(0);
    }

    private static Func<Task> Invoking<T>(Func<ValueTask<T>> call) => () => call().AsTask();

    private static Func<Task> Invoking(Func<ValueTask> call) => () => call().AsTask();

    private static IEnumerable<long> Range(long start, int count) => Enumerable.Range(0, count).Select(i => start + i);
}
