using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Queues;

namespace Patterns.Etl.Tests;

/// <summary>
/// The queue source acknowledges a message only once the batch that includes it has committed at the sink: a run whose
/// sink fails leaves every message of the batches it did not commit (and of the rows behind them) on the queue, and the
/// next run loads each of them once.
/// </summary>
public sealed class TransportSourceTests
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
        dead.Should().ContainSingle().Which.Reason.Should().Contain("failed on the batch that includes this message, delivered 3 time(s)").And.Contain("commit 1 failed");
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
        var run = () => EtlTransport.FromQueue<Reading>(host.Services, queue)
            .DistinctBy(r => r.Id, maxBytes: 400)
            .To(sink, "dedupe")
            .RunAsync().WaitAsync(Wait);

        var error = (await run.Should().ThrowAsync<EtlMemoryBudgetExceededException>()).Which;
        error.Message.Should().StartWith("ETL job 'dedupe' stopped: the DistinctBy stage would hold 12 keys in about 432 bytes, more than its memory budget of 400 bytes (maxBytes).");
        error.Stage.Should().Be("DistinctBy");
    }

    private static async Task<IHost> StartAsync(string queue)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.Logging.ClearProviders();
        builder.AddPatterns(p => p.UseInMemory());
        builder.AddMessageQueue(q => q.AddQueue(queue));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    public sealed record Reading(int Id, decimal Value) : IEtlRecord<Reading>
    {
        public static EtlSchema<Reading> Schema { get; } =
            EtlSchema.For(r => new Reading(r.Int32(0), r.Decimal(1))).Column("id", r => r.Id).Column("value", r => r.Value);
    }

    /// <summary>A sink that stores rows and quarantine in one "commit" per batch, and can fail one commit.</summary>
    private sealed class RecordingSink(int? failOnBatch) : EtlSink<Reading>
    {
        private readonly Lock _gate = new();

        public int? FailOnBatch { get; } = failOnBatch;

        public List<Reading> Rows { get; } = [];

        public List<int> Quarantined { get; } = [];

        public List<int> Batches { get; } = [];

        public Action? OnCommit { get; set; }

        public override string Name => "recording";

        public override ValueTask<EtlSinkWriter<Reading>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer(this));

        private sealed class Writer(RecordingSink sink) : EtlSinkWriter<Reading>
        {
            private int _batch;

            public override bool StoresQuarantine => true;

            public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<Reading> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                if (rows.Length > 0 && ++_batch == sink.FailOnBatch)
                {
                    throw new InvalidOperationException($"commit {_batch} failed");
                }

                lock (sink._gate)
                {
                    sink.Rows.AddRange(rows.ToArray());
                    sink.Quarantined.AddRange(commit.Quarantined.Select(q => int.Parse(q.Raw!, System.Globalization.CultureInfo.InvariantCulture)));
                    if (rows.Length > 0)
                    {
                        sink.Batches.Add(rows.Length);
                    }
                }

                sink.OnCommit?.Invoke();
                return new(new EtlLoadCounts(rows.Length, 0, 0));
            }

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => WriteAsync(ReadOnlyMemory<Reading>.Empty, commit, cancellationToken);
        }
    }
}
