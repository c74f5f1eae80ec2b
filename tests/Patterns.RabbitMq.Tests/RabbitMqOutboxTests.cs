using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.EventSourcing;
using Patterns.EventSourcing.InMemory;
using Patterns.Messaging;
using Patterns.Outbox;
using Patterns.Queues;
using Patterns.Storage;

namespace Patterns.RabbitMq.Tests;

/// <summary>A store-writing handler with the outbox and inbox on the broker: its writes and messages happen once per message id.</summary>
public sealed class RabbitMqOutboxTests
{
    [Fact]
    public async Task StoreWritingHandler_SameMessageSentTwice_WritesAndPublishesOnce()
    {
        var store = new InMemoryEventStorage();
        var attempts = 0;
        var bothHandled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var followUps = new ConcurrentQueue<string>();
        var followUpArrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var host = await RabbitHost.StartAsync(nameof(StoreWritingHandler_SameMessageSentTwice_WritesAndPublishesOnce), b =>
        {
            b.AddEventSourcing(es => es.UseStorage(_ => store).AddEvent<OrderPlaced>());
            b.AddOutbox();
            b.AddMessageQueue(q => q.AddQueue("orders").AddConsumer<OrderPlaced>("orders", async (m, context, ct) =>
            {
                try
                {
                    var session = context.Services.GetRequiredService<IStoreSession>();
                    session.Handles(context);
                    session.Append($"order-{m.OrderId}", ExpectedVersion.Any, [new EventData(m)]);
                    session.Publish("orders.accepted", m);
                    await session.CommitAsync(ct);
                }
                finally
                {
                    if (Interlocked.Increment(ref attempts) == 2)
                    {
                        bothHandled.TrySetResult();
                    }
                }
            }));
            b.AddPubSub(ps => ps.Subscribe<OrderPlaced>((m, _, _) =>
            {
                followUps.Enqueue(m.OrderId);
                followUpArrived.TrySetResult();
                return default;
            }, "orders.accepted", o => o.ConsumerGroup = "shipping"));
        });
        var sender = host.Get<IQueueSender>();
        var id = Guid.NewGuid();

        await sender.SendAsync("orders", new OrderPlaced("42", 10m), new MessageOptions { MessageId = id });
        await sender.SendAsync("orders", new OrderPlaced("42", 10m), new MessageOptions { MessageId = id });
        await bothHandled.Task.WaitAsync(RabbitHost.Wait);
        await followUpArrived.Task.WaitAsync(RabbitHost.Wait);

        var events = new List<StoredEvent>();
        await foreach (var e in store.ReadStreamAsync("order-42"))
        {
            events.Add(e);
        }

        events.Should().HaveCount(1, "the second copy found its message in the inbox and committed nothing");
        followUps.Should().Equal("42");
        (await host.Get<IDeadLetterQueue>().PeekAsync("orders")).Should().BeEmpty("the duplicate was acknowledged as handled");
    }
}
