using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.Testing;
using Patterns.Transport;
using Polly;
using Polly.Retry;

namespace Patterns.Core.Tests.Queues;

public sealed record Job(int Id, string? Key = null);

public sealed class MessageQueueTests
{
    [Fact]
    public async Task Send_CompetingConsumers_EachJobHandledExactlyOnce()
    {
        const int count = 20_000;
        var seen = new int[count];
        var byConsumer = new ConcurrentDictionary<string, int>();
        var remaining = count;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        ValueTask Handle(string consumer, Job job)
        {
            Interlocked.Increment(ref seen[job.Id]);
            byConsumer.AddOrUpdate(consumer, 1, (_, n) => n + 1);
            if (Interlocked.Decrement(ref remaining) == 0)
            {
                done.SetResult();
            }

            return default;
        }

        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q
            .AddQueue("jobs", o => o.Capacity = 256)
            .AddConsumer<Job>("jobs", (j, _, _) => Handle("a", j), o => o.Concurrency = 4)
            .AddConsumer<Job>("jobs", (j, _, _) => Handle("b", j), o => o.Concurrency = 4)), harness: false);
        var sender = host.Services.GetRequiredService<IQueueSender>();

        await Task.WhenAll(Enumerable.Range(0, 4).Select(p => Task.Run(async () =>
        {
            for (var i = p; i < count; i += 4)
            {
                await sender.SendAsync("jobs", new Job(i));
            }
        })));
        await done.Task.WaitAsync(TestHost.Wait);

        seen.Should().OnlyContain(n => n == 1);
        byConsumer.Values.Sum().Should().Be(count);
    }

    [Fact]
    public async Task Send_PartitionKeys_OrderPerKeyHoldsAtConcurrencyEight()
    {
        const int keys = 32;
        const int perKey = 500;
        var received = new ConcurrentDictionary<string, List<int>>();
        var remaining = keys * perKey;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddConsumer<Job>("ordered", async (job, _, _) =>
        {
            var list = received.GetOrAdd(job.Key!, _ => []);
            lock (list)
            {
                list.Add(job.Id);
            }

            await Task.Yield();
            if (Interlocked.Decrement(ref remaining) == 0)
            {
                done.SetResult();
            }
        }, o => o.Concurrency = 8)), harness: false);
        var sender = host.Services.GetRequiredService<IQueueSender>();

        for (var i = 0; i < perKey; i++)
        {
            for (var k = 0; k < keys; k++)
            {
                await sender.SendAsync("ordered", new Job(i, $"k{k}"), new MessageOptions { PartitionKey = $"k{k}" });
            }
        }

        await done.Task.WaitAsync(TestHost.Wait);
        received.Should().HaveCount(keys);
        received.Values.Should().OnlyContain(list => list.SequenceEqual(Enumerable.Range(0, perKey)));
    }

    [Fact]
    public async Task Consumer_HandlerThrows_RetriedOnVirtualTimeThenDeadLetteredAndLoopContinues()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var attempts = new ConcurrentDictionary<int, int>();
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddConsumer<Job>("work", (job, _, _) =>
        {
            attempts.AddOrUpdate(job.Id, 1, (_, n) => n + 1);
            return job.Id == 1 ? throw new InvalidOperationException($"job {job.Id} is poison") : default;
        }, o => o.Retry = new RetryStrategyOptions { MaxRetryAttempts = 3, Delay = TimeSpan.FromSeconds(1), BackoffType = DelayBackoffType.Exponential, UseJitter = false })), time);
        var harness = host.Harness();
        var sender = host.Services.GetRequiredService<IQueueSender>();

        await sender.SendAsync("work", new Job(1));
        await sender.SendAsync("work", new Job(2));
        // Exponential backoff: 1 s, 2 s, 4 s. Nothing happens until virtual time moves.
        foreach (var step in new[] { 1, 2, 4 })
        {
            await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
            attempts[1].Should().Be(1 + Array.IndexOf(new[] { 1, 2, 4 }, step));
            fake.Advance(TimeSpan.FromSeconds(step));
        }

        await harness.WaitForDeliveriesAsync(2).WaitAsync(TestHost.Wait);
        attempts[1].Should().Be(4, "one attempt plus three retries");
        attempts[2].Should().Be(1, "the loop keeps going after a poison message");
        var dead = await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "work", 1);
        dead.Should().ContainSingle();
        dead[0].ExceptionType.Should().Be(typeof(InvalidOperationException).FullName);
        dead[0].ExceptionMessage.Should().Be("job 1 is poison");
        dead[0].Reason.Should().StartWith("Handler delegate<Job> failed on delivery 1").And.Contain("job 1 is poison");
        dead[0].Envelope.TryGetHeader(EnvelopeHeaders.DeadLetterReason, out _).Should().BeTrue();
    }

    [Fact]
    public async Task Consumer_MaxRedeliveries_RedeliversAfterDelayThenDeadLetters()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var deliveries = new ConcurrentQueue<int>();
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddConsumer<Job>("redeliver", (job, ctx, _) =>
        {
            deliveries.Enqueue(ctx.DeliveryCount);
            throw new TimeoutException("downstream is down");
        }, o => { o.Retry = null; o.MaxRedeliveries = 2; o.RedeliveryDelay = TimeSpan.FromMinutes(1); })), time);
        var harness = host.Harness();

        await host.Services.GetRequiredService<IQueueSender>().SendAsync("redeliver", new Job(1));
        await harness.WaitForDeliveriesAsync(1).WaitAsync(TestHost.Wait);
        deliveries.Should().Equal(0);
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromMinutes(1));
        await harness.WaitForDeliveriesAsync(2).WaitAsync(TestHost.Wait);
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromMinutes(1));
        await harness.WaitForDeliveriesAsync(3).WaitAsync(TestHost.Wait);

        deliveries.Should().Equal(0, 1, 2);
        harness.Deliveries.Select(d => d.Outcome).Should().Equal(SettlementKind.Retry, SettlementKind.Retry, SettlementKind.DeadLetter);
        (await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "redeliver", 1)).Should().ContainSingle()
            .Which.Reason.Should().Contain("delivery 3");
    }

    [Fact]
    public async Task DeadLetterQueue_Replay_DeliversAgainAndEmptiesQueue()
    {
        var fail = true;
        var handled = new ConcurrentQueue<int>();
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddConsumer<Job>("replay", (job, _, _) =>
        {
            if (Volatile.Read(ref fail))
            {
                throw new InvalidOperationException("not yet");
            }

            handled.Enqueue(job.Id);
            return default;
        }, o => o.Retry = null)));
        var harness = host.Harness();
        var dlq = host.Services.GetRequiredService<IDeadLetterQueue>();
        await host.Services.GetRequiredService<IQueueSender>().SendAsync("replay", new Job(5));
        await harness.WaitForDeliveriesAsync(1).WaitAsync(TestHost.Wait);
        await DeadLetters.WaitForAsync(dlq, "replay", 1);

        Volatile.Write(ref fail, false);
        (await dlq.ReplayAsync("replay")).Should().Be(1);
        await harness.WaitForDeliveriesAsync(2).WaitAsync(TestHost.Wait);

        handled.Should().Equal(5);
        (await dlq.PeekAsync("replay")).Should().BeEmpty();
    }

    [Fact]
    public async Task AddConsumer_WithAHandlerClass_HandlesTheQueuesJobs_AndItsFailuresNameTheClass()
    {
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddConsumer<Job, PoisonJobHandler>("classy", o => o.Retry = null)));
        var sender = host.Services.GetRequiredService<IQueueSender>();

        await sender.SendAsync("classy", new Job(1));
        await sender.SendAsync("classy", new Job(2));
        await host.Harness().WaitForDeliveriesAsync(2).WaitAsync(TestHost.Wait);

        host.Harness().Deliveries.Select(d => (d.ConsumerGroup, d.Outcome)).Should().BeEquivalentTo(
            [("classy", SettlementKind.DeadLetter), ("classy", SettlementKind.Ack)], "the class handled both jobs, as the queue's one consumer");
        (await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "classy", 1)).Should().ContainSingle()
            .Which.Reason.Should().StartWith("Handler PoisonJobHandler failed on delivery 1");
    }

    [Fact]
    public async Task Send_RejectModeWhenFull_ThrowsQueueFullException()
    {
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddQueue("small", o => { o.Capacity = 1; o.FullMode = QueueFullMode.Reject; })));
        var sender = host.Services.GetRequiredService<IQueueSender>();
        await sender.SendAsync("small", new Job(1));

        var act = async () => await sender.SendAsync("small", new Job(2));

        (await act.Should().ThrowAsync<QueueFullException>()).Which.Message.Should().Be("Queue 'small' is full (capacity 1) and rejects new messages.");
    }

    [Fact]
    public async Task Send_UnknownQueue_ThrowsNamingTheQueue()
    {
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue());

        var act = async () => await host.Services.GetRequiredService<IQueueSender>().SendAsync("nope", new Job(1));

        (await act.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().StartWith("Queue 'nope' does not exist.");
    }
}

public sealed class PoisonJobHandler : IMessageHandler<Job>
{
    public ValueTask HandleAsync(Job message, MessageContext context, CancellationToken cancellationToken) =>
        message.Id == 1 ? throw new InvalidOperationException("job 1 is poison") : default;
}
