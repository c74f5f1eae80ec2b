using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.Sqlite;

namespace Patterns.Etl.Tests;

/// <summary>
/// A queue source tells a failure no message caused from a message's own: a dimension that cannot be read blames no
/// message, and a multicast branch records the messages it loaded, so neither an outage nor a retry loads or dead-letters
/// a message that did nothing wrong.
/// </summary>
public sealed partial class TransportSourceTests
{
    [Theory]
    [InlineData("full", false)]
    [InlineData("lru", false)]
    [InlineData("none", false)]
    [InlineData("full", true)]
    [InlineData("lru", true)]
    [InlineData("none", true)]
    public async Task ALookupWhoseDimensionIsLocked_BlamesNoMessage_NoneIsDeadLettered_OnceItIsBackEachLoadsOnce(string cache, bool rabbitMq)
    {
        // The dimension is a SQLite file another connection holds an exclusive lock on: every read of it fails with
        // SQLITE_BUSY (after a 1 s busy timeout). With SQLite's classifier (which an AddEtl job gets from UseSqlite) that is
        // an outage, not the fault of the message being looked up: with maxDeliveries 1 no message is dead-lettered, and
        // once the lock is gone every message loads exactly once. Before, the message whose row was looked up counted a
        // failed delivery and was dead-lettered.
        using var dir = new TempDir();
        var dimension = SqliteDimension.Create(dir);
        var queue = "dimension-down-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue, rabbitMq);
        await SendReadingsAsync(host, queue, 1, 5);
        var options = new EtlRunOptions { BatchSize = 100, StorageErrorClassifiers = [SqliteStorageErrorClassifier.Instance] };
        EtlPipeline<Reading> Pipeline(RecordingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .Lookup(SqliteDimension.Lookup(cache, dimension), r => r.Id, (r, value) => r with { Value = value })
            .To(sink, "dimension-down");

        var first = new RecordingSink(failOnBatch: null);
        using (SqliteDimension.Lock(dimension))
        {
            var down = async () => await Pipeline(first).RunAsync(options).WaitAsync(Wait);
            (await down.Should().ThrowAsync<SqliteException>()).Which.SqliteErrorCode.Should().Be(5, "the dimension is locked (SQLITE_BUSY)");
        }

        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty("no message is to blame for a dimension that cannot be read");

        // The lock is gone. A sentinel sent now comes after every message handed back.
        var loaded = await SentinelLoadsTheRestOnceAsync(host, queue, Pipeline, first);
        loaded.Should().OnlyContain(r => r.Value == r.Id * 100, "each row carries what the dimension holds for it");
    }

    [Fact]
    public async Task ALookupWhoseSqliteDimensionIsLocked_WithoutSqlitesClassifier_BlamesNoMessage()
    {
        // A run given no classifier (no store registered one: a lookup querying SQLite itself) still takes SQLITE_BUSY
        // for an outage: the lookup's fallback recognises SQLite's busy, locked, I/O and cannot-open codes.
        using var dir = new TempDir();
        var dimension = SqliteDimension.Create(dir);
        var queue = "dimension-unclassified-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        await SendReadingsAsync(host, queue, 1, 1);
        using (SqliteDimension.Lock(dimension))
        {
            var down = async () => await EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
                .Lookup(SqliteDimension.Lookup("none", dimension), r => r.Id, (r, value) => r with { Value = value })
                .To(new RecordingSink(failOnBatch: null), "dimension-unclassified")
                .RunAsync(new EtlRunOptions { BatchSize = 100 }).WaitAsync(Wait);
            await down.Should().ThrowAsync<SqliteException>();
        }

        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty("without a classifier the busy error is still an outage, not the row's");
    }

    [Fact]
    public async Task ALookupWhosePostgresDimensionPassesItsStatementTimeout_BlamesNoMessage()
    {
        // A PostgreSQL dimension that is too slow: the server cancels the lookup's query at its statement_timeout (57014).
        // With PostgreSQL's classifier that is an outage, so with maxDeliveries 1 no message is dead-lettered. Before, 57014
        // was permanent: the message looked up was blamed and dead-lettered.
        await Pg.RequireAsync();
        var queue = "dimension-slow-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        await SendReadingsAsync(host, queue, 1, 1);
        var connectionString = new Npgsql.NpgsqlConnectionStringBuilder(Pg.ConnectionString) { Pooling = false }.ConnectionString;
        var dimension = EtlLookup.Uncached<int, long>(async (key, ct) =>
        {
            await using var connection = new Npgsql.NpgsqlConnection(connectionString);
            await connection.OpenAsync(ct);
            await using var command = new Npgsql.NpgsqlCommand("SET statement_timeout = '50ms'; SELECT pg_sleep(30)", connection);
            await command.ExecuteNonQueryAsync(ct);
            return key * 100L;
        });

        var down = async () => await EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .Lookup(dimension, r => r.Id, (r, value) => r with { Value = value })
            .To(new RecordingSink(failOnBatch: null), "dimension-slow")
            .RunAsync(new EtlRunOptions { BatchSize = 100, StorageErrorClassifiers = [Patterns.Postgres.PostgresStorageErrorClassifier.Instance] }).WaitAsync(Wait);

        (await down.Should().ThrowAsync<Npgsql.PostgresException>()).Which.SqlState.Should().Be("57014", "the server cancelled the query at its statement_timeout");
        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty("a dimension too slow to answer is an outage, not the message's fault");
    }

    [Fact]
    public async Task ALookupWhoseDimensionFailsTransientlyUntilASignal_BlamesNoMessage_AndTheMessagesBeforeTheFailingOneAreCommitted()
    {
        // An uncached dimension times out (an outage) on key 3 until it is back. Messages 1 to 5 share the open batch: the
        // run commits the messages taken before message 3 (complete, past every stage) before it fails, as for the other
        // failures no message caused, and blames none (maxDeliveries 1: nothing is dead-lettered). The next run, with the
        // dimension back, loads the rest. (The in-memory queue's handlers race, so the order they are taken in is the
        // order the dimension was asked in.)
        var queue = "dimension-timeout-" + Guid.NewGuid().ToString("N");
        var (host, subscribed) = await StartSignallingAsync(queue);
        using var disposeHost = host;
        var up = false;
        var asked = new List<int>();
        var dimension = EtlLookup.Uncached<int, long>((key, _) =>
        {
            asked.Add(key);
            return key != 3 || Volatile.Read(ref up) ? new(key * 100L) : throw new TimeoutException("the dimension did not answer");
        });
        EtlPipeline<Reading> Pipeline(RecordingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .Lookup(dimension, r => r.Id, (r, value) => r with { Value = value })
            .To(sink, "dimension-timeout");

        var first = new RecordingSink(failOnBatch: null);
        var running = Pipeline(first).RunAsync(new EtlRunOptions { BatchSize = 100 });
        await subscribed.WaitAsync(Wait);
        await SendReadingsAsync(host, queue, 1, 5);

        var down = async () => await running.WaitAsync(Wait);
        await down.Should().ThrowAsync<TimeoutException>();
        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty("no message is to blame for the outage");
        asked.Should().EndWith(3);
        first.Rows.Select(r => r.Id).Should().Equal(asked[..^1], "the messages before the one the outage surfaced on are committed");

        Volatile.Write(ref up, true);
        await SentinelLoadsTheRestOnceAsync(host, queue, Pipeline, first);
    }

    [Theory]
    [InlineData("full", "key")]
    [InlineData("lru", "dimension")]
    [InlineData("none", "result")]
    [InlineData("lru", "key")]
    public async Task ALookupThatFailsOnOneMessagesRow_OnlyThatMessageIsDeadLettered_TheOthersLoadOnce(string cache, string fails)
    {
        // The key selector, the result selector, or the dimension refusing the row's key (not an outage: a permanent error)
        // throws on message 3's row: that message is to blame, dead-lettered alone (maxDeliveries 1); the others load once.
        using var dir = new TempDir();
        var dimension = SqliteDimension.Create(dir);
        var queue = "lookup-poison-" + Guid.NewGuid().ToString("N");
        var (host, subscribed) = await StartSignallingAsync(queue);
        using var disposeHost = host;
        EtlPipeline<Reading> Pipeline(RecordingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .Lookup(
                SqliteDimension.Lookup(cache, dimension, rejects: fails == "dimension" ? 3 : null),
                r => fails == "key" && r.Id == 3 ? throw new InvalidOperationException("poison row 3") : r.Id,
                (r, value) => fails == "result" && r.Id == 3 ? throw new InvalidOperationException("poison row 3") : r with { Value = value })
            .To(sink, "lookup-poison");

        var sink = new RecordingSink(failOnBatch: null);
        var running = Pipeline(sink).RunAsync(new EtlRunOptions { BatchSize = 100 });
        await subscribed.WaitAsync(Wait);
        await SendReadingsAsync(host, queue, 1, 5);

        var run = async () => await running.WaitAsync(Wait);
        (await run.Should().ThrowAsync<InvalidOperationException>()).WithMessage("poison row 3");
        var letters = host.Services.GetRequiredService<IDeadLetterQueue>();
        var letter = (await letters.PeekAsync(queue)).Should().ContainSingle("only the message whose row failed is blamed").Which;
        letter.Reason.Should().StartWith("ETL job 'lookup-poison': stage 1 (Lookup) failed on message ");

        await SendReadingsAsync(host, queue, 6, 6);
        var last = await RunUntilLoadedAsync(Pipeline, sentinel: 6);
        sink.Rows.Concat(last.Rows).Select(r => r.Id).Order().Should().Equal([1, 2, 4, 5, 6], "every other message loads exactly once, nothing of message 3");
        (await letters.PeekAsync(queue)).Should().ContainSingle();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AMulticastBranchsSinkThatFailsAfterAnotherBranchCommitted_TheRetryLoadsEachRowOncePerBranch(bool rabbitMq)
    {
        // Branch 'a' commits a batch, then branch 'b''s sink fails on it: the run fails and its messages are delivered
        // again. Each branch records the ids of the messages it loaded (job/branch) in the transaction of its write, so the
        // next run loads into 'a' only what 'a' lacks and into 'b' everything. Before, 'a' loaded the batch a second time.
        using var dir = new TempDir();
        var queue = "branch-sink-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue, rabbitMq);
        await SendReadingsAsync(host, queue, 1, 5, id => id);

        var (a, b) = (Sqlite.Append<Reading>(dir.Sqlite("a.db"), "readings"), Sqlite.Append<Reading>(dir.Sqlite("b.db"), "readings"));
        EtlPipeline<Reading> Pipeline(EtlSink<Reading> toA, EtlSink<Reading> toB) => EtlTransport.FromQueue<Reading>(host.Services, queue)
            .Multicast("branch-sink", branch => branch.To("a", toA), branch => branch.To("b", toB));

        await HookSink.FailBranchBAfterBranchACommittedAsync(Pipeline, a, b);
        var inA = Db.ScalarSqlite(dir.Sqlite("a.db"), "SELECT count(*) FROM readings");
        inA.Should().BePositive("branch 'a' committed the batch before 'b' failed");
        Db.ScalarSqlite(dir.Sqlite("b.db"), "SELECT count(*) FROM readings").Should().Be(0);

        using var stop = new CancellationTokenSource(Wait);
        var retry = Pipeline(a, HookSink.StoppingAfter(b, rows: 5, stop));
        var result = await retry.RunAsync(new EtlRunOptions { BatchSize = 100 }, stop.Token);
        result.Status.Should().Be(EtlRunStatus.Stopped);
        result.Branches.Single(x => x.Name == "a").RowsLoaded.Should().Be(5 - inA, "branch 'a' skips the messages it committed");

        foreach (var target in new[] { "a.db", "b.db" })
        {
            Db.ScalarSqlite(dir.Sqlite(target), "SELECT group_concat(id, '') FROM (SELECT id FROM readings ORDER BY id)").Should().Be(12345, $"{target} holds each row exactly once");
        }

        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AMulticastMessageDeliveredAgainAfterEveryBranchCommittedIt_IsSkipped_EachBranchHoldsItOnce(bool rabbitMq)
    {
        // A kill between the branches' commits and the acknowledgement delivers the message again: every branch recorded
        // its id, so the source acknowledges it without loading it. Before, a multicast recorded no ids and both branches
        // loaded it twice.
        using var dir = new TempDir();
        var queue = "branch-again-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue, rabbitMq);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        var (a, b) = (Sqlite.Append<Reading>(dir.Sqlite("a.db"), "readings"), Sqlite.Append<Reading>(dir.Sqlite("b.db"), "readings"));
        var id = Guid.NewGuid();

        async Task RunUntilAsync(int rows)
        {
            using var stop = new CancellationTokenSource(Wait);
            var pipeline = EtlTransport.FromQueue<Reading>(host.Services, queue).Multicast(
                "branch-again",
                branch => branch.To("a", a),
                branch => branch.To("b", HookSink.StoppingAfter(b, rows, stop)));
            (await pipeline.RunAsync(new EtlRunOptions { BatchSize = 100 }, stop.Token)).Status.Should().Be(EtlRunStatus.Stopped);
        }

        await sender.SendAsync(queue, new Reading(1, 1), new MessageOptions { MessageId = id });
        await RunUntilAsync(1);

        // The same message again, then another: the second run loads only the other.
        await sender.SendAsync(queue, new Reading(1, 1), new MessageOptions { MessageId = id });
        await sender.SendAsync(queue, new Reading(2, 2));
        await RunUntilAsync(1);

        foreach (var target in new[] { "a.db", "b.db" })
        {
            Db.ScalarSqlite(dir.Sqlite(target), "SELECT group_concat(id, '') FROM (SELECT id FROM readings ORDER BY id)").Should().Be(12, $"{target} holds message 1 once, then message 2");
        }
    }

    /// <summary>A sink that runs hooks around each write of rows (before: may fail it; after: the rows written).</summary>
    private sealed class HookSink(EtlSink<Reading> inner) : EtlSink<Reading>
    {
        /// <summary>Runs a multicast into branches 'a' and 'b' whose 'b' sink fails its first batch once 'a' committed it; checks that the run fails naming branch 'b'.</summary>
        public static async Task FailBranchBAfterBranchACommittedAsync(Func<EtlSink<Reading>, EtlSink<Reading>, EtlPipeline<Reading>> pipeline, EtlSink<Reading> a, EtlSink<Reading> b)
        {
            var committedA = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var failing = pipeline(
                new HookSink(a) { AfterWrite = _ => committedA.TrySetResult() },
                new HookSink(b)
                {
                    BeforeWrite = async _ =>
                    {
                        await committedA.Task.WaitAsync(Wait);
                        throw new InvalidOperationException("sink b is down");
                    },
                });
            var run = async () => await failing.RunAsync(new EtlRunOptions { BatchSize = 100 }).WaitAsync(Wait);
            (await run.Should().ThrowAsync<EtlBranchException>()).Which.Branch.Should().Be("b");
        }

        /// <summary>A sink that stops its run (cancels <paramref name="stop"/>) once it has written <paramref name="rows"/> rows.</summary>
        public static HookSink StoppingAfter(EtlSink<Reading> inner, int rows, CancellationTokenSource stop)
        {
            var written = 0;
            return new HookSink(inner)
            {
                AfterWrite = n =>
                {
                    if ((written += n) >= rows)
                    {
                        stop.Cancel();
                    }
                },
            };
        }

        public Func<int, Task>? BeforeWrite { get; init; }

        public Action<int>? AfterWrite { get; init; }

        public override string Name => inner.Name;

        public override async ValueTask<EtlSinkWriter<Reading>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) =>
            new Writer(this, await inner.OpenAsync(context, cancellationToken));

        private sealed class Writer(HookSink sink, EtlSinkWriter<Reading> inner) : EtlSinkWriter<Reading>
        {
            public override bool StoresBookmarks => inner.StoresBookmarks;

            public override bool StoresQuarantine => inner.StoresQuarantine;

            public override bool StoresConsumed => inner.StoresConsumed;

            public override bool CommitsEachBatch => inner.CommitsEachBatch;

            public override ValueTask<IReadOnlySet<string>> ReadConsumedAsync(IReadOnlyList<string> messageIds, CancellationToken cancellationToken) => inner.ReadConsumedAsync(messageIds, cancellationToken);

            public override ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken) => inner.ReadBookmarkAsync(cancellationToken);

            public override ValueTask ResetAsync(CancellationToken cancellationToken) => inner.ResetAsync(cancellationToken);

            public override async ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<Reading> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                if (rows.Length > 0 && sink.BeforeWrite is { } before)
                {
                    await before(rows.Length);
                }

                var counts = await inner.WriteAsync(rows, commit, cancellationToken);
                if (rows.Length > 0)
                {
                    sink.AfterWrite?.Invoke(rows.Length);
                }

                return counts;
            }

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => inner.CompleteAsync(commit, cancellationToken);

            public override async ValueTask DisposeAsync()
            {
                await inner.DisposeAsync();
                await base.DisposeAsync();
            }
        }
    }
}
