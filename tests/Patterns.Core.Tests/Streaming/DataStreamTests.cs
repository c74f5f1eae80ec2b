using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Time.Testing;
using Patterns.Batching;
using Patterns.Messaging;
using Patterns.Streaming;
using Patterns.Testing;
using Polly;
using Polly.Retry;

namespace Patterns.Core.Tests.Streaming;

public sealed class DataStreamTests
{
    private readonly ConcurrentQueue<StreamDeadLetter> _deadLetters = new();

    [Fact]
    public async Task Operators_WhereSelectSelectMany_OverAsyncEnumerable()
    {
        var results = new List<string>();

        await DataStream.From(Numbers(10))
            .Where(i => i % 2 == 0)
            .SelectMany(i => Enumerable.Repeat(i, i / 4 + 1))
            .Select(i => $"n{i}")
            .To(results.Add)
            .RunAsync().WaitAsync(TestHost.Wait);

        results.Should().Equal("n0", "n2", "n4", "n4", "n6", "n6", "n8", "n8", "n8");
    }

    [Fact]
    public async Task SelectAsync_Ordered_KeepsInputOrderAndAtMostNCallsRunAtOnce()
    {
        var running = 0;
        var maxRunning = 0;
        var results = new List<int>();

        await DataStream.From(Enumerable.Range(0, 50))
            .SelectAsync(
                async (i, _) =>
                {
                    var now = Interlocked.Increment(ref running);
                    Eventually.RecordMax(ref maxRunning, now);
                    await Task.Yield();
                    if (i % 7 == 0)
                    {
                        await Task.Yield(); // some finish later than their successors
                    }

                    Interlocked.Decrement(ref running);
                    return i * 10;
                },
                maxParallelism: 4)
            .To(results.Add)
            .RunAsync().WaitAsync(TestHost.Wait);

        results.Should().Equal(Enumerable.Range(0, 50).Select(i => i * 10));
        maxRunning.Should().BeInRange(1, 4);
    }

    [Fact]
    public async Task SelectAsync_Unordered_EmitsInCompletionOrder()
    {
        var gates = Enumerable.Range(0, 3).Select(_ => new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        var results = new ConcurrentQueue<int>();
        var started = new CountdownEvent(3);
        var firstEmitted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        var run = DataStream.From(new[] { 0, 1, 2 })
            .SelectAsync(
                (i, _) =>
                {
                    started.Signal();
                    return new ValueTask<int>(gates[i].Task);
                },
                maxParallelism: 3,
                ordered: false)
            .To(value =>
            {
                results.Enqueue(value);
                firstEmitted.TrySetResult();
            })
            .RunAsync();
        started.Wait(TestHost.Wait).Should().BeTrue();
        gates[2].SetResult(2);

        // Only 2 has completed: it is emitted while 0 and 1 are still running.
        await firstEmitted.Task.WaitAsync(TestHost.Wait);
        gates[0].SetResult(0);
        gates[1].SetResult(1);
        await run.WaitAsync(TestHost.Wait);

        results.Should().HaveCount(3).And.BeEquivalentTo([0, 1, 2]);
        results.First().Should().Be(2, "results are emitted as they complete, and 2 completed first");
    }

    [Fact]
    public async Task PartitionBy_KeysInParallel_PerKeyOrderHolds()
    {
        const int keys = 16;
        const int perKey = 300;
        var results = new List<(int Key, int Seq)>();
        var threads = new ConcurrentDictionary<int, byte>();

        await DataStream.From(Enumerable.Range(0, perKey).SelectMany(seq => Enumerable.Range(0, keys).Select(k => (Key: k, Seq: seq))))
            .PartitionBy(x => x.Key, partitions: 4)
            .SelectAsync(
                async (x, _) =>
                {
                    threads.TryAdd(Environment.CurrentManagedThreadId, 0);
                    await Task.Yield();
                    return x;
                },
                maxParallelism: 2)
            .To(results.Add)
            .RunAsync().WaitAsync(TestHost.Wait);

        results.Should().HaveCount(keys * perKey);
        results.GroupBy(r => r.Key).Should().OnlyContain(g => g.Select(r => r.Seq).SequenceEqual(Enumerable.Range(0, perKey)));
    }

    [Fact]
    public async Task FailurePolicy_Resume_SkipsAndDeadLettersWithTheException()
    {
        var results = new List<int>();

        await DataStream.From(Enumerable.Range(1, 6), Options())
            .Select(i => i % 3 == 0 ? throw new FormatException($"bad {i}") : i, FailurePolicy.Resume)
            .To(results.Add)
            .RunAsync().WaitAsync(TestHost.Wait);

        results.Should().Equal(1, 2, 4, 5);
        _deadLetters.Select(d => d.Element).Should().Equal(3, 6);
        _deadLetters.Should().OnlyContain(d => d.Stage == "Select@1" && d.Pipeline == "test" && d.Exception is FormatException);
        _deadLetters.Select(d => d.Exception.Message).Should().Equal("bad 3", "bad 6");
    }

    [Fact]
    public async Task FailurePolicy_Stop_PipelineCompletesWithThatException()
    {
        var results = new List<int>();
        var act = () => DataStream.From(Enumerable.Range(1, 6), Options())
            .Where(i => i == 4 ? throw new InvalidDataException("four") : true)
            .To(results.Add)
            .RunAsync();

        (await act.Should().ThrowAsync<InvalidDataException>()).WithMessage("four");
        results.Should().Equal(1, 2, 3);
        _deadLetters.Should().BeEmpty();
    }

    [Fact]
    public async Task FailurePolicy_Retry_RetriesOnVirtualTimeThenSucceeds()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var attempts = new ConcurrentDictionary<int, int>();
        var results = new List<int>();
        var retry = new RetryStrategyOptions { MaxRetryAttempts = 3, Delay = TimeSpan.FromSeconds(1), BackoffType = DelayBackoffType.Constant, UseJitter = false };

        var run = DataStream.From(Enumerable.Range(1, 3), Options(time))
            .To(
                (i, _) =>
                {
                    var n = attempts.AddOrUpdate(i, 1, (_, a) => a + 1);
                    if (i == 2 && n < 3)
                    {
                        throw new TimeoutException("flaky");
                    }

                    results.Add(i);
                    return default;
                },
                FailurePolicy.Retry(retry))
            .RunAsync();
        for (var i = 0; i < 2; i++)
        {
            await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
            fake.Advance(TimeSpan.FromSeconds(1));
        }

        await run.WaitAsync(TestHost.Wait);
        results.Should().Equal(1, 2, 3);
        attempts[2].Should().Be(3);
        _deadLetters.Should().BeEmpty();
    }

    [Fact]
    public async Task FailurePolicy_RetryExhausted_DeadLettersOrStops()
    {
        var retry = new RetryStrategyOptions { MaxRetryAttempts = 2, Delay = TimeSpan.Zero };
        var results = new List<int>();

        await DataStream.From(Enumerable.Range(1, 3), Options())
            .Select(i => i == 2 ? throw new TimeoutException("always") : i, FailurePolicy.Retry(retry))
            .To(results.Add)
            .RunAsync().WaitAsync(TestHost.Wait);
        var stop = () => DataStream.From(Enumerable.Range(1, 3), Options())
            .Select(i => i == 2 ? throw new TimeoutException("always") : i, FailurePolicy.Retry(retry, whenExhausted: FailurePolicy.Stop))
            .To(_ => { })
            .RunAsync();

        results.Should().Equal(1, 3);
        _deadLetters.Should().ContainSingle().Which.Element.Should().Be(2);
        await stop.Should().ThrowAsync<TimeoutException>();
    }

    [Fact]
    public async Task DefaultFailurePolicy_AppliesToStagesWithoutOne()
    {
        var options = Options();
        options.DefaultFailurePolicy = FailurePolicy.Resume;
        var results = new List<int>();

        await DataStream.From(new[] { 1, 0, 2 }, options).Select(i => 10 / i).To(results.Add).RunAsync().WaitAsync(TestHost.Wait);

        results.Should().Equal(10, 5);
        _deadLetters.Should().ContainSingle().Which.Exception.Should().BeOfType<DivideByZeroException>();
    }

    [Fact]
    public async Task From_Channel_SlowSink_BufferedItemsStayWithinTheBounds()
    {
        const int sourceCapacity = 8;
        var options = Options();
        options.BufferCapacity = 4;
        var source = Channel.CreateBounded<int>(sourceCapacity);
        var gate = new SemaphoreSlim(0);
        var produced = 0;
        var consumed = 0;
        var maxOutstanding = 0;

        var run = DataStream.From(source.Reader, options)
            .PartitionBy(i => i % 3, partitions: 3)
            .Select(i => i + 1)
            .To(async (_, ct) =>
            {
                await gate.WaitAsync(ct);
                Interlocked.Increment(ref consumed);
            })
            .RunAsync();
        var producer = Task.Run(async () =>
        {
            for (var i = 0; i < 200; i++)
            {
                await source.Writer.WriteAsync(i);
                var outstanding = Interlocked.Increment(ref produced) - Volatile.Read(ref consumed);
                Eventually.RecordMax(ref maxOutstanding, outstanding);
            }

            source.Writer.Complete();
        });

        // With the sink stopped, the producer fills every buffer and then must wait.
        var bound = sourceCapacity + (3 * options.BufferCapacity) + options.BufferCapacity + 3 + 1 + 1;
        await Eventually.HoldsAsync(() => Volatile.Read(ref produced) >= sourceCapacity + options.BufferCapacity);
        producer.IsCompleted.Should().BeFalse("the sink is stopped, so the pipeline holds back the producer");
        gate.Release(200);
        await producer.WaitAsync(TestHost.Wait);
        await run.WaitAsync(TestHost.Wait);

        consumed.Should().Be(200);
        maxOutstanding.Should().BeLessThanOrEqualTo(bound);
    }

    [Fact]
    public async Task To_Batcher_AddsEveryElementAndFlushesAtTheEnd()
    {
        var batches = new ConcurrentQueue<int[]>();
        var batcher = Batcher.Create<int>((b, _) => { batches.Enqueue(b.ToArray()); return default; }, new BatchOptions { MaxCount = 4, MaxAge = Timeout.InfiniteTimeSpan });

        await DataStream.From(Enumerable.Range(0, 10)).To(batcher).RunAsync().WaitAsync(TestHost.Wait);
        await batcher.CompleteAsync();

        batches.Select(b => b.Length).Should().Equal(4, 4, 2);
        batches.SelectMany(b => b).Should().Equal(Enumerable.Range(0, 10));
    }

    [Fact]
    public async Task To_Channel_CompletesItWhenTheInputIsExhausted()
    {
        var output = Channel.CreateUnbounded<int>();

        await DataStream.From(Enumerable.Range(0, 5)).Select(i => i * i).To(output.Writer).RunAsync().WaitAsync(TestHost.Wait);

        (await output.Reader.ReadAllAsync().ToListAsync()).Should().Equal(0, 1, 4, 9, 16);
    }

    [Fact]
    public void From_InvalidOptions_ListsTheProblems()
    {
        var act = () => DataStream.From(new[] { 1 }, new StreamOptions { BufferCapacity = 0, Name = " " });

        act.Should().Throw<ArgumentException>().Where(e => e.Message.Contains("BufferCapacity") && e.Message.Contains("Name must not be blank"));
    }

    private static async IAsyncEnumerable<int> Numbers(int count)
    {
        for (var i = 0; i < count; i++)
        {
            await Task.Yield();
            yield return i;
        }
    }

    [Fact]
    public async Task PartitionBy_StringKey_GoesToTheSamePartitionInEveryProcess()
    {
        // string.GetHashCode is randomized per process; the partition of a key must not be, so that a restarted
        // pipeline (and its snapshot of per-partition windows) sees each key in the partition it was in before.
        // The expected partitions are FNV-1a over the UTF-8 bytes, finished with the murmur3 mix, modulo 8,
        // computed outside .NET.
        string[] keys = ["order-1", "order-2", "order-3", "customer-42", "sensor-7", "\u00fcn\u00efc\u00f8d\u00e9", "\U0001F600"];

        await DataStream.From(keys, Options())
            .PartitionBy(k => k, partitions: 8)
            .Where(_ => throw new InvalidOperationException("record the partition"), FailurePolicy.Resume)
            .To(_ => { })
            .RunAsync().WaitAsync(TestHost.Wait);

        _deadLetters.ToDictionary(d => (string)d.Element!, d => d.Stage).Should().Equal(new Dictionary<string, string>
        {
            ["order-1"] = "Where@2#p4",
            ["order-2"] = "Where@2#p0",
            ["order-3"] = "Where@2#p6",
            ["customer-42"] = "Where@2#p4",
            ["sensor-7"] = "Where@2#p5",
            ["\u00fcn\u00efc\u00f8d\u00e9"] = "Where@2#p7",
            ["\U0001F600"] = "Where@2#p2",
        });
    }

    [Fact]
    public async Task StageName_GivenToAnOperator_NamesItInDeadLetters()
    {
        await DataStream.From([1, 2], Options())
            .Select(i => i == 2 ? throw new FormatException("bad") : i, FailurePolicy.Resume, name: "parse")
            .PartitionBy(i => i, partitions: 2)
            .Where(_ => throw new InvalidOperationException("drop"), FailurePolicy.Resume, name: "check")
            .To(_ => { })
            .RunAsync().WaitAsync(TestHost.Wait);

        _deadLetters.Select(d => d.Stage).Should().BeEquivalentTo("parse", $"check#p{PartitionHash.Partition(1, 2)}");
    }

    [Fact]
    public async Task StageNames_TwoStagesWithOneName_RunFailsNamingIt()
    {
        var run = async () => await DataStream.From([1])
            .Select(i => i, name: "twice")
            .Where(_ => true, name: "twice")
            .To(_ => { })
            .RunAsync().WaitAsync(TestHost.Wait);

        (await run.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain("two stages named 'twice'");
    }

    [Theory]
    [InlineData(" ")]
    [InlineData("a#b")]
    public void StageName_BlankOrWithHash_IsRejected(string name)
    {
        var act = () => DataStream.From([1]).Select(i => i, name: name);

        act.Should().Throw<ArgumentException>().Which.ParamName.Should().Be("name");
    }

    private StreamOptions Options(TimeProvider? time = null) => new()
    {
        Name = "test",
        TimeProvider = time,
        OnDeadLetter = (letter, _) =>
        {
            _deadLetters.Enqueue(letter);
            return default;
        },
    };
}
