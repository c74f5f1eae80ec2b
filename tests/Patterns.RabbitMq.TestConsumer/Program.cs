// Consumes one queue on the RabbitMQ transport and never finishes handling: the test that starts this
// process kills it mid-message to show that the broker delivers the message again to another consumer.
// Usage: Patterns.RabbitMq.TestConsumer <amqp uri> <name prefix> <queue>
using Patterns.RabbitMq;
using Patterns.Transport;

if (args.Length != 3)
{
    Console.Error.WriteLine("usage: Patterns.RabbitMq.TestConsumer <amqp uri> <name prefix> <queue>");
    return 2;
}

var transport = RabbitMqTransport.Create(new RabbitMqTransportOptions { Uri = new Uri(args[0]), NamePrefix = args[1] });
await using (transport.ConfigureAwait(false))
{
    var queue = args[2];
    await transport.SubscribeAsync(
        new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue },
        async (envelope, cancellationToken) =>
        {
            Console.WriteLine($"HANDLING {envelope.MessageId} {envelope.DeliveryCount}");
            await Task.Delay(Timeout.InfiniteTimeSpan, cancellationToken).ConfigureAwait(false);
            return Settlement.Ack;
        }).ConfigureAwait(false);
    Console.WriteLine("READY");
    await Task.Delay(Timeout.InfiniteTimeSpan).ConfigureAwait(false);
}

return 0;
