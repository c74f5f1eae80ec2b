// A peer-link node in its own process, for the process tests: it listens on the port given and links to the peer given.
// - queue "echo": each message's payload is sent back to its ReplyTo (request-response);
// - topic "news", consumer group "remote-news": each message is answered to its ReplyTo with header kind=news (pub/sub);
// - queue "work": each message is answered to its ReplyTo with header kind=work (a queue whose other consumers are on
//   other nodes).
// Every answer carries the message's id as its CorrelationId and header node=<node id>. It prints "ready" once its
// subscriptions are announced, then runs until killed, or until its standard input ends: the test process holds the
// other end of that pipe, so a test process that dies (a crash, a hang killed by the runner) takes this node with it
// instead of leaving it running, holding its port.
using Patterns.Messaging;
using Patterns.PeerLinks;
using Patterns.Transport;

_ = Task.Run(async () =>
{
    // From the start, not only once ready: a node whose peer never comes up waits for it without end.
    await Console.In.ReadToEndAsync();
    Environment.Exit(0);
});

var options = new PeerLinksOptions
{
    NodeId = args[0],
    ListenUri = new Uri($"http://127.0.0.1:{args[1]}"),
    SharedSecret = "mesh-secret",
    MaxReconnectDelay = TimeSpan.FromMilliseconds(250),
};
options.Peers.Add(new Uri($"http://127.0.0.1:{args[2]}"));
await using var node = await PeerLinksTransport.StartAsync(options);

DeliveryHandler Answer(string kind) => async (e, ct) =>
{
    if (e.ReplyTo is { } replyTo)
    {
        await node.SendAsync(replyTo, new Envelope { MessageId = Guid.NewGuid(), MessageType = $"{kind}.reply", CorrelationId = e.MessageId, Payload = e.Payload, Headers = new Dictionary<string, string> { ["node"] = args[0], ["kind"] = kind } }, ct);
    }

    return Settlement.Ack;
};

await node.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue("echo"), ConsumerGroup = "echo", Concurrency = 8 }, Answer("echo"));
await node.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Topic("news"), ConsumerGroup = "remote-news", Concurrency = 4 }, Answer("news"));
await node.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue("work"), ConsumerGroup = "work", Concurrency = 4 }, Answer("work"));
await node.Membership.WaitForAllUpAsync();
Console.WriteLine("ready");
await Task.Delay(Timeout.InfiniteTimeSpan);
