using Patterns.Messaging;
using Patterns.Transport;
using RabbitMQ.Client;

using static Patterns.RabbitMq.Tests.TestEnvelopes;

namespace Patterns.RabbitMq.Tests;

/// <summary>
/// A message handed back uncounted (<see cref="Settlement.Release"/>) is published again with its count and the release
/// mark, then acknowledged. When that copy cannot be published (the drain deadline passed, the broker refused it, the
/// publish failed, or the channel it came on closed meanwhile), the message goes back to the broker by a plain requeue,
/// which AMQP marks redelivered: the copy that comes again must still show its count unchanged and the release mark,
/// and the broker must hold it once. A retry after a failure falling back the same way stays counted.
/// </summary>
public sealed class RabbitMqHandBackCountingTests : IAsyncLifetime
{
    private static readonly TimeSpan Wait = RabbitHost.Wait;

    private readonly List<MessageTransport> _transports = [];

    public ValueTask InitializeAsync() => default;

    public async ValueTask DisposeAsync()
    {
        foreach (var transport in _transports)
        {
            await transport.DisposeAsync();
            await Broker.DeleteTopologyAsync(transport);
        }
    }

    [Fact]
    public async Task Release_AfterTheDrainDeadline_ComesBackUncountedAndMarked()
    {
        var transport = await CreateSutAsync();
        var sent = Message(1);
        await transport.SendAsync("work", sent);
        var taken = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = await transport.SubscribeAsync(Request(), async (e, _) =>
        {
            taken.TrySetResult(e);
            await go.Task;
            return Settlement.Release("stopping");
        });
        (await taken.Task.WaitAsync(Wait)).DeliveryCount.Should().Be(0);

        // The deadline has passed before the handler hands the message back: nothing more is published.
        var stopping = first.StopAsync(new CancellationToken(canceled: true));
        go.TrySetResult();
        await stopping.WaitAsync(Wait);
        await first.DisposeAsync();
        (await CountsAsync(transport)).Should().Be((1, 0), "the message went back to its queue once, and no copy went to the retry queue");

        var again = await NextDeliveryAsync(transport);

        again.MessageId.Should().Be(sent.MessageId);
        again.DeliveryCount.Should().Be(0, "a message handed back on a stop was not handled: no delivery is counted");
        again.Headers.Should().ContainKey(EnvelopeHeaders.Released, "a consumer must be able to tell that it may have taken the message before");
    }

    [Fact]
    public async Task Release_WhenTheBrokerRefusesTheCopy_ComesBackUncountedAndMarked()
    {
        var transport = await CreateSutAsync();
        var refusals = 0;
        transport.Options.RedeliveryFault = _ => Interlocked.Increment(ref refusals) > 1;
        var sent = Message(1);
        await transport.SendAsync("work", sent);

        var again = await ReleasedOnceThenTakenAsync(transport);

        refusals.Should().Be(1);
        again.MessageId.Should().Be(sent.MessageId);
        again.DeliveryCount.Should().Be(0, "a released message was not handled: no delivery is counted");
        again.Headers.Should().ContainKey(EnvelopeHeaders.Released);
        (await CountsAsync(transport)).Should().Be((0, 0), "the copy that came again was the only one");
    }

    [Fact]
    public async Task Release_WhenPublishingTheCopyFails_ComesBackUncountedAndMarked()
    {
        var transport = await CreateSutAsync();
        var failures = 0;
        transport.Options.RedeliveryFault = _ => Interlocked.Increment(ref failures) > 1 ? true : throw new InvalidOperationException("injected publish failure");
        var sent = Message(1);
        await transport.SendAsync("work", sent);

        var again = await ReleasedOnceThenTakenAsync(transport);

        failures.Should().Be(1);
        again.MessageId.Should().Be(sent.MessageId);
        again.DeliveryCount.Should().Be(0, "a released message was not handled: no delivery is counted");
        again.Headers.Should().ContainKey(EnvelopeHeaders.Released);
        (await CountsAsync(transport)).Should().Be((0, 0), "the copy that came again was the only one");
    }

    [Fact]
    public async Task Release_AfterItsChannelClosed_ComesBackUncountedAndMarked()
    {
        var transport = await CreateSutAsync();
        var sent = Message(1);
        await transport.SendAsync("work", sent);
        var taken = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var settled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = (RabbitMqSubscription)await transport.SubscribeAsync(Request(), async (e, _) =>
        {
            taken.TrySetResult();
            await go.Task;
            return Settlement.Release("stopping");
        });
        await taken.Task.WaitAsync(Wait);

        // Closed by the application, the channel is not consumed on again: the message goes back to the broker now, and
        // the handler hands it back afterwards, on a channel that is gone.
        await first.CurrentChannel!.CloseAsync();
        go.TrySetResult();
        await first.StopAsync(CancellationToken.None).WaitAsync(Wait);
        await first.DisposeAsync();
        (await CountsAsync(transport)).Should().Be((1, 0), "the message went back to its queue once, and no copy went to the retry queue");

        var again = await NextDeliveryAsync(transport);

        again.MessageId.Should().Be(sent.MessageId);
        again.DeliveryCount.Should().Be(0, "a released message was not handled: no delivery is counted");
        again.Headers.Should().ContainKey(EnvelopeHeaders.Released);
    }

    [Fact]
    public async Task Release_WhenItsChannelClosesBeforeTheAck_EveryCopyComesUncountedAndMarked()
    {
        var transport = await CreateSutAsync();
        var sent = Message(1);
        var first = (RabbitMqSubscription)await transport.SubscribeAsync(Request(), (_, _) => new(Settlement.Release("let go")));

        // The copy is published, then the acknowledgement finds the channel closed: the broker holds the copy and the
        // original (taken back with the channel), the same message twice, which at-least-once allows.
        var closed = 0;
        var publishing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        transport.Options.RedeliveryFault = _ =>
        {
            if (Interlocked.Exchange(ref closed, 1) == 0)
            {
                first.CurrentChannel!.CloseAsync().GetAwaiter().GetResult();
                publishing.TrySetResult();
            }

            return true;
        };
        await transport.SendAsync("work", sent);
        await publishing.Task.WaitAsync(Wait);
        await first.StopAsync(CancellationToken.None).WaitAsync(Wait);
        await first.DisposeAsync();
        closed.Should().Be(1);
        (await CountsAsync(transport)).Should().Be((1, 1));

        var copies = new Collector<Envelope>();
        await using (var second = await transport.SubscribeAsync(Request(), (e, _) =>
        {
            copies.Add(e);
            return new(Settlement.Ack);
        }))
        {
            await copies.WaitForAsync(2);
        }

        copies.Items.Should().AllSatisfy(e =>
        {
            e.MessageId.Should().Be(sent.MessageId);
            e.DeliveryCount.Should().Be(0, "a released message was not handled: no delivery is counted");
            e.Headers.Should().ContainKey(EnvelopeHeaders.Released);
        });
    }

    [Fact]
    public async Task Release_OfAMessageDeliveredBefore_KeepsItsCount()
    {
        var transport = await CreateSutAsync();
        var refusals = 0;
        transport.Options.RedeliveryFault = _ => Interlocked.Increment(ref refusals) > 1;
        var sent = Message(1) with { DeliveryCount = 2 };
        await transport.SendAsync("work", sent);

        var again = await ReleasedOnceThenTakenAsync(transport);

        refusals.Should().Be(1);
        again.DeliveryCount.Should().Be(2, "the release leaves the count as it was");
        again.Headers.Should().ContainKey(EnvelopeHeaders.Released);
    }

    [Fact]
    public async Task Retry_WhenTheBrokerRefusesTheCopy_IsStillCounted()
    {
        var transport = await CreateSutAsync();
        var refusals = 0;
        transport.Options.RedeliveryFault = _ => Interlocked.Increment(ref refusals) > 1;
        var sent = Message(1);
        await transport.SendAsync("work", sent);
        var again = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        var deliveries = 0;
        await using var subscription = await transport.SubscribeAsync(Request(), (e, _) =>
        {
            if (Interlocked.Increment(ref deliveries) == 1)
            {
                return new(Settlement.Retry(TimeSpan.Zero, new InvalidOperationException("handler failed")));
            }

            again.TrySetResult(e);
            return new(Settlement.Ack);
        });

        var copy = await again.Task.WaitAsync(Wait);

        refusals.Should().Be(1);
        copy.MessageId.Should().Be(sent.MessageId);
        copy.DeliveryCount.Should().Be(1, "the handler failed on the first delivery: it counts");
        (copy.Headers?.ContainsKey(EnvelopeHeaders.Released) ?? false).Should().BeFalse();
    }

    [Fact]
    public async Task Consumer_WhoseConsumeTheBrokerCancelled_IsNotWaitedOnByAStop()
    {
        var transport = await CreateSutAsync();
        var owner = (RabbitMqSubscription)await transport.SubscribeAsync(Request(), (_, _) => new(Settlement.Ack));
        await owner.StopAsync(CancellationToken.None).WaitAsync(Wait);
        await owner.DisposeAsync();

        // A consumer of two queues, as a subscription with a retry queue has; its owner is stopping, so a cancel from the
        // broker starts no new consumer.
        await using var connection = await Broker.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync();
        var kept = (await channel.QueueDeclareAsync(string.Empty, durable: false, exclusive: true, autoDelete: true)).QueueName;
        var deleted = (await channel.QueueDeclareAsync(string.Empty, durable: false, exclusive: true, autoDelete: true)).QueueName;
        var consumer = new RabbitMqSubscription.Consumer(owner, channel);
        var keptTag = await channel.BasicConsumeAsync(kept, autoAck: false, consumer);
        consumer.Started(keptTag);
        var deletedTag = await channel.BasicConsumeAsync(deleted, autoAck: false, consumer);
        consumer.Started(deletedTag);

        // The broker cancels the consumer of a deleted queue: the client forgets it, so the cancel-ok of a basic.cancel the
        // stop would send for it goes to the client's fallback consumer, and a stop waiting for it would wait until its
        // deadline (for ever without one).
        await using (var other = await connection.CreateChannelAsync())
        {
            await other.QueueDeleteAsync(deleted);
        }

        await consumer.CancelledAsync(deletedTag).WaitAsync(Wait);

        consumer.StartedTags.Should().Equal([keptTag], "a consumer the broker cancelled is not cancelled again");
        await channel.BasicCancelAsync(keptTag, noWait: false);
        await consumer.CancelledAsync(keptTag).WaitAsync(Wait);
    }

    private static SubscriptionRequest Request() => Queue("work") with { Concurrency = 2 };

    /// <summary>Subscribes with a handler that releases the first delivery and returns the next one.</summary>
    private static async Task<Envelope> ReleasedOnceThenTakenAsync(MessageTransport transport)
    {
        var again = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        var deliveries = 0;
        await using var subscription = await transport.SubscribeAsync(Request(), (e, _) =>
        {
            if (Interlocked.Increment(ref deliveries) == 1)
            {
                return new(Settlement.Release("let go"));
            }

            again.TrySetResult(e);
            return new(Settlement.Ack);
        });
        var copy = await again.Task.WaitAsync(Wait);
        await subscription.StopAsync(CancellationToken.None).WaitAsync(Wait);
        return copy;
    }

    private static async Task<Envelope> NextDeliveryAsync(MessageTransport transport)
    {
        var again = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var subscription = await transport.SubscribeAsync(Request(), (e, _) =>
        {
            again.TrySetResult(e);
            return new(Settlement.Ack);
        });
        var copy = await again.Task.WaitAsync(Wait);
        await subscription.StopAsync(CancellationToken.None).WaitAsync(Wait);
        return copy;
    }

    /// <summary>The messages ready in the queue and in its retry queue.</summary>
    private static async Task<(uint Queue, uint Retry)> CountsAsync(RabbitMqMessageTransport transport)
    {
        await using var connection = await Broker.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync();
        var queue = await channel.QueueDeclarePassiveAsync(transport.Topology.Queue("work"));
        var retry = await channel.QueueDeclarePassiveAsync(transport.Topology.RetryQueue("work"));
        return (queue.MessageCount, retry.MessageCount);
    }

    private async Task<RabbitMqMessageTransport> CreateSutAsync()
    {
        var transport = (RabbitMqMessageTransport)await Broker.CreateAsync(_transports, "handback-count", null);
        await transport.DeclareQueueAsync("work", new QueueSettings());
        return transport;
    }
}
