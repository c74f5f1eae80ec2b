using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Patterns.Batching;
using Patterns.Core.Tests.Queues;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.Testing;
using Patterns.Transport;

namespace Patterns.Core.Tests.Batching;

public sealed record Reading(int Sensor, double Value);

public sealed class ReadingBatchHandler(ReadingLog log) : IBatchHandler<Reading>
{
    public ValueTask HandleAsync(Batch<Reading> batch, CancellationToken cancellationToken)
    {
        log.Add(batch.ToArray(), batch.Envelopes.ToArray().Select(e => e.MessageId).ToArray());
        return default;
    }
}

public sealed class ReadingLog
{
    // One lock for the count and the wanted count: with a volatile write of one and a read of the other on each side, both
    // could read the old value (a store may be ordered after a later load), and the wait would never be signalled.
    private readonly Lock _gate = new();
    private readonly ConcurrentQueue<(Reading[] Items, Guid[] Ids)> _batches = new();
    private readonly TaskCompletionSource _signal = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _items;
    private int _want = int.MaxValue;

    public IReadOnlyCollection<(Reading[] Items, Guid[] Ids)> Batches => _batches;

    public void Add(Reading[] items, Guid[] ids)
    {
        _batches.Enqueue((items, ids));
        lock (_gate)
        {
            _items += items.Length;
            if (_items < _want)
            {
                return;
            }
        }

        _signal.TrySetResult();
    }

    public Task WaitForItemsAsync(int count)
    {
        lock (_gate)
        {
            _want = count;
            if (_items >= count)
            {
                return Task.CompletedTask;
            }
        }

        return _signal.Task.WaitAsync(TestHost.Wait);
    }
}

public sealed class BatchConsumerTests
{
    [Fact]
    public async Task AddBatchHandler_Queue_FlushesByCountThenByAgeAndAcksEveryMessage()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var batches = new ConcurrentQueue<int[]>();
        var handled = 0;
        var allHandled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(
            b => b.AddBatching(x => x.AddBatchHandler<Job>(
                TransportAddress.Queue("jobs"),
                (batch, _) =>
                {
                    batches.Enqueue(batch.ToArray().Select(j => j.Id).ToArray());
                    if (Interlocked.Add(ref handled, batch.Count) == 250)
                    {
                        allHandled.SetResult();
                    }

                    return default;
                },
                o => { o.MaxCount = 100; o.MaxAge = TimeSpan.FromSeconds(2); })),
            time);
        var sender = host.Services.GetRequiredService<IQueueSender>();

        for (var i = 0; i < 250; i++)
        {
            await sender.SendAsync("jobs", new Job(i));
        }

        await host.Harness().WaitForDeliveriesAsync(200).WaitAsync(TestHost.Wait);
        batches.Should().HaveCount(2).And.OnlyContain(b => b.Length == 100, "two batches fill by count");
        // The last 50 reach the consumer one by one; each time a batch is open, its age flushes it.
        while (!allHandled.Task.IsCompleted)
        {
            var timer = time.WaitForPendingTimersAsync();
            await Task.WhenAny(allHandled.Task, timer).WaitAsync(TestHost.Wait);
            if (timer.IsCompleted && !allHandled.Task.IsCompleted)
            {
                fake.Advance(TimeSpan.FromSeconds(2));
            }
        }

        await host.Harness().WaitForDeliveriesAsync(250).WaitAsync(TestHost.Wait);

        batches.Skip(2).Should().OnlyContain(b => b.Length < 100, "the rest is flushed by age");
        batches.Skip(2).Sum(b => b.Length).Should().Be(50);
        batches.SelectMany(b => b).Order().Should().Equal(Enumerable.Range(0, 250));
        host.Harness().Deliveries.Should().OnlyContain(d => d.Outcome == SettlementKind.Ack);
        await host.StopAsync();
    }

    [Fact]
    public async Task AddBatchHandler_MoreMessagesThanTheQueueBuffers_BatchesFillByCountUntilTheTail()
    {
        // The clock never moves, so no batch closes by age. The consumer's first worker used to buffer up to the whole
        // capacity (1,024) on its own lane and hand the batcher one message at a time: once the other workers ran dry,
        // every batch waited out MaxAge with one message in it, and here the run stalled near 1,200 messages. Now each
        // of the 200 workers' lanes holds 6, and batches fill by count until the tail: a batch can only wait when fewer
        // than 100 lanes still hold messages, so at most 99 lanes of 6 plus the one each worker holds (693) remain.
        const int Messages = 3_000;
        const int FilledByCount = Messages - (99 * 7);
        var time = new FakeTimeProvider();
        var batches = new ConcurrentQueue<int>();
        var handled = 0;
        var enough = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(
            b => b.AddBatching(x => x.AddBatchHandler<Job>(
                TransportAddress.Queue("bulk"),
                (batch, _) =>
                {
                    batches.Enqueue(batch.Count);
                    if (Interlocked.Add(ref handled, batch.Count) >= FilledByCount)
                    {
                        enough.TrySetResult();
                    }

                    return default;
                },
                o => { o.MaxCount = 100; o.MaxAge = TimeSpan.FromSeconds(1); })),
            time);
        var sender = host.Services.GetRequiredService<IQueueSender>();

        var sending = Task.Run(async () =>
        {
            for (var i = 0; i < Messages; i++)
            {
                await sender.SendAsync("bulk", new Job(i));
            }
        });

        await enough.Task.WaitAsync(TestHost.Wait);
        await sending.WaitAsync(TestHost.Wait);
        var beforeStop = batches.ToArray();
        await host.StopAsync();

        beforeStop.Should().OnlyContain(n => n == 100, "no batch closed by age: the clock never moved");
        Volatile.Read(ref handled).Should().Be(Messages, "stopping flushes the tail");
    }

    [Fact]
    public async Task AddBatchHandler_ItemsMarkedFailed_DeadLetteredOneByOneAndTheRestAcked()
    {
        var attempts = new ConcurrentDictionary<int, int>();
        using var host = await TestHost.StartAsync(b => b.AddBatching(x => x.AddBatchHandler<Job>(
            TransportAddress.Queue("work"),
            (batch, _) =>
            {
                for (var i = 0; i < batch.Count; i++)
                {
                    attempts.AddOrUpdate(batch[i].Id, 1, (_, n) => n + 1);
                    if (batch[i].Id % 3 == 0)
                    {
                        batch.Fail(i, new InvalidOperationException($"job {batch[i].Id} is poison"));
                    }
                }

                return default;
            },
            o => { o.MaxCount = 10; o.MaxAge = Timeout.InfiniteTimeSpan; o.Retry!.Delay = TimeSpan.Zero; o.Retry.MaxRetryAttempts = 2; })));
        var sender = host.Services.GetRequiredService<IQueueSender>();

        for (var i = 1; i <= 10; i++)
        {
            await sender.SendAsync("work", new Job(i));
        }

        await host.Harness().WaitForDeliveriesAsync(10).WaitAsync(TestHost.Wait);
        var dead = await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "work", 3);

        dead.Select(d => ((Job)d.Envelope.Body!).Id).Order().Should().Equal(3, 6, 9);
        dead.Should().OnlyContain(d => d.ExceptionType == typeof(InvalidOperationException).FullName && d.Reason.Contains("after 3 attempt(s)"));
        dead.Select(d => d.ExceptionMessage).Should().BeEquivalentTo("job 3 is poison", "job 6 is poison", "job 9 is poison");
        host.Harness().Deliveries.Count(d => d.Outcome == SettlementKind.Ack).Should().Be(7);
        attempts.Where(a => a.Key % 3 == 0).Should().OnlyContain(a => a.Value == 3, "one attempt and two retries");
        attempts.Where(a => a.Key % 3 != 0).Should().OnlyContain(a => a.Value == 1, "only failed items are retried");
    }

    /// <summary>
    /// A batch handler that throws <see cref="Patterns.Messaging.HandlerStoppedException"/> while its host is not stopping
    /// fails its messages like any other exception (released uncounted, they could come back forever): with no redeliveries
    /// allowed they are dead-lettered. It is not retried in process. (The release during a stop:
    /// <c>HandlerStoppedTests.Batch_HandlerStoppedWhileItsHostStops_ReleasedUncounted_NotRetried_NorDeadLettered</c>.)
    /// </summary>
    [Fact]
    public async Task AddBatchHandler_HandlerStoppedWhileTheHostRuns_IsAFailure_DeadLettered_NotRetried()
    {
        var calls = 0;
        var looped = new TaskCompletionSource<IReadOnlyList<DeadLetterMessage>>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(b => b.AddBatching(x => x.AddBatchHandler<Job>(
            TransportAddress.Queue("stopped-batch"),
            (batch, _) =>
            {
                if (Interlocked.Increment(ref calls) >= 5)
                {
                    // Bounded: without counting it would never end.
                    looped.TrySetResult([]);
                    return default;
                }

                throw new Patterns.Messaging.HandlerStoppedException("not stopping at all");
            },
            o => { o.MaxCount = 1; o.MaxAge = Timeout.InfiniteTimeSpan; o.MaxRedeliveries = 0; o.Retry!.Delay = TimeSpan.Zero; o.Retry.MaxRetryAttempts = 2; })));

        await host.Services.GetRequiredService<IQueueSender>().SendAsync("stopped-batch", new Job(1));
        var deadLettered = DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "stopped-batch", 1);
        var letters = await (await Task.WhenAny(deadLettered, looped.Task)).WaitAsync(TestHost.Wait);

        letters.Should().ContainSingle("the message was dead-lettered, not handed back uncounted again and again");
        Volatile.Read(ref calls).Should().Be(1, "a stopped batch is not retried in process");
    }

    [Fact]
    public async Task AddBatchHandler_SubscriptionWithHandlerType_ReceivesPublishedMessagesWithEnvelopes()
    {
        using var host = await TestHost.StartAsync(b =>
        {
            b.Services.AddSingleton<ReadingLog>();
            b.AddBatching(x => x.AddBatchHandler<Reading, ReadingBatchHandler>(TransportAddress.Topic("sensors.*"), o =>
            {
                o.MaxCount = 5;
                o.MaxAge = Timeout.InfiniteTimeSpan;
            }));
        });
        var publisher = host.Services.GetRequiredService<IPublisher>();
        var log = host.Services.GetRequiredService<ReadingLog>();

        for (var i = 0; i < 20; i++)
        {
            await publisher.PublishAsync($"sensors.s{i % 4}", new Reading(i % 4, i));
        }

        await log.WaitForItemsAsync(20);
        log.Batches.Should().HaveCount(4).And.OnlyContain(b => b.Items.Length == 5 && b.Ids.Length == 5 && b.Ids.All(id => id != Guid.Empty));
        log.Batches.SelectMany(b => b.Items).Select(r => r.Value).Order().Should().Equal(Enumerable.Range(0, 20).Select(i => (double)i));
        host.Harness().Deliveries.Should().OnlyContain(d => d.ConsumerGroup == "sensors.*:ReadingBatchHandler");
    }

    [Fact]
    public async Task AddBatchHandler_Queue_BatchesFollowTheOrderTheMessagesWereSent()
    {
        // A worker per lane let one that started late hand its lane's first message out after the others had handed out
        // a whole batch more (the Streaming sample's poison reading moved from the first batch to the last).
        var batches = new ConcurrentQueue<int[]>();
        var handled = 0;
        var allHandled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(b => b.AddBatching(x => x.AddBatchHandler<Job>(
            TransportAddress.Queue("in-order"),
            (batch, _) =>
            {
                batches.Enqueue(batch.ToArray().Select(j => j.Id).ToArray());
                if (Interlocked.Add(ref handled, batch.Count) == 300)
                {
                    allHandled.TrySetResult();
                }

                return default;
            },
            o => { o.MaxCount = 100; o.MaxAge = Timeout.InfiniteTimeSpan; })));
        var sender = host.Services.GetRequiredService<IQueueSender>();

        for (var i = 0; i < 300; i++)
        {
            await sender.SendAsync("in-order", new Job(i));
        }

        await allHandled.Task.WaitAsync(TestHost.Wait);
        batches.Select(b => (b[0], b[^1], b.Length)).Should().Equal([(0, 99, 100), (100, 199, 100), (200, 299, 100)]);
        batches.SelectMany(b => b).Should().Equal(Enumerable.Range(0, 300), "one worker hands the messages out in send order");
    }

    [Fact]
    public async Task AddBatchHandler_MessagesQueuedBehindOneWorker_StillFillBatchesByCount()
    {
        // Messages of one partition key all go to one worker's lane on the in-memory transport. That worker used to wait
        // for each delivery's settlement before it handed out the next one, while the settlement waited for the batch to
        // fill: the batch held the first message and, with no MaxAge, waited for ever for the ones queued behind it. (The
        // same happened without keys when a worker that started late took several messages of the tail at once.)
        var batches = new ConcurrentQueue<int[]>();
        var handled = 0;
        var allHandled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(b => b.AddBatching(x => x.AddBatchHandler<Job>(
            TransportAddress.Queue("one-key"),
            (batch, _) =>
            {
                batches.Enqueue(batch.ToArray().Select(j => j.Id).ToArray());
                if (Interlocked.Add(ref handled, batch.Count) == 6)
                {
                    allHandled.TrySetResult();
                }

                return default;
            },
            o => { o.MaxCount = 3; o.MaxAge = Timeout.InfiniteTimeSpan; })));
        var sender = host.Services.GetRequiredService<IQueueSender>();

        for (var i = 0; i < 6; i++)
        {
            await sender.SendAsync("one-key", new Job(i), new Patterns.Messaging.MessageOptions { PartitionKey = "k" });
        }

        await allHandled.Task.WaitAsync(TestHost.Wait);
        batches.Select(b => string.Join(",", b)).Should().Equal(["0,1,2", "3,4,5"], "one key's messages fill the batches in order");
        await host.Harness().WaitForDeliveriesAsync(6).WaitAsync(TestHost.Wait);
        host.Harness().Deliveries.Should().OnlyContain(d => d.Outcome == SettlementKind.Ack);
    }

    [Fact]
    public async Task StopAsync_OpenBatches_FlushedAndHandledBeforeTheHostStops()
    {
        var handled = new ConcurrentQueue<int>();
        Batcher<int>? batcher = null;
        using var host = await TestHost.StartAsync(b => b.AddBatching(x => x
            .AddBatchHandler<Job>(
                TransportAddress.Queue("slow"),
                (batch, _) =>
                {
                    foreach (var job in batch)
                    {
                        handled.Enqueue(job.Id);
                    }

                    return default;
                },
                o => { o.MaxCount = 100; o.MaxAge = Timeout.InfiniteTimeSpan; })
            .AddBatcher<int>(
                (batch, _) =>
                {
                    foreach (var i in batch)
                    {
                        handled.Enqueue(1000 + i);
                    }

                    return default;
                },
                o => { o.MaxCount = 100; o.MaxAge = Timeout.InfiniteTimeSpan; },
                name: "numbers")));
        var sender = host.Services.GetRequiredService<IQueueSender>();
        batcher = host.Services.GetRequiredKeyedService<Batcher<int>>("numbers");

        for (var i = 0; i < 10; i++)
        {
            await sender.SendAsync("slow", new Job(i));
            await batcher.AddAsync(i);
        }

        await host.StopAsync().WaitAsync(TestHost.Wait);

        handled.Order().Should().Equal(Enumerable.Range(0, 10).Concat(Enumerable.Range(1000, 10)));
        batcher.Completion.IsCompletedSuccessfully.Should().BeTrue();
        host.Harness().Deliveries.Should().HaveCount(10).And.OnlyContain(d => d.Outcome == SettlementKind.Ack);
    }

    [Fact]
    public async Task AddBatchHandler_WrongBodyType_DeadLetteredWithTheReason()
    {
        using var host = await TestHost.StartAsync(b => b.AddBatching(x => x.AddBatchHandler<Job>(
            TransportAddress.Topic("mixed"),
            (_, _) => default,
            o => { o.ConsumerGroup = "mixed-batches"; o.MaxCount = 1; })));

        await host.Services.GetRequiredService<IPublisher>().PublishAsync("mixed", new Reading(1, 2));

        var dead = await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "mixed-batches", 1);
        dead[0].Reason.Should().Contain("received a body of type").And.Contain(nameof(Reading));
    }

    [Fact]
    public async Task StartAsync_InvalidRegistrations_FailListingEveryProblem()
    {
        using var host = TestHost.Build(b => b.AddBatching(x => x
            .AddBatchHandler<Job>(TransportAddress.Queue("q"), (_, _) => default, o => { o.MaxCount = 50; o.Capacity = 10; o.FullMode = BatchFullMode.DropNewest; })
            .AddBatcher<int>((_, _) => default, o => o.MaxSize = 100, name: "sized")
            .AddBatchHandler<Job>(TransportAddress.Topic("bad..topic"), (_, _) => default, o => o.ConsumerGroup = "g")));

        var act = () => host.StartAsync();

        var error = (await act.Should().ThrowAsync<OptionsValidationException>()).Which;
        error.Failures.Should().Contain(f => f.Contains("Capacity (10) must be at least MaxCount (50)"))
            .And.Contain(f => f.Contains("FullMode must be Wait"))
            .And.Contain(f => f.Contains("'sized'") && f.Contains("no size function"))
            .And.Contain(f => f.Contains("empty segment"));
    }

    [Fact]
    public async Task AddBatcher_HandlerType_ResolvedPerBatchFromDi()
    {
        using var host = await TestHost.StartAsync(b =>
        {
            b.Services.AddSingleton<ReadingLog>();
            b.AddBatching(x => x.AddBatcher<Reading, ReadingBatchHandler>(o => { o.MaxCount = 3; o.MaxAge = Timeout.InfiniteTimeSpan; }));
        });
        var batcher = host.Services.GetRequiredService<Batcher<Reading>>();
        var log = host.Services.GetRequiredService<ReadingLog>();

        for (var i = 0; i < 6; i++)
        {
            await batcher.AddAsync(new Reading(1, i));
        }

        await log.WaitForItemsAsync(6);
        log.Batches.Should().HaveCount(2).And.OnlyContain(b => b.Items.Length == 3 && b.Ids.Length == 0, "in-process items have no envelopes");
        batcher.Name.Should().Be(nameof(Reading));
    }
}
