using System.Collections.Concurrent;
using Patterns.Batching;

namespace Patterns.Core.Tests.Batching;

/// <summary>
/// Bounded stress runs of the batcher's lock, its lock-free release of capacity and its recycled buffers: several
/// producer threads against a small capacity (so producers wait for space often), flushes alongside, one or several
/// handler workers. Each checks that every item is handled exactly once, in order per producer where the batcher
/// promises it, and that the buffered count never passes the capacity.
/// </summary>
public sealed class BatcherStressTests
{
    private const int Producers = 4;
    private const int PerProducer = 10_000;

    [Theory]
    [InlineData(1, 48)]
    [InlineData(1, 4_096)]
    [InlineData(3, 48)]
    [InlineData(3, 4_096)]
    public async Task AddAsync_SeveralProducersWorkersAndFlushes_EveryItemHandledOnceAndInOrderPerProducer(int workers, int capacity)
    {
        // With the large capacity the first producer adds alone long enough for the lock to be biased to it before
        // the others start, so they end the bias while it adds; with the small one producers wait for space often.
        var batches = new ConcurrentQueue<int[]>();
        var handled = 0;
        var overCapacity = 0;
        Batcher<int>? sut = null;
        sut = Batcher.Create<int>(
            async (batch, _) =>
            {
                // Copies the batch (its buffer is recycled once the handler returns), and sometimes finishes
                // asynchronously so both of the worker's completion paths run.
                var items = batch.ToArray();
                if (sut!.Count > capacity)
                {
                    Interlocked.Increment(ref overCapacity);
                }

                if (Interlocked.Increment(ref handled) % 5 == 0)
                {
                    await Task.Yield();
                }

                // Read the copy again after the yield: a buffer handed to a new batch meanwhile would not change it,
                // but the batch itself must still show the same items until the handler returns.
                batch.ToArray().Should().Equal(items);
                batches.Enqueue(items);
            },
            new BatchOptions { MaxCount = 8, Capacity = capacity, MaxAge = Timeout.InfiniteTimeSpan, HandlerConcurrency = workers });
        await using var batcher = sut;

        using var start = new ManualResetEventSlim();
        using var firstAlone = new ManualResetEventSlim();
        var failures = new ConcurrentQueue<Exception>();
        var threads = new List<Thread>();
        for (var p = 0; p < Producers; p++)
        {
            var producer = p;
            threads.Add(new Thread(() => Guard(failures, () =>
            {
                start.Wait();
                if (producer != 0)
                {
                    firstAlone.Wait(TestHost.Wait);
                }

                for (var i = 0; i < PerProducer; i++)
                {
                    if (i == 1_000)
                    {
                        firstAlone.Set();
                    }

                    var item = (producer * PerProducer) + i;
                    var added = producer % 2 == 0 ? batcher.TryAdd(item) : false;
                    if (!added)
                    {
                        batcher.AddAsync(item).AsTask().GetAwaiter().GetResult().Should().BeTrue();
                    }
                }
            })));
        }

        threads.Add(new Thread(() => Guard(failures, () =>
        {
            start.Wait();
            for (var i = 0; i < 200; i++)
            {
                batcher.FlushAsync().WaitAsync(TestHost.Wait).GetAwaiter().GetResult();
            }
        })));

        foreach (var thread in threads)
        {
            thread.Start();
        }

        start.Set();
        foreach (var thread in threads)
        {
            thread.Join(TestHost.Wait).Should().BeTrue("no producer or flush may hang");
        }

        failures.Should().BeEmpty();
        await batcher.FlushAsync().WaitAsync(TestHost.Wait);
        batcher.Count.Should().Be(0);
        overCapacity.Should().Be(0);

        var all = batches.SelectMany(b => b).ToList();
        all.Order().Should().Equal(Enumerable.Range(0, Producers * PerProducer), "each item is handled exactly once");
        if (workers == 1)
        {
            // One worker handles batches in hand-off order: each producer's items come out in the order it added them.
            for (var p = 0; p < Producers; p++)
            {
                var first = p * PerProducer;
                all.Where(i => i / PerProducer == p).Should().Equal(Enumerable.Range(first, PerProducer));
            }
        }
        else
        {
            foreach (var batch in batches)
            {
                foreach (var group in batch.GroupBy(i => i / PerProducer))
                {
                    group.Should().BeInAscendingOrder("a batch keeps the order its items were added in");
                }
            }
        }
    }

    [Fact]
    public async Task CompleteAsync_ProducersBlockedForSpaceAndAdding_AcceptedItemsHandledOnceAndNoProducerHangs()
    {
        var batches = new ConcurrentQueue<int[]>();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var batcher = Batcher.Create<int>(
            async (batch, _) =>
            {
                var items = batch.ToArray();
                await release.Task.ConfigureAwait(false);
                batches.Enqueue(items);
            },
            new BatchOptions { MaxCount = 4, Capacity = 16, MaxAge = Timeout.InfiniteTimeSpan });

        var accepted = new ConcurrentQueue<int>();
        var failures = new ConcurrentQueue<Exception>();
        using var blocked = new CountdownEvent(Producers);
        var threads = Enumerable.Range(0, Producers).Select(p => new Thread(() => Guard(failures, () =>
        {
            var signalled = false;
            for (var i = 0; i < 100; i++)
            {
                var item = (p * 100) + i;
                try
                {
                    var add = batcher.AddAsync(item).AsTask();
                    if (!add.IsCompleted && !signalled)
                    {
                        signalled = true;
                        blocked.Signal();
                    }

                    add.WaitAsync(TestHost.Wait).GetAwaiter().GetResult().Should().BeTrue();
                    accepted.Enqueue(item);
                }
                catch (InvalidOperationException)
                {
                    break; // completed
                }
            }

            if (!signalled)
            {
                blocked.Signal();
            }
        }))).ToList();
        foreach (var thread in threads)
        {
            thread.Start();
        }

        blocked.Wait(TestHost.Wait).Should().BeTrue();
        var completing = batcher.CompleteAsync();
        release.SetResult();
        foreach (var thread in threads)
        {
            thread.Join(TestHost.Wait).Should().BeTrue("a producer blocked for space is released by completion");
        }

        await completing.WaitAsync(TestHost.Wait);
        failures.Should().BeEmpty();
        batches.SelectMany(b => b).Order().Should().Equal(accepted.Order());
        batcher.Count.Should().Be(0);
    }

    private static void Guard(ConcurrentQueue<Exception> failures, Action body)
    {
        try
        {
            body();
        }
#pragma warning disable CA1031 // collected and asserted on the test's thread
        catch (Exception ex)
#pragma warning restore CA1031
        {
            failures.Enqueue(ex);
        }
    }
}
