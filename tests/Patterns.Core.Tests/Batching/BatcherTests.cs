using System.Collections.Concurrent;
using Microsoft.Extensions.Time.Testing;
using Patterns.Batching;
using Patterns.Testing;
using Patterns.Transport;
using Polly;
using Polly.Retry;

namespace Patterns.Core.Tests.Batching;

public sealed class BatcherTests
{
    private readonly FakeTimeProvider _fake = new();
    private readonly TimerTracker _time;
    private readonly ConcurrentQueue<int[]> _batches = new();
    private readonly ConcurrentQueue<FailedItem<int>> _deadLetters = new();

    public BatcherTests() => _time = new TimerTracker(_fake);

    [Fact]
    public async Task AddAsync_MaxCountReached_FlushesFullBatchesOnly()
    {
        var handled = new SemaphoreSlim(0);
        await using var batcher = CreateSut(new BatchOptions { MaxCount = 100, MaxAge = Timeout.InfiniteTimeSpan }, onBatch: _ => handled.Release());

        for (var i = 0; i < 250; i++)
        {
            (await batcher.AddAsync(i)).Should().BeTrue();
        }

        await handled.WaitAsync(TestHost.Wait);
        await handled.WaitAsync(TestHost.Wait);
        _batches.Select(b => b.Length).Should().Equal(100, 100);
        batcher.Count.Should().Be(50, "the third batch is still open");

        await batcher.FlushAsync().WaitAsync(TestHost.Wait);
        _batches.SelectMany(b => b).Should().Equal(Enumerable.Range(0, 250));
        _batches.Select(b => b.Length).Should().Equal(100, 100, 50);
        batcher.Count.Should().Be(0);
    }

    [Fact]
    public async Task AddAsync_MaxSizeReached_FlushesBeforeTheItemThatWouldOverflow()
    {
        await using var batcher = CreateSut(new BatchOptions { MaxCount = 1000, MaxSize = 10, MaxAge = Timeout.InfiniteTimeSpan }, sizeOf: i => i);

        foreach (var size in new[] { 4, 4, 4, 6, 25, 3 })
        {
            await batcher.AddAsync(size);
        }

        await batcher.FlushAsync().WaitAsync(TestHost.Wait);
        // 4+4 fits, +4 would be 12; 4+6 is exactly 10 (flushed at the limit); 25 alone exceeds it; 3 is flushed explicitly.
        _batches.Should().BeEquivalentTo(new[] { new[] { 4, 4 }, new[] { 4, 6 }, new[] { 25 }, new[] { 3 } }, o => o.WithStrictOrdering());
    }

    [Fact]
    public async Task AddAsync_MaxAgePasses_FlushesOnVirtualTime()
    {
        var handled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var batcher = CreateSut(new BatchOptions { MaxCount = 100, MaxAge = TimeSpan.FromSeconds(5) }, onBatch: _ => handled.TrySetResult());

        await batcher.AddAsync(1);
        _fake.Advance(TimeSpan.FromSeconds(2));
        await batcher.AddAsync(2);
        await _time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);

        _fake.Advance(TimeSpan.FromSeconds(3) - TimeSpan.FromTicks(1));
        _batches.Should().BeEmpty("the first item is not 5 s old yet");

        _fake.Advance(TimeSpan.FromTicks(1));
        await handled.Task.WaitAsync(TestHost.Wait);
        _batches.Should().ContainSingle().Which.Should().Equal(1, 2);
    }

    [Fact]
    public async Task AddAsync_MaxAge_MeasuredFromEachBatchsFirstItem()
    {
        var handled = new SemaphoreSlim(0);
        await using var batcher = CreateSut(new BatchOptions { MaxCount = 2, MaxAge = TimeSpan.FromSeconds(10) }, onBatch: _ => handled.Release());

        await batcher.AddAsync(1);
        await batcher.AddAsync(2); // full: flushed by count
        await handled.WaitAsync(TestHost.Wait);
        _fake.Advance(TimeSpan.FromSeconds(8));
        await batcher.AddAsync(3); // opens a new batch at t = 8 s

        _fake.Advance(TimeSpan.FromSeconds(2)); // t = 10 s: the timer armed for the first batch fires and re-arms
        batcher.Count.Should().Be(1);
        await _time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        _fake.Advance(TimeSpan.FromSeconds(8)); // t = 18 s: the second batch is 10 s old
        await handled.WaitAsync(TestHost.Wait);

        _batches.Should().BeEquivalentTo(new[] { new[] { 1, 2 }, new[] { 3 } }, o => o.WithStrictOrdering());
    }

    [Fact]
    public async Task CompleteAsync_ManyProducers_NothingLost()
    {
        const int producers = 4;
        const int perProducer = 5_000;
        var batcher = CreateSut(new BatchOptions { MaxCount = 64, Capacity = 256, MaxAge = TimeSpan.FromHours(1), HandlerConcurrency = 3 });

        await Task.WhenAll(Enumerable.Range(0, producers).Select(p => Task.Run(async () =>
        {
            for (var i = 0; i < perProducer; i++)
            {
                await batcher.AddAsync((p * perProducer) + i);
            }
        })));
        await batcher.CompleteAsync().WaitAsync(TestHost.Wait);

        _batches.SelectMany(b => b).Order().Should().Equal(Enumerable.Range(0, producers * perProducer));
        _batches.Should().OnlyContain(b => b.Length >= 1 && b.Length <= 64);
        batcher.Completion.IsCompletedSuccessfully.Should().BeTrue();
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public async Task AddAsync_ProducersOutrunTheHandler_EachProducersItemsStayInOrderAndNoneIsLost(int producers)
    {
        // The handler is the slower side, so producers keep finding the batcher full and waiting for space (the path a
        // producer takes once per capacity's worth of items when it outruns its handler): nothing is lost or reordered.
        const int perProducer = 3_000;
        var batcher = CreateSut(
            new BatchOptions { MaxCount = 10, Capacity = 20, MaxAge = Timeout.InfiniteTimeSpan },
            onBatch: _ => Thread.SpinWait(2_000));

        await Task.WhenAll(Enumerable.Range(0, producers).Select(p => Task.Run(async () =>
        {
            for (var i = 0; i < perProducer; i++)
            {
                await batcher.AddAsync((p * perProducer) + i);
            }
        })));
        await batcher.FlushAsync().WaitAsync(TestHost.Wait);

        var handled = _batches.SelectMany(b => b).ToList();
        handled.Order().Should().Equal(Enumerable.Range(0, producers * perProducer));
        for (var p = 0; p < producers; p++)
        {
            var own = p;
            handled.Where(i => i / perProducer == own).Should().BeInAscendingOrder();
        }

        _batches.Should().OnlyContain(b => b.Length >= 1 && b.Length <= 10);
        batcher.Count.Should().Be(0);
        await batcher.CompleteAsync().WaitAsync(TestHost.Wait);
    }

    [Fact]
    public async Task CompleteAsync_ProducerFoundTheBatcherFull_ProducerThrowsAndEveryAcceptedItemIsHandled()
    {
        // The handler holds its batch, so a producer that finds the batcher full waits for space; completing the batcher
        // fails that add, and the items accepted before are all handled.
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var batcher = CreateSut(new BatchOptions { MaxCount = 5, Capacity = 10, MaxAge = Timeout.InfiniteTimeSpan }, onBatchAsync: _ => new ValueTask(release.Task));

        for (var i = 0; i < 10; i++)
        {
            (await batcher.AddAsync(i)).Should().BeTrue();
        }

        var blocked = batcher.AddAsync(10).AsTask();
        blocked.IsCompleted.Should().BeFalse();

        var completing = batcher.CompleteAsync();
        var act = () => blocked.WaitAsync(TestHost.Wait);
        await act.Should().ThrowAsync<InvalidOperationException>();

        release.SetResult();
        await completing.WaitAsync(TestHost.Wait);
        _batches.SelectMany(b => b).Should().Equal(Enumerable.Range(0, 10));
    }

    [Fact]
    public async Task AddAsync_BatchesComeOneAtATime_EachIsHandledWhetherTheWorkerIsSpinningOrParked()
    {
        // An idle worker watches its channel briefly before it parks: batches that arrive back to back, and batches that
        // arrive after the producer waited for the previous one (so the worker may have parked), are all handled, in order.
        var handled = new SemaphoreSlim(0);
        await using var batcher = CreateSut(new BatchOptions { MaxCount = 10, Capacity = 20, MaxAge = Timeout.InfiniteTimeSpan }, onBatch: _ => handled.Release());

        for (var round = 0; round < 300; round++)
        {
            for (var i = 0; i < 10; i++)
            {
                await batcher.AddAsync((round * 10) + i);
            }

            if (round % 3 == 0)
            {
                await handled.WaitAsync(TestHost.Wait);
            }
        }

        await batcher.FlushAsync().WaitAsync(TestHost.Wait);
        _batches.Should().HaveCount(300).And.OnlyContain(b => b.Length == 10);
        _batches.SelectMany(b => b).Should().Equal(Enumerable.Range(0, 3000));
        batcher.Count.Should().Be(0);
    }

    [Fact]
    public async Task AddAsync_MaxAgePassesAfterFullBatches_FlushesThePartialBatch()
    {
        // Enough adds from one thread that the batcher's lock is biased to it; the age timer then flushes the open
        // partial batch (whichever thread the timer runs on).
        var handled = new SemaphoreSlim(0);
        await using var batcher = CreateSut(new BatchOptions { MaxCount = 100, MaxAge = TimeSpan.FromSeconds(5) }, onBatch: _ => handled.Release());

        for (var i = 0; i < 250; i++)
        {
            await batcher.AddAsync(i);
        }

        await handled.WaitAsync(TestHost.Wait);
        await handled.WaitAsync(TestHost.Wait);
        batcher.Count.Should().Be(50);
        await _time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);

        _fake.Advance(TimeSpan.FromSeconds(5));
        await handled.WaitAsync(TestHost.Wait);
        _batches.Select(b => b.Length).Should().Equal(100, 100, 50);
        _batches.SelectMany(b => b).Should().Equal(Enumerable.Range(0, 250));
        batcher.Count.Should().Be(0);
    }

    [Fact]
    public async Task AddAsync_ProducerMovesToAnotherThread_ItsItemsStayInOrderAndNoneIsLost()
    {
        // One producer adds from one thread (the batcher's lock biases to it), then from a second thread, then from a
        // third, with flushes from the test between: every item is handled once, in the order added. The threads are
        // created up front so that each has an id of its own (ids of ended threads are reused).
        await using var batcher = CreateSut(new BatchOptions { MaxCount = 64, Capacity = 256, MaxAge = Timeout.InfiniteTimeSpan });
        var next = 0;
        var threads = Enumerable.Range(0, 3).Select(_ => new Thread(() =>
        {
            for (var i = 0; i < 1_000; i++)
            {
                batcher.AddAsync(next++).AsTask().GetAwaiter().GetResult();
            }
        })).ToList();

        foreach (var thread in threads)
        {
            thread.Start();
            thread.Join(TestHost.Wait).Should().BeTrue();
            await batcher.FlushAsync().WaitAsync(TestHost.Wait);
        }

        _batches.SelectMany(b => b).Should().Equal(Enumerable.Range(0, 3_000));
        batcher.Count.Should().Be(0);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task FlushAsync_ABatchIsStillBeingHandled_CompletesOnlyWhenEveryEarlierBatchIsHandled(int workers)
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var batcher = CreateSut(
            new BatchOptions { MaxCount = 2, Capacity = 10, MaxAge = Timeout.InfiniteTimeSpan, HandlerConcurrency = workers },
            onBatchAsync: items =>
            {
                if (items[0] != 0)
                {
                    return default;
                }

                started.TrySetResult();
                return new ValueTask(release.Task);
            });

        await batcher.AddAsync(0);
        await batcher.AddAsync(1); // full: handed off, and its handler holds it
        await started.Task.WaitAsync(TestHost.Wait);
        await batcher.AddAsync(2); // open

        var flushing = batcher.FlushAsync();
        flushing.IsCompleted.Should().BeFalse("the first batch is still being handled");

        release.SetResult();
        await flushing.WaitAsync(TestHost.Wait);
        _batches.SelectMany(b => b).Order().Should().Equal(0, 1, 2);
        batcher.Count.Should().Be(0);
    }

    [Fact]
    public async Task CompleteAsync_SeveralProducersWaitForSpace_EachThrowsAndEveryAcceptedItemIsHandled()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var batcher = CreateSut(new BatchOptions { MaxCount = 5, Capacity = 10, MaxAge = Timeout.InfiniteTimeSpan }, onBatchAsync: _ => new ValueTask(release.Task));
        for (var i = 0; i < 10; i++)
        {
            await batcher.AddAsync(i);
        }

        var blocked = Enumerable.Range(10, 3).Select(i => batcher.AddAsync(i).AsTask()).ToList();
        blocked.Should().OnlyContain(t => !t.IsCompleted);

        var completing = batcher.CompleteAsync();
        foreach (var add in blocked)
        {
            var act = () => add.WaitAsync(TestHost.Wait);
            await act.Should().ThrowAsync<InvalidOperationException>();
        }

        batcher.TryAdd(99).Should().BeFalse();
        release.SetResult();
        await completing.WaitAsync(TestHost.Wait);
        _batches.SelectMany(b => b).Should().Equal(Enumerable.Range(0, 10));
        batcher.Count.Should().Be(0);
    }

    [Fact]
    public async Task AddAsync_SlowHandler_ProducerWaitsAndBufferedCountStaysWithinCapacity()
    {
        var gate = new SemaphoreSlim(0);
        var maxSeen = 0;
        Batcher<int>? sut = null;
        var batcher = sut = CreateSut(
            new BatchOptions { MaxCount = 5, Capacity = 10, MaxAge = Timeout.InfiniteTimeSpan },
            onBatchAsync: async _ =>
            {
                Eventually.RecordMax(ref maxSeen, sut!.Count);
                await gate.WaitAsync();
            });

        var producer = Task.Run(async () =>
        {
            for (var i = 0; i < 100; i++)
            {
                await batcher.AddAsync(i);
                Eventually.RecordMax(ref maxSeen, batcher.Count);
            }
        });

        // Two full batches fill the capacity; the producer must wait for the first slow batch.
        await Eventually.HoldsAsync(() => batcher.Count == 10);
        producer.IsCompleted.Should().BeFalse("the batcher is full and the handler has not finished a batch");
        for (var i = 0; i < 20; i++)
        {
            gate.Release();
        }

        await producer.WaitAsync(TestHost.Wait);
        await batcher.CompleteAsync().WaitAsync(TestHost.Wait);
        maxSeen.Should().BeLessThanOrEqualTo(10);
        _batches.SelectMany(b => b).Should().Equal(Enumerable.Range(0, 100));
    }

    [Fact]
    public async Task AddAsync_FullWithDropNewest_ReturnsFalseAndKeepsEarlierItems()
    {
        var gate = new SemaphoreSlim(0);
        var batcher = CreateSut(
            new BatchOptions { MaxCount = 2, Capacity = 4, MaxAge = Timeout.InfiniteTimeSpan, FullMode = BatchFullMode.DropNewest },
            onBatchAsync: _ => new ValueTask(gate.WaitAsync()));

        var accepted = new List<bool>();
        for (var i = 0; i < 6; i++)
        {
            accepted.Add(await batcher.AddAsync(i));
        }

        accepted.Should().Equal(true, true, true, true, false, false);
        batcher.TryAdd(99).Should().BeFalse();
        gate.Release(10);
        await batcher.CompleteAsync().WaitAsync(TestHost.Wait);
        _batches.SelectMany(b => b).Should().Equal(0, 1, 2, 3);
    }

    [Fact]
    public async Task AddAsync_FullWithReject_ThrowsQueueFullException()
    {
        var gate = new SemaphoreSlim(0);
        var batcher = CreateSut(
            new BatchOptions { MaxCount = 2, Capacity = 2, MaxAge = Timeout.InfiniteTimeSpan, FullMode = BatchFullMode.Reject },
            onBatchAsync: _ => new ValueTask(gate.WaitAsync()),
            name: "ingest");

        await batcher.AddAsync(1);
        await batcher.AddAsync(2);
        var act = async () => await batcher.AddAsync(3);

        await act.Should().ThrowAsync<QueueFullException>().WithMessage("Batcher 'ingest' is full (2 items)*");
        gate.Release(10);
        await batcher.CompleteAsync().WaitAsync(TestHost.Wait);
    }

    [Fact]
    public async Task AddAsync_WaitingProducerCancelled_ThrowsAndItemIsNotAdded()
    {
        var gate = new SemaphoreSlim(0);
        var batcher = CreateSut(new BatchOptions { MaxCount = 1, Capacity = 1, MaxAge = Timeout.InfiniteTimeSpan }, onBatchAsync: _ => new ValueTask(gate.WaitAsync()));
        await batcher.AddAsync(1);
        using var cts = new CancellationTokenSource();

        var waiting = batcher.AddAsync(2, cts.Token).AsTask();
        waiting.IsCompleted.Should().BeFalse();
        await cts.CancelAsync();

        await waiting.Invoking(t => t).Should().ThrowAsync<OperationCanceledException>();
        gate.Release(10);
        await batcher.CompleteAsync().WaitAsync(TestHost.Wait);
        _batches.SelectMany(b => b).Should().Equal(1);
    }

    [Fact]
    public async Task Create_WithKeySelector_OneKeyPerBatchAndPerKeyOrderAcrossWorkers()
    {
        var batches = new ConcurrentQueue<(string Key, int[] Items)>();
        var batcher = Batcher.Create<(string Key, int Seq), string>(
            x => x.Key,
            async (batch, _) =>
            {
                batches.Enqueue(((string)batch.Key!, batch.ToArray().Select(x => x.Seq).ToArray()));
                await Task.Yield();
            },
            new BatchOptions { MaxCount = 7, Capacity = 64, MaxAge = TimeSpan.FromSeconds(1), HandlerConcurrency = 4 },
            timeProvider: _time);

        for (var seq = 0; seq < 200; seq++)
        {
            for (var k = 0; k < 5; k++)
            {
                await batcher.AddAsync(($"k{k}", seq));
            }
        }

        await batcher.CompleteAsync().WaitAsync(TestHost.Wait);
        var byKey = batches.GroupBy(b => b.Key).ToDictionary(g => g.Key, g => g.SelectMany(b => b.Items).ToArray());
        byKey.Keys.Should().BeEquivalentTo("k0", "k1", "k2", "k3", "k4");
        byKey.Values.Should().OnlyContain(items => items.SequenceEqual(Enumerable.Range(0, 200)), "one key's batches are handled in order");
    }

    [Fact]
    public async Task Create_KeyedWithManyPartialBatches_FlushesUnderPressureInsteadOfDeadlocking()
    {
        // Capacity 8 with 8 keys and MaxCount 4: every key's batch is partial when the batcher fills.
        var batcher = Batcher.Create<int, int>(
            i => i % 8,
            (batch, _) =>
            {
                _batches.Enqueue(batch.ToArray());
                return default;
            },
            new BatchOptions { MaxCount = 4, Capacity = 8, MaxAge = Timeout.InfiniteTimeSpan },
            timeProvider: _time);

        for (var i = 0; i < 100; i++)
        {
            await batcher.AddAsync(i).AsTask().WaitAsync(TestHost.Wait);
        }

        await batcher.CompleteAsync().WaitAsync(TestHost.Wait);
        _batches.SelectMany(b => b).Order().Should().Equal(Enumerable.Range(0, 100));
        _batches.Should().OnlyContain(b => b.All(i => i % 8 == b[0] % 8));
    }

    [Fact]
    public async Task Handler_MarksItemFailed_OnlyThatItemIsRetriedAndTheRestHandledOnce()
    {
        var seen = new ConcurrentQueue<(int Attempt, int[] Items)>();
        var batcher = Batcher.Create<int>(
            (batch, _) =>
            {
                seen.Enqueue((batch.Attempt, batch.ToArray()));
                for (var i = 0; i < batch.Count; i++)
                {
                    if (batch[i] == 3 && batch.Attempt < 2)
                    {
                        batch.Fail(i, new TimeoutException("3 timed out"));
                    }
                }

                return default;
            },
            new BatchOptions { MaxCount = 5, MaxAge = Timeout.InfiniteTimeSpan, Retry = FixedRetry(3) },
            onDeadLetter: (failed, _) =>
            {
                _deadLetters.Enqueue(failed);
                return default;
            },
            timeProvider: _time);

        for (var i = 1; i <= 5; i++)
        {
            await batcher.AddAsync(i);
        }

        await _time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        _fake.Advance(TimeSpan.FromSeconds(1));
        await _time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        _fake.Advance(TimeSpan.FromSeconds(1));
        await batcher.CompleteAsync().WaitAsync(TestHost.Wait);

        seen.Should().BeEquivalentTo(new[] { (0, new[] { 1, 2, 3, 4, 5 }), (1, new[] { 3 }), (2, new[] { 3 }) }, o => o.WithStrictOrdering());
        _deadLetters.Should().BeEmpty("the third attempt succeeded");
    }

    [Fact]
    public async Task Handler_ItemsKeepFailing_DeadLetteredOneByOneWithTheirOwnExceptions()
    {
        var attempts = 0;
        var batcher = Batcher.Create<int>(
            (batch, _) =>
            {
                Interlocked.Increment(ref attempts);
                for (var i = 0; i < batch.Count; i++)
                {
                    if (batch[i] % 2 == 0)
                    {
                        batch.Fail(i, new InvalidOperationException($"item {batch[i]} is poison"));
                    }
                }

                return default;
            },
            new BatchOptions { MaxCount = 6, MaxAge = Timeout.InfiniteTimeSpan, Retry = FixedRetry(2) },
            onDeadLetter: (failed, _) =>
            {
                _deadLetters.Enqueue(failed);
                return default;
            },
            timeProvider: _time,
            name: "orders");

        for (var i = 1; i <= 6; i++)
        {
            await batcher.AddAsync(i);
        }

        for (var retry = 0; retry < 2; retry++)
        {
            await _time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
            _fake.Advance(TimeSpan.FromSeconds(1));
        }

        await batcher.CompleteAsync().WaitAsync(TestHost.Wait);
        attempts.Should().Be(3, "one attempt plus two retries");
        _deadLetters.Select(d => d.Item).Should().Equal(2, 4, 6);
        _deadLetters.Select(d => d.Exception.Message).Should().Equal("item 2 is poison", "item 4 is poison", "item 6 is poison");
        _deadLetters.Should().OnlyContain(d => d.Attempts == 3 && d.Batcher == "orders" && d.FailedAt == _time.GetUtcNow());
    }

    [Fact]
    public async Task Handler_Throws_EveryItemOfTheBatchIsDeadLetteredWithTheException()
    {
        var batcher = Batcher.Create<int>(
            (_, _) => throw new FormatException("bad batch"),
            new BatchOptions { MaxCount = 3, MaxAge = Timeout.InfiniteTimeSpan, Retry = null },
            onDeadLetter: (failed, _) =>
            {
                _deadLetters.Enqueue(failed);
                return default;
            },
            timeProvider: _time);

        await batcher.AddAsync(7);
        await batcher.AddAsync(8);
        await batcher.CompleteAsync().WaitAsync(TestHost.Wait);

        _deadLetters.Select(d => d.Item).Should().Equal(7, 8);
        _deadLetters.Should().OnlyContain(d => d.Exception is FormatException && d.Attempts == 1);
    }

    [Fact]
    public async Task Batch_UsedAfterHandlerReturned_ThrowsObjectDisposedException()
    {
        Batch<int> kept = default;
        var batcher = Batcher.Create<int>(
            (batch, _) =>
            {
                kept = batch;
                batch.Count.Should().Be(2);
                return default;
            },
            new BatchOptions { MaxCount = 2, MaxAge = Timeout.InfiniteTimeSpan },
            timeProvider: _time);

        await batcher.AddAsync(1);
        await batcher.AddAsync(2);
        await batcher.CompleteAsync().WaitAsync(TestHost.Wait);

        var act = () => kept.Count;
        act.Should().Throw<ObjectDisposedException>().WithMessage("*valid only until its handler returns*");
    }

    [Fact]
    public async Task CompleteAsync_DrainDeadlinePasses_HandlerCancelledAndItemsDeadLetteredNotLost()
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var batcher = Batcher.Create<int>(
            async (batch, ct) =>
            {
                started.TrySetResult();
                await Task.Delay(Timeout.Infinite, ct);
            },
            new BatchOptions { MaxCount = 10, MaxAge = Timeout.InfiniteTimeSpan },
            onDeadLetter: (failed, _) =>
            {
                _deadLetters.Enqueue(failed);
                return default;
            },
            timeProvider: _time);
        await batcher.AddAsync(1);
        await batcher.AddAsync(2);
        using var deadline = new CancellationTokenSource();

        var completing = batcher.CompleteAsync(deadline.Token);
        await started.Task.WaitAsync(TestHost.Wait);
        completing.IsCompleted.Should().BeFalse("the handler is still running and the deadline has not passed");
        await deadline.CancelAsync();
        await completing.WaitAsync(TestHost.Wait);

        _deadLetters.Select(d => d.Item).Should().Equal(1, 2);
        _deadLetters.Should().OnlyContain(d => d.Exception is OperationCanceledException);
    }

    [Fact]
    public async Task AddAsync_AfterComplete_ThrowsInvalidOperation()
    {
        var batcher = CreateSut(new BatchOptions(), name: "done");
        await batcher.CompleteAsync();

        var act = async () => await batcher.AddAsync(1);

        await act.Should().ThrowAsync<InvalidOperationException>().WithMessage("Batcher 'done' is completed*");
        batcher.TryAdd(1).Should().BeFalse();
    }

    [Fact]
    public void Create_InvalidOptions_ListsEveryProblem()
    {
        var act = () => Batcher.Create<int>(
            (_, _) => default,
            new BatchOptions { MaxCount = 50, Capacity = 10, MaxAge = TimeSpan.Zero, MaxSize = 5, HandlerConcurrency = 0 },
            name: "bad");

        act.Should().Throw<ArgumentException>()
            .Where(e => e.Message.Contains("Capacity (10) must be at least MaxCount (50)")
                && e.Message.Contains("MaxAge must be positive")
                && e.Message.Contains("HandlerConcurrency")
                && e.Message.Contains("no size function"));
    }

    private static RetryStrategyOptions FixedRetry(int retries) => new()
    {
        MaxRetryAttempts = retries,
        Delay = TimeSpan.FromSeconds(1),
        BackoffType = DelayBackoffType.Constant,
        UseJitter = false,
    };

    private Batcher<int> CreateSut(
        BatchOptions options,
        Action<int[]>? onBatch = null,
        Func<int[], ValueTask>? onBatchAsync = null,
        Func<int, long>? sizeOf = null,
        string name = "test") =>
        Batcher.Create<int>(
            (batch, _) =>
            {
                var items = batch.ToArray();
                _batches.Enqueue(items);
                onBatch?.Invoke(items);
                return onBatchAsync?.Invoke(items) ?? default;
            },
            options,
            sizeOf,
            (failed, _) =>
            {
                _deadLetters.Enqueue(failed);
                return default;
            },
            _time,
            name: name);
}
