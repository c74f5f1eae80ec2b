using Microsoft.Extensions.Diagnostics.HealthChecks;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.Core.Tests.Transport;

/// <summary>The small value types and exceptions of the transport SPI: what they say and what they carry.</summary>
public sealed class TransportTypesTests
{
    [Fact]
    public void TransportAddress_SaysWhetherItIsAQueueOrATopic()
    {
        TransportAddress.Queue("orders").ToString().Should().Be("queue:orders");
        TransportAddress.Topic("orders.*").ToString().Should().Be("topic:orders.*");
    }

    [Fact]
    public void SubscriptionRequest_QueueName_IsTheQueueOrTheGroup()
    {
        new SubscriptionRequest { Address = TransportAddress.Queue("orders"), ConsumerGroup = "g" }.QueueName.Should().Be("orders");
        new SubscriptionRequest { Address = TransportAddress.Topic("orders.*"), ConsumerGroup = "g" }.QueueName.Should().Be("g");
    }

    [Fact]
    public void QueueFullException_NamesTheQueueAndItsCapacity()
    {
        var full = new QueueFullException("orders", 3);

        full.Queue.Should().Be("orders");
        full.Capacity.Should().Be(3);
        full.Message.Should().Be("Queue 'orders' is full (capacity 3) and rejects new messages.");
    }

    [Fact]
    public void QueueNotFoundException_NamesTheQueue()
    {
        var cause = new InvalidOperationException("cause");

        var missing = new QueueNotFoundException("orders", "Queue 'orders' does not exist.", cause);

        missing.Queue.Should().Be("orders");
        missing.Message.Should().Be("Queue 'orders' does not exist.");
        missing.InnerException.Should().BeSameAs(cause);
    }

    [Fact]
    public void MessageTooLargeException_WithoutTheOption_StatesSizeAndLimit()
    {
        var tooLarge = new MessageTooLargeException("orders", 5, 4);

        tooLarge.Size.Should().Be(5);
        tooLarge.Limit.Should().Be(4);
        tooLarge.LimitOption.Should().BeNull();
        tooLarge.Message.Should().Be("The message to 'orders' has a 5-byte payload, larger than the transport's limit of 4 bytes.");
    }

    [Fact]
    public async Task Send_PayloadExactlyAtTheLimit_IsAccepted()
    {
        await using var transport = InMemoryTransport.Create(new InMemoryTransportOptions { MaxPayloadBytes = 4 });
        await transport.DeclareQueueAsync("small", new QueueSettings());

        var act = async () => await transport.SendAsync("small", new Envelope { MessageId = Guid.NewGuid(), Payload = "1234"u8.ToArray() });

        await act.Should().NotThrowAsync();
    }

    [Fact]
    public void ComponentHealth_HealthyAndDegraded_CarryTheirStatus()
    {
        ComponentHealth.Healthy("c", "ok").Should().Be(new ComponentHealth("c", HealthStatus.Healthy, "ok"));
        ComponentHealth.Degraded("c", "down").Should().Be(new ComponentHealth("c", HealthStatus.Degraded, "down"));
    }

    [Fact]
    public async Task TransportSubscription_Defaults_ReportHealthyAndDisposeStopsWithoutDraining()
    {
        var subscription = new RecordingSubscription();

        subscription.GetHealth().Should().Be(ComponentHealth.Healthy("group", "consuming"));
        await subscription.DisposeAsync();

        subscription.StoppedWith.Should().NotBeNull("disposing stops the subscription");
        subscription.StoppedWith!.Value.IsCancellationRequested.Should().BeTrue("disposing does not drain");
    }

    private sealed class RecordingSubscription : TransportSubscription
    {
        public CancellationToken? StoppedWith { get; private set; }

        public override SubscriptionRequest Request { get; } =
            new() { Address = TransportAddress.Queue("orders"), ConsumerGroup = "group" };

        public override Task StopAsync(CancellationToken drainDeadline)
        {
            StoppedWith = drainDeadline;
            return Task.CompletedTask;
        }
    }
}
