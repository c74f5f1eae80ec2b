using System.Runtime.CompilerServices;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Messaging;
using Patterns.Queues;

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
        // SQLITE_BUSY (after a 1 s busy timeout). That is an outage, not the fault of the message being looked up: with
        // maxDeliveries 1 no message is dead-lettered, and once the lock is gone every message loads exactly once. Before,
        // the message whose row was looked up counted a failed delivery and was dead-lettered.
        using var dir = new TempDir();
        var dimension = CreateDimension(dir);
        var queue = "dimension-down-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue, rabbitMq);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var id = 1; id <= 5; id++)
        {
            await sender.SendAsync(queue, new Reading(id, 0));
        }

        EtlPipeline<Reading> Pipeline(RecordingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .Lookup(Dimension(cache, dimension), r => r.Id, (r, value) => r with { Value = value })
            .To(sink, "dimension-down");

        var loaded = new List<Reading>();
        using (var locker = new SqliteConnection(dimension))
        {
            locker.Open();
            using (var exclusive = locker.CreateCommand())
            {
                exclusive.CommandText = "BEGIN EXCLUSIVE";
                exclusive.ExecuteNonQuery();
            }

            var sink = new RecordingSink(failOnBatch: null);
            var down = async () => await Pipeline(sink).RunAsync(new EtlRunOptions { BatchSize = 100 }).WaitAsync(Wait);
            (await down.Should().ThrowAsync<SqliteException>()).Which.SqliteErrorCode.Should().Be(5, "the dimension is locked (SQLITE_BUSY)");
            loaded.AddRange(sink.Rows);
        }

        var letters = host.Services.GetRequiredService<IDeadLetterQueue>();
        (await letters.PeekAsync(queue)).Should().BeEmpty("no message is to blame for a dimension that cannot be read");

        // The lock is gone. A sentinel sent now comes after every message handed back.
        await sender.SendAsync(queue, new Reading(6, 0));
        var last = new RecordingSink(failOnBatch: null);
        using var stop = new CancellationTokenSource(Wait);
        last.OnCommit = () =>
        {
            if (last.Rows.Any(r => r.Id == 6))
            {
                stop.Cancel();
            }
        };
        (await Pipeline(last).RunAsync(new EtlRunOptions { BatchSize = 100 }, stop.Token)).Status.Should().Be(EtlRunStatus.Stopped);
        loaded.AddRange(last.Rows);

        loaded.Select(r => r.Id).Order().Should().Equal([1, 2, 3, 4, 5, 6], "every message loads exactly once once the dimension is back");
        loaded.Should().OnlyContain(r => r.Value == r.Id * 100, "each row carries what the dimension holds for it");
        (await letters.PeekAsync(queue)).Should().BeEmpty();
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
        var subscribed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(queue, rabbitMq: false, inner => new SignallingTransport(inner, subscribed));
        var sender = host.Services.GetRequiredService<IQueueSender>();
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
        await subscribed.Task.WaitAsync(Wait);
        for (var id = 1; id <= 5; id++)
        {
            await sender.SendAsync(queue, new Reading(id, 0));
        }

        var down = async () => await running.WaitAsync(Wait);
        await down.Should().ThrowAsync<TimeoutException>();
        var letters = host.Services.GetRequiredService<IDeadLetterQueue>();
        (await letters.PeekAsync(queue)).Should().BeEmpty("no message is to blame for the outage");
        asked.Should().EndWith(3);
        first.Rows.Select(r => r.Id).Should().Equal(asked[..^1], "the messages before the one the outage surfaced on are committed");

        Volatile.Write(ref up, true);
        await sender.SendAsync(queue, new Reading(6, 0));
        var last = new RecordingSink(failOnBatch: null);
        using var stop = new CancellationTokenSource(Wait);
        last.OnCommit = () =>
        {
            if (last.Rows.Any(r => r.Id == 6))
            {
                stop.Cancel();
            }
        };
        (await Pipeline(last).RunAsync(new EtlRunOptions { BatchSize = 100 }, stop.Token)).Status.Should().Be(EtlRunStatus.Stopped);
        first.Rows.Concat(last.Rows).Select(r => r.Id).Order().Should().Equal([1, 2, 3, 4, 5, 6]);
        (await letters.PeekAsync(queue)).Should().BeEmpty();
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
        var dimension = CreateDimension(dir);
        var queue = "lookup-poison-" + Guid.NewGuid().ToString("N");
        var subscribed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(queue, rabbitMq: false, inner => new SignallingTransport(inner, subscribed));
        var sender = host.Services.GetRequiredService<IQueueSender>();
        EtlPipeline<Reading> Pipeline(RecordingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .Lookup(
                Dimension(cache, dimension, rejects: fails == "dimension" ? 3 : null),
                r => fails == "key" && r.Id == 3 ? throw new InvalidOperationException("poison row 3") : r.Id,
                (r, value) => fails == "result" && r.Id == 3 ? throw new InvalidOperationException("poison row 3") : r with { Value = value })
            .To(sink, "lookup-poison");

        var sink = new RecordingSink(failOnBatch: null);
        var running = Pipeline(sink).RunAsync(new EtlRunOptions { BatchSize = 100 });
        await subscribed.Task.WaitAsync(Wait);
        for (var id = 1; id <= 5; id++)
        {
            await sender.SendAsync(queue, new Reading(id, 0));
        }

        var run = async () => await running.WaitAsync(Wait);
        (await run.Should().ThrowAsync<InvalidOperationException>()).WithMessage("poison row 3");
        var letters = host.Services.GetRequiredService<IDeadLetterQueue>();
        var letter = (await letters.PeekAsync(queue)).Should().ContainSingle("only the message whose row failed is blamed").Which;
        letter.Reason.Should().StartWith("ETL job 'lookup-poison': stage 1 (Lookup) failed on message ");

        await sender.SendAsync(queue, new Reading(6, 0));
        var last = new RecordingSink(failOnBatch: null);
        using var stop = new CancellationTokenSource(Wait);
        last.OnCommit = () =>
        {
            if (last.Rows.Any(r => r.Id == 6))
            {
                stop.Cancel();
            }
        };
        (await Pipeline(last).RunAsync(new EtlRunOptions { BatchSize = 100 }, stop.Token)).Status.Should().Be(EtlRunStatus.Stopped);
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
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var id = 1; id <= 5; id++)
        {
            await sender.SendAsync(queue, new Reading(id, id));
        }

        var (a, b) = (Sqlite.Append<Reading>(dir.Sqlite("a.db"), "readings"), Sqlite.Append<Reading>(dir.Sqlite("b.db"), "readings"));
        EtlPipeline<Reading> Pipeline(EtlSink<Reading> toA, EtlSink<Reading> toB) => EtlTransport.FromQueue<Reading>(host.Services, queue)
            .Multicast("branch-sink", branch => branch.To("a", toA), branch => branch.To("b", toB));

        var committedA = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var failing = Pipeline(
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
        var inA = Db.ScalarSqlite(dir.Sqlite("a.db"), "SELECT count(*) FROM readings");
        inA.Should().BePositive("branch 'a' committed the batch before 'b' failed");
        Db.ScalarSqlite(dir.Sqlite("b.db"), "SELECT count(*) FROM readings").Should().Be(0);

        using var stop = new CancellationTokenSource(Wait);
        var written = 0;
        var retry = Pipeline(
            a,
            new HookSink(b)
            {
                AfterWrite = rows =>
                {
                    if ((written += rows) >= 5)
                    {
                        stop.Cancel();
                    }
                },
            });
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
            var written = 0;
            var pipeline = EtlTransport.FromQueue<Reading>(host.Services, queue).Multicast(
                "branch-again",
                branch => branch.To("a", a),
                branch => branch.To("b", new HookSink(b)
                {
                    AfterWrite = n =>
                    {
                        if ((written += n) >= rows)
                        {
                            stop.Cancel();
                        }
                    },
                }));
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

    /// <summary>A SQLite dimension (key to key × 100, keys 1 to 6), read with a 1 s busy timeout.</summary>
    private static string CreateDimension(TempDir dir)
    {
        var connectionString = $"Data Source={dir.File("dimension.db")};Pooling=False;Default Timeout=1";
        using var connection = new SqliteConnection(connectionString);
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "CREATE TABLE dim (id INTEGER PRIMARY KEY, value INTEGER NOT NULL); INSERT INTO dim VALUES (1, 100), (2, 200), (3, 300), (4, 400), (5, 500), (6, 600);";
        command.ExecuteNonQuery();
        return connectionString;
    }

    private static EtlLookup<int, long> Dimension(string cache, string connectionString, int? rejects = null) => cache switch
    {
        "full" => EtlLookup.Full<int, long>(ct => ReadDimensionAsync(connectionString, ct)),
        "lru" => EtlLookup.Lru<int, long>((key, ct) => FindAsync(connectionString, key, rejects, ct), capacity: 2),
        _ => EtlLookup.Uncached<int, long>((key, ct) => FindAsync(connectionString, key, rejects, ct)),
    };

    private static async IAsyncEnumerable<KeyValuePair<int, long>> ReadDimensionAsync(string connectionString, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await using var connection = new SqliteConnection(connectionString);
        await connection.OpenAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT id, value FROM dim";
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            yield return new(reader.GetInt32(0), reader.GetInt64(1));
        }
    }

    private static async ValueTask<long> FindAsync(string connectionString, int key, int? rejects, CancellationToken cancellationToken)
    {
        if (key == rejects)
        {
            throw new InvalidOperationException("poison row 3");
        }

        await using var connection = new SqliteConnection(connectionString);
        await connection.OpenAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT value FROM dim WHERE id = $id";
        command.Parameters.AddWithValue("$id", key);
        return Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>A sink that runs hooks around each write of rows (before: may fail it; after: the rows written).</summary>
    private sealed class HookSink(EtlSink<Reading> inner) : EtlSink<Reading>
    {
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
