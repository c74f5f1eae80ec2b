using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.Transport;

namespace Patterns.Etl.Tests;

/// <summary>
/// The queue source acknowledges a message only once the batch that includes it has committed at the sink: a run whose
/// sink fails leaves every message of the batches it did not commit (and of the rows behind them) on the queue, and the
/// next run loads each of them once.
/// </summary>
public sealed partial class TransportSourceTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task SinkCommitFails_TheMessagesNoCommitCovers_AreDeliveredAgain_AndEachIsLoadedOnce()
    {
        const int Count = 1_000;
        var queue = "readings-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var i = 1; i <= Count; i++)
        {
            await sender.SendAsync(queue, new Reading(i, i * 1.5m));
        }

        // Every tenth row (ids ending in 3) is filtered out, and ids 7, 57, 107... are quarantined by a rule.
        var expected = Enumerable.Range(1, Count).Where(i => i % 10 != 3 && i % 50 != 7).ToList();
        var bad = Enumerable.Range(1, Count).Where(i => i % 50 == 7).ToList();
        EtlPipeline<Reading> Pipeline(RecordingSink sink) =>
            EtlTransport.FromQueue<Reading>(host.Services, queue)
                .Where(r => r.Id % 10 != 3)
                .Validate(r => r.Id % 50 == 7 ? "rejected by the rule" : null, "id", raw: r => r.Id.ToString(System.Globalization.CultureInfo.InvariantCulture))
                .To(sink, "readings");

        // The first run's sink fails to commit its fourth batch: the run fails after three committed batches.
        var first = new RecordingSink(failOnBatch: 4);
        var failed = async () => await Pipeline(first).RunAsync(new EtlRunOptions { BatchSize = 50 }).WaitAsync(Wait);
        (await failed.Should().ThrowAsync<InvalidOperationException>()).WithMessage("commit 4 failed");
        first.Batches.Should().HaveCount(3);
        first.Rows.Count.Should().BeLessThan(expected.Count);

        // The second run goes on until everything is loaded, then stops.
        var second = new RecordingSink(failOnBatch: null);
        using var stop = new CancellationTokenSource(Wait);
        second.OnCommit = () =>
        {
            if (first.Rows.Count + second.Rows.Count >= expected.Count)
            {
                stop.Cancel();
            }
        };
        var result = await Pipeline(second).RunAsync(new EtlRunOptions { BatchSize = 50 }, stop.Token);

        result.Status.Should().Be(EtlRunStatus.Stopped);
        first.Rows.Concat(second.Rows).Select(r => r.Id).Should().Equal(expected, "every message is loaded once, in order, none lost with the failed batch");
        first.Quarantined.Concat(second.Quarantined).Should().Equal(bad, "each bad message is quarantined once, with the commit of its batch");
    }

    [Fact]
    public async Task Poison_IsDeadLettered_WithoutHoldingBackTheRest_AndAStoppedRunAcknowledgesWhatItLoaded()
    {
        var queue = "poison-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var i = 1; i <= 5; i++)
        {
            await sender.SendAsync(queue, new Reading(i, i));
        }

        await sender.SendAsync(queue, "not a reading");
        for (var i = 6; i <= 10; i++)
        {
            await sender.SendAsync(queue, new Reading(i, i));
        }

        var sink = new RecordingSink(failOnBatch: null);
        using var stop = new CancellationTokenSource(Wait);
        sink.OnCommit = () =>
        {
            if (sink.Rows.Count >= 10)
            {
                stop.Cancel();
            }
        };

        // At most 4 messages unacknowledged: batches of 2, filled while the one before loads.
        var result = await EtlTransport.FromQueue<Reading>(host.Services, queue, maxUnacknowledged: 4).To(sink, "poison").RunAsync(cancellationToken: stop.Token);

        result.Status.Should().Be(EtlRunStatus.Stopped);
        sink.Rows.Select(r => r.Id).Should().Equal(Enumerable.Range(1, 10));
        sink.Batches.Should().OnlyContain(b => b <= 2, "a batch holds at most half of maxUnacknowledged");
        var dead = await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue);
        dead.Should().ContainSingle().Which.Reason.Should().Contain("Reading");

        // Nothing is left to deliver: a sentinel sent now is the only message a second run gets (anything left on the
        // queue would come before it).
        await sender.SendAsync(queue, new Reading(11, 11));
        var again = new RecordingSink(failOnBatch: null);
        using var drained = new CancellationTokenSource(Wait);
        again.OnCommit = () =>
        {
            if (again.Rows.Any(r => r.Id == 11))
            {
                drained.Cancel();
            }
        };
        var rerun = await EtlTransport.FromQueue<Reading>(host.Services, queue).To(again, "poison").RunAsync(cancellationToken: drained.Token);
        rerun.RowsRead.Should().Be(1);
        again.Rows.Select(r => r.Id).Should().Equal(11);
    }

    [Fact]
    public async Task QueueSource_IntoAFileSink_FailsAtOnce_NamingTheSink_AndTakesNoMessage()
    {
        var queue = "to-file-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var i = 1; i <= 3; i++)
        {
            await sender.SendAsync(queue, new Reading(i, i));
        }

        using var dir = new TempDir();
        var path = dir.File("readings.csv");

        // A file sink moves its file into place only when the run completes, which a queue run never does: each
        // acknowledged message would be lost with the temporary file.
        var run = () => EtlTransport.FromQueue<Reading>(host.Services, queue).To(Csv.Write(path, Reading.Schema), "to-file").RunAsync().WaitAsync(Wait);
        (await run.Should().ThrowAsync<InvalidOperationException>()).WithMessage($"*'{path}'*durable only when the run completes*");
        File.Exists(path).Should().BeFalse();
        Directory.GetFiles(dir.Path).Should().BeEmpty("no temporary file is left");

        // Every message is still on the queue: a run into a sink that commits each batch loads all three.
        var sink = new RecordingSink(failOnBatch: null);
        using var stop = new CancellationTokenSource(Wait);
        sink.OnCommit = () =>
        {
            if (sink.Rows.Count >= 3)
            {
                stop.Cancel();
            }
        };
        await EtlTransport.FromQueue<Reading>(host.Services, queue).To(sink, "to-file").RunAsync(cancellationToken: stop.Token);
        sink.Rows.Select(r => r.Id).Should().Equal(1, 2, 3);
    }

    [Fact]
    public async Task OneMessage_ManyRows_IsAcknowledgedOnlyWithTheBatchThatHoldsItsLastRow()
    {
        var queue = "fan-out-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var i = 1; i <= 3; i++)
        {
            await sender.SendAsync(queue, new Reading(i, i));
        }

        EtlPipeline<Reading> Pipeline(RecordingSink sink) =>
            EtlTransport.FromQueue<Reading>(host.Services, queue).SelectMany(r => Enumerable.Repeat(r, 3)).To(sink, "fan-out");

        // Batches of 2: the batch that fills on a message's second row takes its third too, so the message is acknowledged
        // only once all three are committed. The second batch fails: its message is delivered again.
        var first = new RecordingSink(failOnBatch: 2);
        var failed = async () => await Pipeline(first).RunAsync(new EtlRunOptions { BatchSize = 2 }).WaitAsync(Wait);
        (await failed.Should().ThrowAsync<InvalidOperationException>()).WithMessage("commit 2 failed");

        var second = new RecordingSink(failOnBatch: null);
        using var stop = new CancellationTokenSource(Wait);
        second.OnCommit = () =>
        {
            if (first.Rows.Count + second.Rows.Count >= 9)
            {
                stop.Cancel();
            }
        };
        await Pipeline(second).RunAsync(new EtlRunOptions { BatchSize = 2 }, stop.Token);

        first.Rows.Concat(second.Rows).Select(r => r.Id).Should().Equal([1, 1, 1, 2, 2, 2, 3, 3, 3], "each message's three rows are loaded once");
        first.Batches.Should().Equal(3);
    }

    [Fact]
    public async Task ABatchThatAlwaysFails_ItsMessageIsDeadLetteredAfterMaxDeliveries()
    {
        var queue = "always-fails-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        await host.Services.GetRequiredService<IQueueSender>().SendAsync(queue, new Reading(1, 1));

        // Each run's sink fails its first batch: the message counts a failed delivery per run, and the third run
        // dead-letters it instead of handing it back again.
        for (var attempt = 1; attempt <= 3; attempt++)
        {
            var failed = async () => await EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 3)
                .To(new RecordingSink(failOnBatch: 1), "always-fails").RunAsync().WaitAsync(Wait);
            (await failed.Should().ThrowAsync<InvalidOperationException>()).WithMessage("commit 1 failed");
        }

        var dead = await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue);
        var letter = dead.Should().ContainSingle().Which;
        letter.Reason.Should().Be($"ETL job 'always-fails': the batch loaded by sink 'recording' failed on message {letter.Envelope.MessageId:N} on delivery 3 with System.InvalidOperationException: commit 1 failed");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task StoppedManyTimes_WhileHoldingMessages_NoHandBackCountsADelivery_NoneIsDeadLettered_EachIsLoadedOnce(bool rabbitMq)
    {
        const int Count = 200;
        const int Stops = 6;
        var queue = "restarts-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue, rabbitMq);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var i = 1; i <= Count; i++)
        {
            await sender.SendAsync(queue, new Reading(i, i));
        }

        // maxDeliveries 2: one failed batch is allowed, a second dead-letters. Each of the first runs stops at its first
        // commit, holding up to 40 delivered messages that no commit covers: they are handed back, as a host shutdown does.
        EtlPipeline<Reading> Pipeline(RecordingSink sink) =>
            EtlTransport.FromQueue<Reading>(host.Services, queue, maxUnacknowledged: 40, maxDeliveries: 2).To(sink, "restarts");
        var loaded = new List<Reading>();
        for (var run = 0; run < Stops; run++)
        {
            var sink = new RecordingSink(failOnBatch: null);
            using var stop = new CancellationTokenSource(Wait);
            sink.OnCommit = stop.Cancel;
            var stopped = await Pipeline(sink).RunAsync(new EtlRunOptions { BatchSize = 2 }, stop.Token);
            stopped.Status.Should().Be(EtlRunStatus.Stopped, $"run {run} stops at its first commit");
            loaded.AddRange(sink.Rows);
        }

        // One genuine failure now: had the hand-backs counted deliveries, the messages of this batch would be past
        // maxDeliveries and dead-lettered; they are handed back once more instead.
        var failing = async () => await Pipeline(new RecordingSink(failOnBatch: 1)).RunAsync(new EtlRunOptions { BatchSize = 2 }).WaitAsync(Wait);
        (await failing.Should().ThrowAsync<InvalidOperationException>()).WithMessage("commit 1 failed");

        var last = new RecordingSink(failOnBatch: null);
        using var done = new CancellationTokenSource(Wait);
        last.OnCommit = () =>
        {
            if (loaded.Count + last.Rows.Count >= Count)
            {
                done.Cancel();
            }
        };
        await Pipeline(last).RunAsync(new EtlRunOptions { BatchSize = 2 }, done.Token);
        loaded.AddRange(last.Rows);

        loaded.Select(r => r.Id).Order().Should().Equal(Enumerable.Range(1, Count), "every message is loaded exactly once across the restarts");
        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty("a message handed back on a stop was never handled, so it counts no delivery");
    }

    [Fact]
    public async Task ASecondCopyOfAHeldMessage_IsNotAcknowledgedBeforeItsCommit_SoAFailedBatchLosesNothing()
    {
        // As on RabbitMQ when a channel closes: the broker delivers a second copy of a message the run holds, and the
        // first copy's settlement can no longer reach it (the wrapper drops it). The batch then fails: the second copy must
        // have been handed back, or the message is gone.
        var queue = "copies-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue, wrap: inner => new SecondCopyTransport(inner));
        var sender = host.Services.GetRequiredService<IQueueSender>();
        await sender.SendAsync(queue, new Reading(1, 1));
        var consumed = new HashSet<string>(StringComparer.Ordinal);
        EtlPipeline<Reading> Pipeline(RecordingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue).To(sink, "copies");

        var first = new RecordingSink(failOnBatch: 1, consumed);
        var failed = async () => await Pipeline(first).RunAsync().WaitAsync(Wait);
        (await failed.Should().ThrowAsync<InvalidOperationException>()).WithMessage("commit 1 failed");

        // Bounded: with the copy acknowledged at once, the message never comes back.
        var second = new RecordingSink(failOnBatch: null, consumed);
        using var stop = new CancellationTokenSource(Wait);
        second.OnCommit = () =>
        {
            if (second.Rows.Count >= 1)
            {
                stop.Cancel();
            }
        };
        await Pipeline(second).RunAsync(cancellationToken: stop.Token);

        first.Rows.Should().BeEmpty();
        second.Rows.Select(r => r.Id).Should().Equal([1], "the copy handed back is delivered again and loaded once");
    }

    [Fact]
    public async Task ACheckThatMissesARecordedMessage_FailsTheBatch_AndTheRedeliveryIsSkipped_NoRowIsLoadedTwice()
    {
        using var dir = new TempDir();
        var queue = "missed-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        var id = Guid.NewGuid();
        var target = Sqlite.Append<Reading>(dir.Sqlite(), "readings");
        EtlPipeline<Reading> Pipeline(CheckingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue).To(sink, "missed");

        // The first run loads message 1 and records its id.
        await sender.SendAsync(queue, new Reading(1, 1), new MessageOptions { MessageId = id });
        using (var stop = new CancellationTokenSource(Wait))
        {
            (await Pipeline(new CheckingSink(target, miss: false, stop)).RunAsync(cancellationToken: stop.Token)).Status.Should().Be(EtlRunStatus.Stopped);
        }

        // Delivered again (a kill between the commit and the acknowledgement), and the check misses it: the batch records
        // the id a second time, which fails it rather than load the row again.
        await sender.SendAsync(queue, new Reading(1, 1), new MessageOptions { MessageId = id });
        using (var stop = new CancellationTokenSource(Wait))
        {
            var missed = async () => await Pipeline(new CheckingSink(target, miss: true, stop)).RunAsync(cancellationToken: stop.Token);
            (await missed.Should().ThrowAsync<InvalidOperationException>()).WithMessage($"*covers message {id:N}, which another batch already loaded (patterns_etl_consumed records it;*");
        }

        // The next run's check finds it: skipped, and message 2 behind it is loaded.
        await sender.SendAsync(queue, new Reading(2, 2));
        using (var stop = new CancellationTokenSource(Wait))
        {
            await Pipeline(new CheckingSink(target, miss: false, stop)).RunAsync(cancellationToken: stop.Token);
        }

        Db.ScalarSqlite(dir.Sqlite(), "SELECT group_concat(id, '') FROM (SELECT id FROM readings ORDER BY id)").Should().Be(12, "message 1 once, then message 2");
    }

    [Fact]
    public async Task ACheckThatMissesARecordedMessage_WithMaxDeliveries1_DeadLettersNoMessageOfTheBatch_AndLoadsEachOnce()
    {
        using var dir = new TempDir();
        var queue = "missed-once-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        var id = Guid.NewGuid();
        var target = Sqlite.Append<Reading>(dir.Sqlite(), "readings");
        EtlPipeline<Reading> Pipeline(CheckingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1).To(sink, "missed-once");

        await sender.SendAsync(queue, new Reading(1, 1), new MessageOptions { MessageId = id });
        using (var stop = new CancellationTokenSource(Wait))
        {
            (await Pipeline(new CheckingSink(target, miss: false, stop)).RunAsync(cancellationToken: stop.Token)).Status.Should().Be(EtlRunStatus.Stopped);
        }

        // A copy of message 1 (the check misses it) and message 2: the batch fails on the recorded id. Neither message is
        // at fault, so neither counts a delivery: with maxDeliveries 1 a counted failure would dead-letter both.
        await sender.SendAsync(queue, new Reading(1, 1), new MessageOptions { MessageId = id });
        await sender.SendAsync(queue, new Reading(2, 2));
        using (var stop = new CancellationTokenSource(Wait))
        {
            var missed = async () => await Pipeline(new CheckingSink(target, miss: true, stop)).RunAsync(cancellationToken: stop.Token);
            (await missed.Should().ThrowAsync<InvalidOperationException>()).WithMessage($"*covers message {id:N}*handed back without counting a delivery*");
        }

        using (var stop = new CancellationTokenSource(Wait))
        {
            await Pipeline(new CheckingSink(target, miss: false, stop)).RunAsync(cancellationToken: stop.Token);
        }

        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty();
        Db.ScalarSqlite(dir.Sqlite(), "SELECT group_concat(id, '') FROM (SELECT id FROM readings ORDER BY id)").Should().Be(12, "message 1 once, then message 2");
        Db.ScalarSqlite(dir.Sqlite(), "SELECT count(*) FROM patterns_etl_consumed").Should().Be(2);
    }

    [Fact]
    public async Task OneMessage_MoreRowsThanBatchSize_IsLoadedInOneBatchWithItsId()
    {
        // The batch that fills on one of a message's rows takes the rest of them (up to twice BatchSize), so the message
        // is recorded as consumed, and acknowledged, with all its rows in one commit.
        var queue = "split-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        await host.Services.GetRequiredService<IQueueSender>().SendAsync(queue, new Reading(1, 1));
        var consumed = new HashSet<string>(StringComparer.Ordinal);
        var sink = new RecordingSink(failOnBatch: null, consumed);
        using var stop = new CancellationTokenSource(Wait);
        sink.OnCommit = () =>
        {
            if (sink.Rows.Count >= 5)
            {
                stop.Cancel();
            }
        };

        await EtlTransport.FromQueue<Reading>(host.Services, queue).SelectMany(r => Enumerable.Repeat(r, 5)).To(sink, "split")
            .RunAsync(new EtlRunOptions { BatchSize = 3 }, stop.Token);

        sink.Batches.Should().Equal([5], "the batch that fills inside the message takes the rest of its rows");
        consumed.Should().ContainSingle("the message is recorded with the batch that holds all its rows");
    }

    [Theory]
    [InlineData(4)]
    [InlineData(5)]
    public async Task OneMessage_AsManyRowsAsABatchHolds_FailsTheRunClearly_NothingOfItIsLoaded_DeadLetteredAfterMaxDeliveries(int rows)
    {
        // BatchSize 2: a batch holds at most 4 rows. Before, a message of 4 or more rows was split across two commits and
        // recorded with the second, so a failure between them appended its first part again (at least once). It is not
        // split any more: the run fails, nothing of the message is committed, and the message counts a failed delivery.
        using var dir = new TempDir();
        var queue = "too-many-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        await sender.SendAsync(queue, new Reading(1, 1));
        var target = Sqlite.Append<Reading>(dir.Sqlite(), "readings");
        EtlPipeline<Reading> Pipeline(CheckingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .SelectMany(r => Enumerable.Range(0, r.Id == 1 ? rows : 1).Select(i => new Reading((r.Id * 10) + i, i)))
            .To(sink, "too-many");

        using (var stop = new CancellationTokenSource(Wait))
        {
            var run = async () => await Pipeline(new CheckingSink(target, miss: false, stop)).RunAsync(new EtlRunOptions { BatchSize = 2 }, stop.Token);
            (await run.Should().ThrowAsync<InvalidOperationException>())
                .WithMessage("ETL job 'too-many' reads queue:*: message * has made 4 rows so far, which fills the batch to its limit of 4 rows (twice BatchSize, which is 2; maxUnacknowledged is *).*make BatchSize at least the most rows one message makes*");
        }

        var letters = await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue);
        letters.Should().ContainSingle().Which.Reason.Should().Contain("fills the batch to its limit");

        // The next message loads; none of the first one's rows was committed.
        await sender.SendAsync(queue, new Reading(2, 2));
        using (var stop = new CancellationTokenSource(Wait))
        {
            (await Pipeline(new CheckingSink(target, miss: false, stop)).RunAsync(new EtlRunOptions { BatchSize = 2 }, stop.Token)).Status.Should().Be(EtlRunStatus.Stopped);
        }

        Db.ScalarSqlite(dir.Sqlite(), "SELECT group_concat(id, '') FROM readings").Should().Be(20, "only message 2's row");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AMessageThatFitsABatchAlone_ButNotWhatEarlierMessagesLeft_StartsAFreshBatch_AllLoadedOnce_NoneDeadLettered(bool rabbitMq)
    {
        // BatchSize 4: a batch holds at most 8 rows. Message 1 makes 2 rows; message 2 makes 7, one of them quarantined,
        // so 6 reach the loader: alone they fit, after message 1's 2 they would fill the batch to its limit. The open batch
        // is committed just before message 2, which starts a fresh batch. Before, the run failed and counted a delivery
        // against message 1 too (maxDeliveries 1: both were dead-lettered).
        var queue = "fresh-batch-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue, rabbitMq);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        await sender.SendAsync(queue, new Reading(1, 2));
        await sender.SendAsync(queue, new Reading(2, 7));
        await sender.SendAsync(queue, new Reading(3, 1));
        var consumed = new HashSet<string>(StringComparer.Ordinal);
        var sink = new RecordingSink(failOnBatch: null, consumed);
        using var stop = new CancellationTokenSource(Wait);
        sink.OnCommit = () =>
        {
            if (sink.Rows.Count >= 9)
            {
                stop.Cancel();
            }
        };

        var result = await EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .SelectMany(r => Enumerable.Range(0, (int)r.Value).Select(i => new Reading((r.Id * 10) + i, i)))
            .Validate(r => r.Id == 22 ? "rejected by the rule" : null, "id", raw: r => r.Id.ToString(System.Globalization.CultureInfo.InvariantCulture))
            .To(sink, "fresh-batch")
            .RunAsync(new EtlRunOptions { BatchSize = 4 }, stop.Token);

        result.Status.Should().Be(EtlRunStatus.Stopped);
        if (!rabbitMq)
        {
            sink.Rows.Select(r => r.Id).Should().Equal([10, 11, 20, 21, 23, 24, 25, 26, 30], "every row is loaded once, in order");
            sink.Batches.Should().Equal([2, 6, 1], "message 1's batch is committed before message 2, which takes a batch of its own");
        }
        else
        {
            // RabbitMQ hands the held messages to concurrent handlers: the stream may take them in another order.
            sink.Rows.Select(r => r.Id).Should().BeEquivalentTo([10, 11, 20, 21, 23, 24, 25, 26, 30], "every row is loaded once");
        }

        sink.Commits.Should().OnlyContain(c => c.Rows.Length <= 8, "a batch holds at most twice BatchSize");
        foreach (var message in new[] { 1, 2, 3 })
        {
            sink.Commits.Should().ContainSingle(c => c.Rows.Any(id => id / 10 == message), $"message {message}'s rows are committed together");
        }

        sink.Commits.Single(c => c.Rows.Contains(20)).Quarantined.Should().Equal([22], "message 2's quarantined row is committed once, with message 2");
        sink.Quarantined.Should().Equal([22]);
        consumed.Should().HaveCount(3, "each message is recorded once, with the commit of its rows");
        result.RowsRead.Should().Be(3);
        result.RowsLoaded.Should().Be(9);
        result.RowsInserted.Should().Be(9);
        result.RowsQuarantined.Should().Be(1);
        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty("no message is too big for a batch of its own");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AMessageWhoseBatchFillsBeforeItsLastRow_CommitsThatRowsQuarantineWithItsRows_NotWithALaterBatch(bool afterAnother)
    {
        // BatchSize 4. Message 2 makes 8 rows and its last is quarantined: its batch fills (alone, or after message 1's
        // rows moved it to a fresh batch) before that row is checked. The message is acknowledged, and recorded as consumed,
        // with the commit of its rows: a quarantined row of it that waits for a later commit is lost if the process dies
        // in between (nothing delivers the message again).
        var queue = "late-quarantine-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        if (afterAnother)
        {
            await sender.SendAsync(queue, new Reading(1, 2));
        }

        await sender.SendAsync(queue, new Reading(2, 8));
        await sender.SendAsync(queue, new Reading(3, 1));
        var consumed = new HashSet<string>(StringComparer.Ordinal);
        var sink = new RecordingSink(failOnBatch: null, consumed);
        using var stop = new CancellationTokenSource(Wait);
        sink.OnCommit = () =>
        {
            if (sink.Rows.Any(r => r.Id == 30))
            {
                stop.Cancel();
            }
        };

        var result = await EtlTransport.FromQueue<Reading>(host.Services, queue)
            .SelectMany(r => Enumerable.Range(0, (int)r.Value).Select(i => new Reading((r.Id * 10) + i, i)))
            .Validate(r => r.Id == 27 ? "rejected by the rule" : null, "id", raw: r => r.Id.ToString(System.Globalization.CultureInfo.InvariantCulture))
            .To(sink, "late-quarantine")
            .RunAsync(new EtlRunOptions { BatchSize = 4 }, stop.Token);

        result.Status.Should().Be(EtlRunStatus.Stopped);
        sink.Commits.Single(c => c.Rows.Contains(20)).Quarantined.Should().Equal([27], "message 2's quarantined row goes with the commit that acknowledges message 2");
        sink.Quarantined.Should().Equal([27], "once");
        result.RowsQuarantined.Should().Be(1);
        result.RowsLoaded.Should().Be(afterAnother ? 10 : 8);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AMessageTooBigForABatchOfItsOwn_BetweenOthers_OnlyItFailsAndIsDeadLetteredAfterMaxDeliveries_TheOthersLoadOnce(bool rabbitMq)
    {
        // BatchSize 2: a batch holds at most 4 rows. Message 2 makes 5: it cannot be loaded in one commit, so each run that
        // reaches it fails naming it. Message 1 (before it in the open batch) is committed first; message 3 is handed back
        // uncounted. Only message 2 counts failed deliveries: maxDeliveries 2 dead-letters it on the second run.
        await AnOversizedMessageIsBlamedAloneAsync(
            rabbitMq,
            "oversized",
            rows: 5,
            factor: 10,
            new EtlRunOptions { BatchSize = 2 },
            pipeline => pipeline,
            "ETL job 'oversized' reads queue:*: message * has made 4 rows so far, which fills the batch to its limit of 4 rows (twice BatchSize, which is 2; *",
            "fills the batch to its limit");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AStageThatThrowsOnOneMessagesRow_OnlyThatMessageIsBlamed_DeadLetteredAfterMaxDeliveries_TheOthersInItsBatchLoadOnce(bool rabbitMq)
    {
        // Messages 1 to 5 share the open batch; the Select throws on message 3's row, so each run fails before the batch
        // commits. The run knows the position of the row a stage failed on: only message 3 counts failed deliveries, and
        // is dead-lettered after maxDeliveries runs; the others (taken before it or after it) are handed back uncounted and
        // load once when it is gone. Before, every message of the open batch counted a failed delivery with it.
        // The in-memory queue hands messages buffered before a consumer came to one worker, one at a time (each its own
        // batch): there the messages are sent once the run has subscribed, so that they are held at once, and
        // maxDeliveries is 1 (a second run would again take them one at a time).
        var queue = "stage-poison-" + Guid.NewGuid().ToString("N");
        var (host, held) = await StartHoldingAsync(queue, rabbitMq, async to =>
        {
            for (var id = 1; id <= 5; id++)
            {
                await to.SendAsync(queue, new Reading(id, id));
            }
        });
        using var disposeHost = host;
        var sender = host.Services.GetRequiredService<IQueueSender>();

        var maxDeliveries = rabbitMq ? 3 : 1;
        var consumed = new HashSet<string>(StringComparer.Ordinal);
        var loaded = new List<int>();
        EtlPipeline<Reading> Pipeline(RecordingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: maxDeliveries)
            .Select(r => r.Id == 3 ? throw new InvalidOperationException("poison row " + r.Id) : r with { Value = r.Value * 10 })
            .To(sink, "stage-poison");

        var letters = host.Services.GetRequiredService<IDeadLetterQueue>();
        for (var attempt = 1; attempt <= maxDeliveries; attempt++)
        {
            var sink = new RecordingSink(failOnBatch: null, consumed);
            var running = Pipeline(sink).RunAsync(new EtlRunOptions { BatchSize = 100 });
            await held.SendOnceSubscribedAsync();

            var run = async () => await running.WaitAsync(Wait);
            (await run.Should().ThrowAsync<InvalidOperationException>($"run {attempt} reaches message 3")).WithMessage("poison row 3");
            loaded.AddRange(sink.Rows.Select(r => r.Id));
            if (attempt < maxDeliveries)
            {
                (await letters.PeekAsync(queue)).Should().BeEmpty($"no message has been delivered {maxDeliveries} times after run {attempt}");
            }
        }

        var letter = (await letters.PeekAsync(queue)).Should().ContainSingle("only the message whose row made the stage throw is blamed").Which;
        letter.Reason.Should().Be(
            $"ETL job 'stage-poison': stage 1 (Select) failed on message {letter.Envelope.MessageId:N} on delivery {maxDeliveries} with System.InvalidOperationException: poison row 3",
            "the reason names the stage and its place, the message, the delivery and the error");

        // A sentinel sent now comes after every message handed back.
        await sender.SendAsync(queue, new Reading(6, 6));
        var last = await RunUntilLoadedAsync(Pipeline, sentinel: 6, new EtlRunOptions { BatchSize = 100 }, consumed);
        loaded.AddRange(last.Rows.Select(r => r.Id));

        loaded.Order().Should().Equal([1, 2, 4, 5, 6], "every other message's row is loaded exactly once, nothing of message 3");
        (await letters.PeekAsync(queue)).Should().ContainSingle();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AMulticastBranchThatThrowsOnOneMessagesRow_OnlyThatMessageIsBlamed_DeadLetteredAfterMaxDeliveries_TheOthersLoadOnce_NoBranchCommitsTheFailedBatch(bool rabbitMq)
    {
        // Messages 1 to 5 share one batch; a multicast's branch 'a' maps the batch's rows and throws on message 3's row, so
        // each run fails at that batch. The batch holds rows of five messages, but the loader knows which message each row
        // came from: only message 3 counts failed deliveries and is dead-lettered after maxDeliveries runs, with a reason
        // naming the branch; the others are handed back uncounted and load once when it is gone. Before, every message of
        // the batch counted a failed delivery with it (maxDeliveries 1: all five were dead-lettered). Branch 'b' commits
        // nothing of the batch either: every branch filters and maps its part of a batch before any branch's sink writes it,
        // so a failing map commits the batch nowhere. Before, 'b' committed the batch in each run that failed on 'a' and
        // loaded messages 1, 2, 4 and 5 once per run.
        var queue = "branch-poison-" + Guid.NewGuid().ToString("N");
        var (host, held) = await StartHoldingAsync(queue, rabbitMq, async to =>
        {
            for (var id = 1; id <= 5; id++)
            {
                await to.SendAsync(queue, new Reading(id, id));
            }
        });
        using var disposeHost = host;
        var sender = host.Services.GetRequiredService<IQueueSender>();

        var maxDeliveries = rabbitMq ? 3 : 1;
        var loadedA = new List<int>();
        var loadedB = new List<int>();
        EtlPipeline<Reading> Pipeline(RecordingSink a, RecordingSink b) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: maxDeliveries)
            .Multicast(
                "branch-poison",
                branch => branch.Select(r => r.Id == 3 ? throw new InvalidOperationException("poison row " + r.Id) : r).To("a", a),
                branch => branch.To("b", b));

        var letters = host.Services.GetRequiredService<IDeadLetterQueue>();
        for (var attempt = 1; attempt <= maxDeliveries; attempt++)
        {
            var (a, b) = (new RecordingSink(failOnBatch: null), new RecordingSink(failOnBatch: null));
            var running = Pipeline(a, b).RunAsync(new EtlRunOptions { BatchSize = 100 });
            await held.SendOnceSubscribedAsync();

            var run = async () => await running.WaitAsync(Wait);
            (await run.Should().ThrowAsync<EtlBranchException>($"run {attempt} reaches message 3")).Which.Branch.Should().Be("a");
            loadedA.AddRange(a.Rows.Select(r => r.Id));
            loadedB.AddRange(b.Rows.Select(r => r.Id));
            b.Rows.Select(r => r.Id).Should().Equal(a.Rows.Select(r => r.Id), $"run {attempt} fails on branch 'a''s map of the batch that holds message 3, before any branch writes it (a batch before it, if the source sealed one, commits in both)");
            if (attempt < maxDeliveries)
            {
                (await letters.PeekAsync(queue)).Should().BeEmpty($"no message has been delivered {maxDeliveries} times after run {attempt}");
            }
        }

        var letter = (await letters.PeekAsync(queue)).Should().ContainSingle("only the message whose row made the branch throw is blamed").Which;
        letter.Reason.Should().Be(
            $"ETL job 'branch-poison': multicast branch 'a' (its Where, Select or SelectMany) failed on message {letter.Envelope.MessageId:N} on delivery {maxDeliveries} with Patterns.Etl.EtlBranchException: ETL job 'branch-poison': multicast branch 'a' failed: poison row 3");

        // A sentinel sent now comes after every message handed back.
        await sender.SendAsync(queue, new Reading(6, 6));
        var (lastA, lastB) = (new RecordingSink(failOnBatch: null), new RecordingSink(failOnBatch: null));
        using var stop = new CancellationTokenSource(Wait);
        lastA.OnCommit = () =>
        {
            if (lastA.Rows.Any(r => r.Id == 6))
            {
                stop.Cancel();
            }
        };
        (await Pipeline(lastA, lastB).RunAsync(new EtlRunOptions { BatchSize = 100 }, stop.Token)).Status.Should().Be(EtlRunStatus.Stopped);
        loadedA.AddRange(lastA.Rows.Select(r => r.Id));
        loadedB.AddRange(lastB.Rows.Select(r => r.Id));

        loadedA.Order().Should().Equal([1, 2, 4, 5, 6], "branch 'a' loads every other message's row exactly once, nothing of message 3");
        loadedB.Order().Should().Equal([1, 2, 4, 5, 6], "branch 'b' loads every other message's row exactly once too: the failed batches committed nowhere");
        (await letters.PeekAsync(queue)).Should().ContainSingle();
    }

    [Fact]
    public async Task AJoinWhoseBuildSideFails_BlamesNoMessage_NoneIsDeadLettered_TheNextRunLoadsEachOnce()
    {
        // The join reads its build side at the first left row; the build side fails. That is no message's fault: every
        // message goes back uncounted. Before, the message whose row was first was blamed, so with maxDeliveries 1 it was
        // dead-lettered (and with more, each run would dead-letter the next first message in turn).
        var queue = "build-fails-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var id = 1; id <= 3; id++)
        {
            await sender.SendAsync(queue, new Reading(id, id));
        }

        EtlPipeline<Reading> Pipeline(bool fails, RecordingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .Join(new AsyncEnumerableSource<int>(Right(fails), "right"), r => r.Id, i => i, (r, i) => r)
            .To(sink, "build-fails");

        var failing = async () => await Pipeline(fails: true, new RecordingSink(failOnBatch: null)).RunAsync().WaitAsync(Wait);
        (await failing.Should().ThrowAsync<InvalidOperationException>()).WithMessage("the dimension is unreachable");
        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty("no message is to blame for the build side");

        var sink = new RecordingSink(failOnBatch: null);
        using var stop = new CancellationTokenSource(Wait);
        sink.OnCommit = () =>
        {
            if (sink.Rows.Count >= 3)
            {
                stop.Cancel();
            }
        };
        (await Pipeline(fails: false, sink).RunAsync(options: null, stop.Token)).Status.Should().Be(EtlRunStatus.Stopped);
        sink.Rows.Select(r => r.Id).Order().Should().Equal([1, 2, 3]);

#pragma warning disable CS1998 // An iterator over a range.
        static async IAsyncEnumerable<int> Right(bool fails)
#pragma warning restore CS1998
        {
            for (var i = 1; i <= 3; i++)
            {
                yield return i;
            }

            if (fails)
            {
                throw new InvalidOperationException("the dimension is unreachable");
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task MessagesThatPassMaxBatchBytesTogether_AreCommittedInSeparateBatches_NoBatchPassesTheLimit_AllLoadedOnce(bool rabbitMq)
    {
        // MaxBatchBytes 100, each row 10 bytes, BatchSize 100 (no bound in rows here). Message 1 makes 6 rows (60 bytes),
        // message 2 makes 6 (60): together they pass the limit, so the open batch is committed just before message 2, as
        // for the bound in rows; message 3's 3 rows (30) fit beside message 2's. Before, message 2 joined message 1's
        // batch, which held 120 bytes.
        var queue = "bytes-fresh-" + Guid.NewGuid().ToString("N");
        var (host, held) = await StartHoldingAsync(queue, rabbitMq, async to =>
        {
            await to.SendAsync(queue, new Reading(1, 6));
            await to.SendAsync(queue, new Reading(2, 6));
            await to.SendAsync(queue, new Reading(3, 3));
        });
        using var disposeHost = host;

        var consumed = new HashSet<string>(StringComparer.Ordinal);
        var sink = new RecordingSink(failOnBatch: null, consumed);
        using var stop = new CancellationTokenSource(Wait);
        sink.OnCommit = () =>
        {
            if (sink.Rows.Count >= 15)
            {
                stop.Cancel();
            }
        };

        var running = EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .SelectMany(r => Enumerable.Range(0, (int)r.Value).Select(i => new Reading((r.Id * 10) + i, i)))
            .To(sink, "bytes-fresh")
            .WithRowSize(_ => 10)
            .RunAsync(new EtlRunOptions { BatchSize = 100, MaxBatchBytes = 100 }, stop.Token);
        await held.SendOnceSubscribedAsync();

        var result = await running;
        result.Status.Should().Be(EtlRunStatus.Stopped);
        sink.Commits.Should().NotContain(c => c.Rows.Length * 10 > 100, "no batch passes MaxBatchBytes");
        sink.Rows.Select(r => r.Id).Order().Should().Equal([10, 11, 12, 13, 14, 15, 20, 21, 22, 23, 24, 25, 30, 31, 32], "every row is loaded once");
        foreach (var message in new[] { 1, 2, 3 })
        {
            sink.Commits.Should().ContainSingle(c => c.Rows.Any(id => id / 10 == message), $"message {message}'s rows are committed together");
        }

        consumed.Should().HaveCount(3);
        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty("every message fits a batch of its own");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AMessageOverMaxBatchBytesOnItsOwn_BetweenOthers_FailsNamingTheLimitAndSize_DeadLetteredAfterMaxDeliveries_TheOthersLoadOnce(bool rabbitMq)
    {
        // MaxBatchBytes 100, each row 10 bytes. Message 2 makes 11 rows (110 bytes): it cannot be loaded in one batch, so
        // each run that reaches it fails naming the limit and the size. Message 1 is committed first; message 3 is handed
        // back uncounted. Only message 2 counts failed deliveries: maxDeliveries 2 dead-letters it on the second run.
        // Before, message 2 was loaded in a batch of 110 bytes or more.
        await AnOversizedMessageIsBlamedAloneAsync(
            rabbitMq,
            "bytes-oversized",
            rows: 11,
            factor: 100,
            new EtlRunOptions { BatchSize = 100, MaxBatchBytes = 100 },
            pipeline => pipeline.WithRowSize(_ => 10),
            "ETL job 'bytes-oversized' reads queue:*: message * has made 11 rows of 110 bytes so far, more than MaxBatchBytes (100 bytes;*make MaxBatchBytes at least the size of the largest message's rows*",
            "110 bytes so far, more than MaxBatchBytes (100 bytes",
            sink => sink.Commits.Should().NotContain(c => c.Rows.Length * 10 > 100, "no batch passes MaxBatchBytes"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ADistinctByPastItsBudget_CommitsTheMessagesBeforeTheOneItFailedOn_SoTheNextRunGoesOn_EachLoadedOnce_NoneDeadLettered(bool rabbitMq)
    {
        // 20 messages of one key each; the DistinctBy holds 11 keys in its budget and fails at the 12th message of a run.
        // That is no message's fault, and the run commits the 11 messages before it, so the next run (whose keys start
        // empty) goes on from there. Before, the open batch was dropped with the failure: with the 20 messages taken at
        // once, every run failed at its 12th message having committed nothing, and no message was ever acknowledged.
        var queue = "dedupe-progress-" + Guid.NewGuid().ToString("N");
        var (host, held) = await StartHoldingAsync(queue, rabbitMq, async to =>
        {
            for (var i = 1; i <= 20; i++)
            {
                await to.SendAsync(queue, new Reading(i, i));
            }
        });
        using var disposeHost = host;
        var sender = host.Services.GetRequiredService<IQueueSender>();

        EtlPipeline<Reading> Pipeline(RecordingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxUnacknowledged: 100, maxDeliveries: 1)
            .DistinctBy(r => r.Id, maxBytes: 400)
            .To(sink, "dedupe-progress");

        var first = new RecordingSink(failOnBatch: null);
        var running = Pipeline(first).RunAsync();
        await held.SendOnceSubscribedAsync();

        var run = async () => await running.WaitAsync(Wait);
        await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>();
        first.Rows.Should().HaveCount(11, "the messages before the one the budget failed on are committed");
        var letters = host.Services.GetRequiredService<IDeadLetterQueue>();
        (await letters.PeekAsync(queue)).Should().BeEmpty("no message is to blame for the budget");

        var second = new RecordingSink(failOnBatch: null);
        using var stop = new CancellationTokenSource(Wait);
        second.OnCommit = () =>
        {
            if (second.Rows.Count >= 9)
            {
                stop.Cancel();
            }
        };
        (await Pipeline(second).RunAsync(options: null, stop.Token)).Status.Should().Be(EtlRunStatus.Stopped);
        first.Rows.Concat(second.Rows).Select(r => r.Id).Order().Should().Equal(Enumerable.Range(1, 20), "each message is loaded once");
        (await letters.PeekAsync(queue)).Should().BeEmpty();
    }

    [Fact]
    public async Task AMessageWhoseOwnRowsPassADistinctBysBudget_IsBlamed_AndDeadLetteredAfterMaxDeliveries()
    {
        // One message makes 13 rows of distinct keys, more than the DistinctBy's budget holds, at the start of a run: its
        // rows alone passed the budget, so it is blamed (dead-lettered with maxDeliveries 1). Before, no message was
        // blamed: every run failed on it, and it was never acknowledged nor dead-lettered.
        var queue = "dedupe-alone-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        await sender.SendAsync(queue, new Reading(13, 13));

        var sink = new RecordingSink(failOnBatch: null);
        var run = () => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .SelectMany(r => Enumerable.Range(1, r.Id).Select(i => new Reading(i, r.Value)))
            .DistinctBy(r => r.Id, maxBytes: 400)
            .To(sink, "dedupe-alone")
            .RunAsync().WaitAsync(Wait);

        await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>();
        sink.Rows.Should().BeEmpty();
        var letter = (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().ContainSingle().Which;
        letter.Reason.Should().StartWith("ETL job 'dedupe-alone': stage 2 (DistinctBy) failed on message ");
    }

    [Fact]
    public async Task ExpiredConsumedIds_ArePrunedInBoundedChunks_EachBatchAgainWhileAChunkWasFull()
    {
        using var dir = new TempDir();
        var queue = "prune-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        var target = Sqlite.Append<Reading>(dir.Sqlite(), "readings");
        EtlPipeline<Reading> Pipeline(CheckingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue).To(sink, "prune");

        // 25,000 ids recorded long ago (consumed_at 0: past any retention).
        using (var connection = new Microsoft.Data.Sqlite.SqliteConnection(dir.Sqlite()))
        {
            connection.Open();
            using var transaction = connection.BeginTransaction();
            using var command = connection.CreateCommand();
            command.CommandText =
                "CREATE TABLE IF NOT EXISTS patterns_etl_consumed (job TEXT NOT NULL, partition TEXT NOT NULL, message_id TEXT NOT NULL, consumed_at INTEGER NOT NULL, PRIMARY KEY (job, partition, message_id)) WITHOUT ROWID;" +
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25000) INSERT INTO patterns_etl_consumed SELECT 'prune', '', 'old' || i, 0 FROM n;";
            command.ExecuteNonQuery();
            transaction.Commit();
        }

        long Expired() => Db.ScalarSqlite(dir.Sqlite(), "SELECT COUNT(*) FROM patterns_etl_consumed WHERE consumed_at = 0");

        // A writer's first batch prunes one chunk of 10,000.
        await sender.SendAsync(queue, new Reading(1, 1));
        using (var stop = new CancellationTokenSource(Wait))
        {
            await Pipeline(new CheckingSink(target, miss: false, stop)).RunAsync(new EtlRunOptions { BatchSize = 1 }, stop.Token);
        }

        Expired().Should().Be(15_000);

        // A full chunk makes the next batch prune again (not an hour later): two batches take the rest.
        await sender.SendAsync(queue, new Reading(2, 2));
        await sender.SendAsync(queue, new Reading(3, 3));
        using (var stop = new CancellationTokenSource(Wait))
        {
            await Pipeline(new CheckingSink(target, miss: false, stop, batches: 2)).RunAsync(new EtlRunOptions { BatchSize = 1 }, stop.Token);
        }

        Expired().Should().Be(0);
        Db.ScalarSqlite(dir.Sqlite(), "SELECT COUNT(*) FROM patterns_etl_consumed").Should().Be(3, "the ids of the three messages just loaded stay");
        Db.ScalarSqlite(dir.Sqlite(), "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'patterns_etl_consumed_at'").Should().Be(1);
    }

    [Fact]
    public async Task QueueSource_ThenOrderBy_FailsWithAClearError()
    {
        var queue = "sorted-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var run = () => EtlTransport.FromQueue<Reading>(host.Services, queue)
            .OrderBy(r => r.Id, Reading.Schema)
            .To(new RecordingSink(failOnBatch: null), "sorted")
            .RunAsync().WaitAsync(Wait);

        (await run.Should().ThrowAsync<InvalidOperationException>()).WithMessage("*acknowledged with the batch that loads them*OrderBy or Aggregate*");
    }

    [Fact]
    public async Task QueueSource_ThenDistinctByPastItsBudget_FailsInsteadOfSpilling()
    {
        // An int key costs 4 + 32 bytes: 12 keys hold 432 bytes, past 400; the 13th key would spill, which a queue's rows cannot.
        var queue = "dedupe-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var i = 1; i <= 20; i++)
        {
            await sender.SendAsync(queue, new Reading(i, i));
        }

        var sink = new RecordingSink(failOnBatch: null);
        var run = () => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .DistinctBy(r => r.Id, maxBytes: 400)
            .To(sink, "dedupe")
            .RunAsync().WaitAsync(Wait);

        var error = (await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>()).Which;
        error.Message.Should().StartWith("ETL job 'dedupe' stopped: the DistinctBy stage would hold 12 keys in about 432 bytes, more than its memory budget of 400 bytes (maxBytes).");
        error.Stage.Should().Be("DistinctBy");

        // Every message's keys filled the budget, not the last one's: none is blamed (before, with maxDeliveries 1, the
        // message whose key passed it was dead-lettered).
        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty();
    }

    [Fact]
    public async Task QueueSource_ThenJoinPastItsBuildBudget_FailsInsteadOfSpilling()
    {
        // An int right row costs 4 + 32 bytes: 12 rows hold 432 bytes, past 400; the join would spill, which a queue's rows cannot.
        var queue = "join-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var i = 1; i <= 5; i++)
        {
            await sender.SendAsync(queue, new Reading(i, i));
        }

        var right = new AsyncEnumerableSource<int>(Ints(100), "right");
        var run = () => EtlTransport.FromQueue<Reading>(host.Services, queue)
            .Join(right, r => r.Id, i => i, (r, i) => r, maxBuildBytes: 400)
            .To(new RecordingSink(failOnBatch: null), "joined")
            .RunAsync().WaitAsync(Wait);

        var error = (await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>()).Which;
        error.Message.Should().StartWith("ETL job 'joined' stopped: the Join stage would hold 12 rows of its build side 'right' in about 432 bytes, more than its memory budget of 400 bytes (maxBuildBytes). A queue or subscription source cannot spill");
        error.Stage.Should().Be("Join");

#pragma warning disable CS1998 // An iterator over a range.
        static async IAsyncEnumerable<int> Ints(int count)
#pragma warning restore CS1998
        {
            for (var i = 0; i < count; i++)
            {
                yield return i;
            }
        }
    }

    private static async Task<IHost> StartAsync(string queue, bool rabbitMq = false, Func<MessageTransport, MessageTransport>? wrap = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.Logging.ClearProviders();
        var broker = Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ");
        if (rabbitMq)
        {
            builder.AddPatterns(p => p.UseRabbitMq(o =>
            {
                o.Uri = new Uri(broker is { Length: > 0 } ? broker : "amqp://guest:guest@127.0.0.1:5672/");
                o.NamePrefix = $"test.etlsource.{Guid.NewGuid():N}"[..28] + ".";
            }));

            // The capacity the source declares.
            builder.AddMessageQueue(q => q.AddQueue(queue, o => o.Capacity = 10_000));
        }
        else if (wrap is not null)
        {
            builder.AddPatterns(p => p.UseTransport(sp => wrap(InMemoryTransport.Create(timeProvider: sp.GetRequiredService<TimeProvider>()))));
            builder.AddMessageQueue(q => q.AddQueue(queue));
        }
        else
        {
            builder.AddPatterns(p => p.UseInMemory());
            builder.AddMessageQueue(q => q.AddQueue(queue));
        }

        var host = builder.Build();
        try
        {
            await host.StartAsync();
        }
        catch (Exception ex) when (rabbitMq && broker is not { Length: > 0 })
        {
            host.Dispose();
            Assert.Skip($"RabbitMQ is not reachable (PATTERNS_RABBITMQ): {ex.Message}");
        }

        return host;
    }

    public sealed record Reading(int Id, decimal Value) : IEtlRecord<Reading>
    {
        public static EtlSchema<Reading> Schema { get; } =
            EtlSchema.For(r => new Reading(r.Int32(0), r.Decimal(1))).Column("id", r => r.Id).Column("value", r => r.Value);
    }

    /// <summary>A sink that stores rows and quarantine in one "commit" per batch, and can fail one commit.</summary>
    private sealed class RecordingSink(int? failOnBatch, HashSet<string>? consumed = null) : EtlSink<Reading>
    {
        private readonly Lock _gate = new();

        /// <summary>Gets the consumed-id record (shared by runs, as a table is), or null when the sink keeps none.</summary>
        public HashSet<string>? Consumed { get; } = consumed;

        public int? FailOnBatch { get; } = failOnBatch;

        public List<Reading> Rows { get; } = [];

        public List<int> Quarantined { get; } = [];

        public List<int> Batches { get; } = [];

        /// <summary>Gets each commit that loaded rows: its rows' ids and the raw ids of the rows it quarantined.</summary>
        public List<(int[] Rows, int[] Quarantined)> Commits { get; } = [];

        public Action? OnCommit { get; set; }

        public override string Name => "recording";

        public override ValueTask<EtlSinkWriter<Reading>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer(this));

        private sealed class Writer(RecordingSink sink) : EtlSinkWriter<Reading>
        {
            private int _batch;

            public override bool StoresQuarantine => true;

            public override bool StoresConsumed => sink.Consumed is not null;

            public override ValueTask<IReadOnlySet<string>> ReadConsumedAsync(IReadOnlyList<string> messageIds, CancellationToken cancellationToken)
            {
                lock (sink._gate)
                {
                    return new(messageIds.Where(sink.Consumed!.Contains).ToHashSet(StringComparer.Ordinal));
                }
            }

            public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<Reading> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                if (rows.Length > 0 && ++_batch == sink.FailOnBatch)
                {
                    throw new InvalidOperationException($"commit {_batch} failed");
                }

                lock (sink._gate)
                {
                    sink.Rows.AddRange(rows.ToArray());
                    sink.Consumed?.UnionWith(commit.Consumed);
                    var quarantined = commit.Quarantined.Select(q => int.Parse(q.Raw!, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
                    sink.Quarantined.AddRange(quarantined);
                    if (rows.Length > 0)
                    {
                        sink.Batches.Add(rows.Length);
                        sink.Commits.Add(([.. rows.ToArray().Select(r => r.Id)], quarantined));
                    }
                }

                sink.OnCommit?.Invoke();
                return new(new EtlLoadCounts(rows.Length, 0, 0));
            }

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => WriteAsync(ReadOnlyMemory<Reading>.Empty, commit, cancellationToken);
        }
    }

    /// <summary>
    /// Delivers each message's first delivery twice, as RabbitMQ does after a channel closes: the first copy's settlement is
    /// dropped (its channel is gone), the second copy's reaches the queue.
    /// </summary>
    private sealed class SecondCopyTransport(MessageTransport inner) : MessageTransport
    {
        private readonly HashSet<Guid> _copied = [];

        public override string SystemName => inner.SystemName;

        public override bool IsInProcess => inner.IsInProcess;

        public override int MaxPayloadBytes => inner.MaxPayloadBytes;

        public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) => inner.DeclareQueueAsync(queue, settings, cancellationToken);

        public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default) => inner.SendAsync(queue, envelope, cancellationToken);

        public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default) => inner.PublishAsync(topic, envelope, cancellationToken);

        public override ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            inner.SubscribeAsync(request, async (envelope, ct) =>
            {
                bool copy;
                lock (_copied)
                {
                    copy = _copied.Add(envelope.MessageId);
                }

                if (copy)
                {
                    _ = handler(envelope, ct).AsTask();
                }

                return await handler(envelope, ct).ConfigureAwait(false);
            }, cancellationToken);

        public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) => inner.PeekDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) => inner.ReplayDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) => inner.PurgeDeadLettersAsync(queue, cancellationToken);

        public override ValueTask DisposeAsync() => inner.DisposeAsync();
    }

    /// <summary>A transport that reports when a subscription has been made.</summary>
    private sealed class SignallingTransport(MessageTransport inner, TaskCompletionSource subscribed) : MessageTransport
    {
        public override string SystemName => inner.SystemName;

        public override bool IsInProcess => inner.IsInProcess;

        public override int MaxPayloadBytes => inner.MaxPayloadBytes;

        public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) => inner.DeclareQueueAsync(queue, settings, cancellationToken);

        public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default) => inner.SendAsync(queue, envelope, cancellationToken);

        public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default) => inner.PublishAsync(topic, envelope, cancellationToken);

        public override async ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default)
        {
            var subscription = await inner.SubscribeAsync(request, handler, cancellationToken).ConfigureAwait(false);
            subscribed.TrySetResult();
            return subscription;
        }

        public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) => inner.PeekDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) => inner.ReplayDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) => inner.PurgeDeadLettersAsync(queue, cancellationToken);

        public override ValueTask DisposeAsync() => inner.DisposeAsync();
    }

    /// <summary>A table sink whose check before a batch can miss every recorded id; it stops its run after some batches with rows.</summary>
    private sealed class CheckingSink(EtlSink<Reading> inner, bool miss, CancellationTokenSource stop, int batches = 1) : EtlSink<Reading>
    {
        public override string Name => inner.Name;

        public override async ValueTask<EtlSinkWriter<Reading>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) =>
            new Writer(await inner.OpenAsync(context, cancellationToken), miss, stop, batches);

        private sealed class Writer(EtlSinkWriter<Reading> inner, bool miss, CancellationTokenSource stop, int batches) : EtlSinkWriter<Reading>
        {
            private int _written;

            public override bool StoresBookmarks => inner.StoresBookmarks;

            public override bool StoresQuarantine => inner.StoresQuarantine;

            public override bool StoresConsumed => inner.StoresConsumed;

            public override ValueTask<IReadOnlySet<string>> ReadConsumedAsync(IReadOnlyList<string> messageIds, CancellationToken cancellationToken) =>
                miss ? new(new HashSet<string>()) : inner.ReadConsumedAsync(messageIds, cancellationToken);

            public override ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken) => inner.ReadBookmarkAsync(cancellationToken);

            public override async ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<Reading> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                var counts = await inner.WriteAsync(rows, commit, cancellationToken);
                if (rows.Length > 0 && ++_written == batches)
                {
                    await stop.CancelAsync();
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
