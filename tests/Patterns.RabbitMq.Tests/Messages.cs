using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.RabbitMq.Tests;

[MessageName("tests.order-placed")]
public sealed record OrderPlaced(string OrderId, decimal Amount);

[MessageName("tests.work-item")]
public sealed record WorkItem(int Number);

[MessageName("tests.get-quote")]
public sealed record GetQuote(string Symbol);

[MessageName("tests.quote")]
public sealed record Quote(string Symbol, decimal Price);

/// <summary>Envelopes and subscription requests for tests that use the transport directly.</summary>
internal static class TestEnvelopes
{
    /// <summary>A subscription to a queue, in a consumer group of the same name.</summary>
    public static SubscriptionRequest Queue(string name) => new() { Address = TransportAddress.Queue(name), ConsumerGroup = name };

    /// <summary>A message whose payload is the number <paramref name="n"/>.</summary>
    public static Envelope Message(int n) => new() { MessageId = Guid.NewGuid(), MessageType = "test", Payload = BitConverter.GetBytes(n) };
}
