// A peer-link node in its own process, for the process-kill tests: it listens on the port given, links to the
// peer given, and answers every message on queue "echo" by sending its payload back to the message's ReplyTo.
// It prints "ready" once its subscription is announced, then runs until killed.
using Patterns.Messaging;
using Patterns.PeerLinks;
using Patterns.Transport;

var options = new PeerLinksOptions
{
    NodeId = args[0],
    ListenUri = new Uri($"http://127.0.0.1:{args[1]}"),
    SharedSecret = "mesh-secret",
    MaxReconnectDelay = TimeSpan.FromMilliseconds(250),
};
options.Peers.Add(new Uri($"http://127.0.0.1:{args[2]}"));
await using var node = await PeerLinksTransport.StartAsync(options);
await node.SubscribeAsync(
    new SubscriptionRequest { Address = TransportAddress.Queue("echo"), ConsumerGroup = "echo", Concurrency = 8 },
    async (e, ct) =>
    {
        await node.SendAsync(e.ReplyTo!, new Envelope { MessageId = Guid.NewGuid(), MessageType = "echo.reply", CorrelationId = e.MessageId, Payload = e.Payload, Headers = new Dictionary<string, string> { ["node"] = args[0] } }, ct);
        return Settlement.Ack;
    });
await node.Membership.WaitForAllUpAsync();
Console.WriteLine("ready");
await Task.Delay(Timeout.InfiniteTimeSpan);
