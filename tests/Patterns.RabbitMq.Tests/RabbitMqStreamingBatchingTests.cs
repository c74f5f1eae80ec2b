using Microsoft.Extensions.Hosting;
using Patterns.Batching;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.Streaming;
using Patterns.Transport;

namespace Patterns.RabbitMq.Tests;

/// <summary>
/// Every streaming and batching source that a transport feeds, on the broker, with the messages sent by another host:
/// a container of its own that shares nothing in memory with the receiver (its own message type registry too), as a
/// separate process would. The receiver knows the message type only from its source's element type.
/// </summary>
public sealed class RabbitMqStreamingBatchingTests
{
    [Fact]
    public async Task StreamFromQueue_MessagesSentByAnotherHost_AreStreamed()
    {
        await Broker.RequireAsync();
        var prefix = Broker.Prefix("stream-q");
        var received = new Collector<int>();
        await using var receiver = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddStreaming(s => s.AddPipeline(
            "work-stream",
            sp => DataStream.FromQueue<WorkItem>(sp, "work").Select(w => w.Number).To(received.Add))));
        await using var sender = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddPatterns());

        for (var i = 0; i < 5; i++)
        {
            await sender.Get<IQueueSender>().SendAsync("work", new WorkItem(i));
        }

        await WaitForAllOrDeadLetterAsync(received, 5, receiver, "work");
        received.Items.Should().Equal(0, 1, 2, 3, 4);
    }

    [Fact]
    public async Task StreamFromSubscription_MessagesPublishedByAnotherHost_AreStreamed()
    {
        await Broker.RequireAsync();
        var prefix = Broker.Prefix("stream-t");
        var received = new Collector<string>();
        await using var receiver = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddStreaming(s => s.AddPipeline(
            "order-stream",
            sp => DataStream.FromSubscription<OrderPlaced>(sp, "orders.*", "order-stream").Select(o => o.OrderId).To(received.Add))));
        await using var sender = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddPatterns());

        for (var i = 0; i < 5; i++)
        {
            await sender.Get<IPublisher>().PublishAsync("orders.placed", new OrderPlaced($"o-{i}", i));
        }

        await WaitForAllOrDeadLetterAsync(received, 5, receiver, "order-stream");
        received.Items.Should().Equal("o-0", "o-1", "o-2", "o-3", "o-4");
    }

    [Fact]
    public async Task BatchConsumerOfAQueue_MessagesSentByAnotherHost_AreHandledInBatches()
    {
        await Broker.RequireAsync();
        var prefix = Broker.Prefix("batch-q");
        var batches = new Collector<int[]>();
        var items = new Collector<int>();
        await using var receiver = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddBatching(bb => bb.AddBatchHandler<WorkItem>(
            TransportAddress.Queue("batched"),
            (batch, _) =>
            {
                var numbers = batch.ToArray().Select(w => w.Number).ToArray();
                batches.Add(numbers);
                foreach (var number in numbers)
                {
                    items.Add(number);
                }

                return default;
            },
            o =>
            {
                o.MaxCount = 5;
                o.MaxAge = TimeSpan.FromMinutes(5);
            })));
        await using var sender = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddPatterns());

        for (var i = 0; i < 10; i++)
        {
            await sender.Get<IQueueSender>().SendAsync("batched", new WorkItem(i));
        }

        await WaitForAllOrDeadLetterAsync(items, 10, receiver, "batched");
        batches.Items.Should().HaveCount(2).And.OnlyContain(b => b.Length == 5);
        items.Items.Should().BeEquivalentTo(Enumerable.Range(0, 10));
    }

    [Fact]
    public async Task BatchConsumerOfASubscription_MessagesPublishedByAnotherHost_AreHandledInBatches()
    {
        await Broker.RequireAsync();
        var prefix = Broker.Prefix("batch-t");
        var items = new Collector<string>();
        await using var receiver = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddBatching(bb => bb.AddBatchHandler<OrderPlaced>(
            TransportAddress.Topic("orders.*"),
            (batch, _) =>
            {
                foreach (var order in batch.ToArray())
                {
                    items.Add(order.OrderId);
                }

                return default;
            },
            o =>
            {
                o.ConsumerGroup = "order-batches";
                o.MaxCount = 5;
                o.MaxAge = TimeSpan.FromMinutes(5);
            })));
        await using var sender = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddPatterns());

        for (var i = 0; i < 10; i++)
        {
            await sender.Get<IPublisher>().PublishAsync("orders.placed", new OrderPlaced($"o-{i}", i));
        }

        await WaitForAllOrDeadLetterAsync(items, 10, receiver, "order-batches");
        items.Items.Should().BeEquivalentTo(Enumerable.Range(0, 10).Select(i => $"o-{i}"));
    }

    /// <summary>
    /// Waits until <paramref name="count"/> items have arrived; fails at once, with the reason, when the receiver
    /// dead-letters a message instead (as it did when the source had not registered its message type).
    /// </summary>
    private static async Task WaitForAllOrDeadLetterAsync<T>(Collector<T> collector, int count, RabbitHost receiver, string deadLetterQueue)
    {
        var arrived = collector.WaitForAsync(count);
        var letters = receiver.Get<IDeadLetterQueue>();
        while (!arrived.IsCompleted)
        {
            var dead = await letters.PeekAsync(deadLetterQueue);
            dead.Should().BeEmpty($"every message should reach the receiver, but it dead-lettered: {string.Join(" | ", dead.Select(d => d.Reason))}");
            await Task.Yield();
        }

        await arrived;
    }
}
