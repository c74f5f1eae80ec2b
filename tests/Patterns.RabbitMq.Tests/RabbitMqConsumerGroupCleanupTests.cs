using Patterns.Transport;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;
using static Patterns.RabbitMq.Tests.TestEnvelopes;

namespace Patterns.RabbitMq.Tests;

public sealed class RabbitMqConsumerGroupCleanupTests : IAsyncLifetime
{
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
    public async Task DeleteConsumerGroup_AbandonedGroup_DeletesItsQueuesWithTheirMessages()
    {
        var transport = (RabbitMqMessageTransport)await Broker.CreateAsync(_transports, "cleanup", null);
        var subscription = await transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Topic("old.*"), ConsumerGroup = "old-group" },
            (e, _) => new(Settlement.Ack));
        await subscription.StopAsync(CancellationToken.None);
        (await transport.PublishAsync("old.a", Message(1))).Should().BeTrue("the abandoned group still collects its topic");
        (await transport.PublishAsync("old.b", Message(2))).Should().BeTrue();

        var deleted = await RabbitMqTransport.DeleteConsumerGroupAsync(transport, "old-group");

        deleted.Should().Be(2);
        (await transport.PublishAsync("old.c", Message(3))).Should().BeFalse("no queue is bound to the topic any more");
        await using var connection = await new ConnectionFactory { Uri = Broker.Uri }.CreateConnectionAsync();
        foreach (var name in new[] { "old-group", "old-group.retry", "old-group.dlq" })
        {
            await using var channel = await connection.CreateChannelAsync();
            var passive = async () => await channel.QueueDeclarePassiveAsync(transport.Topology.Queue(name));
            (await passive.Should().ThrowAsync<OperationInterruptedException>()).Which.ShutdownReason!.ReplyCode.Should().Be(404, name);
        }
    }

    [Fact]
    public async Task DeleteConsumerGroup_GroupInUse_RefusesAndKeepsIt()
    {
        var transport = (RabbitMqMessageTransport)await Broker.CreateAsync(_transports, "cleanup-used", null);
        await using var subscription = await transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Topic("live.*"), ConsumerGroup = "live-group" },
            (e, _) => new(Settlement.Ack));

        var act = async () => await RabbitMqTransport.DeleteConsumerGroupAsync(transport, "live-group");

        (await act.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should()
            .Be($"Consumer group 'live-group' still has a consumer on queue '{transport.Topology.Queue("live-group")}': stop it before deleting the group.");
        (await transport.PublishAsync("live.x", Message(1))).Should().BeTrue();
    }

    [Fact]
    public async Task DeleteConsumerGroup_NotARabbitMqTransport_SaysSo()
    {
        await using var inMemory = Patterns.InMemory.InMemoryTransport.Create();

        var act = async () => await RabbitMqTransport.DeleteConsumerGroupAsync(inMemory, "x");

        (await act.Should().ThrowAsync<ArgumentException>()).Which.Message.Should().Contain("needs the RabbitMQ transport");
    }
}
