// PeerLinks: three processes share request-response, pub/sub and a work queue over peer links, with no broker.
//   dotnet run --project samples/PeerLinks
// starts node 0 here and nodes 1 and 2 as child processes. Node 0 sends requests, publishes orders and queues
// emails; nodes 1 and 2 handle them. Halfway, node 2 is killed: node 0 and node 1 carry on. Then node 2 starts
// again and links back in (the queue and groups hand it messages again). (Or run the nodes in three terminals: `-- --node 1 --ports 5701,5702,5703`.)
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.PeerLinks;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;
using PeerLinksSample;

var nodeArg = Array.IndexOf(args, "--node");
var portsArg = Array.IndexOf(args, "--ports");
var ports = portsArg >= 0 ? args[portsArg + 1].Split(',').Select(int.Parse).ToArray() : [FreePort(), FreePort(), FreePort()];
var node = nodeArg >= 0 ? int.Parse(args[nodeArg + 1]) : 0;

if (node != 0)
{
    using var worker = Node.Build(node, ports, worker: true);
    await worker.RunAsync();
    return 0;
}

var children = new Dictionary<int, Process>();
var output = new Output();
children[1] = Node.Spawn(1, ports, output);
children[2] = Node.Spawn(2, ports, output);
using var host = Node.Build(0, ports, worker: false);
await host.StartAsync();
var membership = host.Services.GetRequiredService<PeerMembership>();
var client = host.Services.GetRequiredService<IRequestClient>();
var publisher = host.Services.GetRequiredService<IPublisher>();
var emails = host.Services.GetRequiredService<IQueueSender>();
try
{
    await membership.WaitForAllUpAsync().WaitAsync(TimeSpan.FromSeconds(60));
    await output.WaitForAsync("[node-1] ready", "[node-2] ready");
    Console.WriteLine("node-0: linked to node-1 and node-2");
    await RoundAsync("round 1 (three nodes)", 1);

    children[2].Kill(entireProcessTree: true);
    await children[2].WaitForExitAsync();
    var stopped = Stopwatch.StartNew();
    while (membership.Peers.Any(p => p.State == PeerState.Up && p.NodeId == "node-2"))
    {
        if (stopped.Elapsed > TimeSpan.FromSeconds(60))
        {
            throw new TimeoutException("node-0 still sees node-2 up a minute after it was killed.");
        }

        await Task.Delay(10);
    }

    Console.WriteLine("node-0: node-2 stopped; node-0 and node-1 carry on");
    await RoundAsync("round 2 (node-2 down)", 2);

    children[2] = Node.Spawn(2, ports, output);
    await membership.WaitForAllUpAsync().WaitAsync(TimeSpan.FromSeconds(60));
    // The first node-2 said "ready" too: wait for the restarted one's (its own links up, so its replies reach node-0).
    await output.WaitForCountAsync(() => output.Count("[node-2] ready"), 2);
    Console.WriteLine("node-0: node-2 is back");
    var answeredBy = await RoundAsync("round 3 (node-2 restarted)", 3);
    if (!answeredBy.Contains("node-2"))
    {
        throw new InvalidOperationException("The restarted node-2 answered none of the requests: it did not take its share again.");
    }

    Console.WriteLine("done");
    return 0;
}
finally
{
    foreach (var child in children.Values)
    {
        child.Kill(entireProcessTree: true);
    }

    await host.StopAsync();
}

async Task<HashSet<string>> RoundAsync(string title, int round)
{
    Console.WriteLine($"node-0: {title}");
    var answeredBy = new HashSet<string>();
    for (var i = 1; i <= 4; i++)
    {
        var quote = await client.SendAsync<GetQuote, Quote>(new GetQuote($"SYM{round}{i}"));
        answeredBy.Add(quote.Node);
        Console.WriteLine($"node-0: request-response GetQuote(SYM{round}{i}) -> {quote.Price:0.00} from {quote.Node}");
    }

    var before = output.Count("billing charged") + output.Count("shipping packed") + output.Count("emailed");
    for (var i = 1; i <= 3; i++)
    {
        await publisher.PublishAsync("orders.placed", new OrderPlaced($"order-{round}-{i}", 10m * i));
    }

    for (var i = 1; i <= 4; i++)
    {
        await emails.SendAsync("emails", new SendEmail($"user{round}{i}@example.com"));
    }

    // Each order reaches billing once and shipping once (whichever node hosts them); each email is sent once.
    await output.WaitForCountAsync(() => output.Count("billing charged") + output.Count("shipping packed") + output.Count("emailed"), before + 10);
    return answeredBy;
}

static int FreePort()
{
    using var listener = new TcpListener(IPAddress.Loopback, 0);
    listener.Start();
    return ((IPEndPoint)listener.LocalEndpoint).Port;
}

namespace PeerLinksSample
{
    public sealed record GetQuote(string Symbol);

    public sealed record Quote(string Symbol, decimal Price, string Node);

    [MessageName("orders.placed")]
    public sealed record OrderPlaced(string OrderId, decimal Amount);

    public sealed record SendEmail(string To);

    /// <summary>The messages that travel between the processes, with their JSON code generated at compile time (NativeAOT).</summary>
    [System.Text.Json.Serialization.JsonSerializable(typeof(GetQuote))]
    [System.Text.Json.Serialization.JsonSerializable(typeof(Quote))]
    [System.Text.Json.Serialization.JsonSerializable(typeof(OrderPlaced))]
    [System.Text.Json.Serialization.JsonSerializable(typeof(SendEmail))]
    internal sealed partial class SampleJson : System.Text.Json.Serialization.JsonSerializerContext;

    internal static class Node
    {
        public static IHost Build(int index, int[] ports, bool worker)
        {
            var builder = Host.CreateApplicationBuilder();
            builder.Logging.SetMinimumLevel(LogLevel.Warning);
            builder.Services.AddSingleton(new NodeName($"node-{index}"));

            // The one line that takes every pattern across processes (compare samples/QuickStart).
            builder.AddPatterns(p => p.UsePeerLinks(o =>
            {
                o.NodeId = $"node-{index}";
                o.ListenUri = new Uri($"http://127.0.0.1:{ports[index]}");
                o.SharedSecret = "sample-secret";
                o.MaxReconnectDelay = TimeSpan.FromMilliseconds(250);
                foreach (var peer in Enumerable.Range(0, ports.Length).Where(i => i != index))
                {
                    o.Peers.Add(new Uri($"http://127.0.0.1:{ports[peer]}"));
                }
            }).UseSystemTextJson(SampleJson.Default));
            if (worker)
            {
                builder.AddRequestResponse(r => r.AddHandler<GetQuote, Quote, GetQuoteHandler>());
                builder.AddPubSub(ps => ps
                    .Subscribe<OrderPlaced, BillingHandler>("orders.*")
                    .Subscribe<OrderPlaced, ShippingHandler>("orders.*"));
                builder.AddMessageQueue(q => q
                    .AddQueue("emails")
                    .AddConsumer<SendEmail, SendEmailHandler>("emails", o => o.Concurrency = 2));
                builder.Services.AddHostedService<Ready>();
            }
            else
            {
                builder.AddRequestResponse();
                builder.AddPubSub();
                builder.AddMessageQueue();
            }

            return builder.Build();
        }

        public static Process Spawn(int index, int[] ports, Output output)
        {
            var start = new ProcessStartInfo(Environment.ProcessPath!)
            {
                RedirectStandardOutput = true,
                UseShellExecute = false,
            };
            if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet")
            {
                // Run with the dotnet host: the first argument is this app's assembly (a NativeAOT build is its own executable).
                start.ArgumentList.Add(Environment.GetCommandLineArgs()[0]);
            }

            foreach (var a in new[] { "--node", index.ToString(System.Globalization.CultureInfo.InvariantCulture), "--ports", string.Join(',', ports) })
            {
                start.ArgumentList.Add(a);
            }

            var process = Process.Start(start)!;
            process.OutputDataReceived += (_, e) =>
            {
                if (e.Data is { } line)
                {
                    Console.WriteLine(line);
                    output.Add(line);
                }
            };
            process.BeginOutputReadLine();
            return process;
        }
    }

    public sealed record NodeName(string Value);

    /// <summary>Says "ready" once the worker's handlers are subscribed and announced to its peers.</summary>
    internal sealed class Ready(NodeName name, PeerMembership membership) : BackgroundService
    {
        protected override async Task ExecuteAsync(CancellationToken stoppingToken)
        {
            await membership.WaitForAllUpAsync(stoppingToken);
            Console.WriteLine($"[{name.Value}] ready");
        }
    }

    public sealed class GetQuoteHandler(NodeName name) : IRequestHandler<GetQuote, Quote>
    {
        public ValueTask<Quote> HandleAsync(GetQuote request, CancellationToken cancellationToken) =>
            new(new Quote(request.Symbol, 42.5m, name.Value));
    }

    public sealed class BillingHandler(NodeName name) : IMessageHandler<OrderPlaced>
    {
        public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
        {
            Console.WriteLine($"[{name.Value}] billing charged {message.OrderId} {message.Amount:0.00}");
            return ValueTask.CompletedTask;
        }
    }

    public sealed class ShippingHandler(NodeName name) : IMessageHandler<OrderPlaced>
    {
        public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
        {
            Console.WriteLine($"[{name.Value}] shipping packed {message.OrderId}");
            return ValueTask.CompletedTask;
        }
    }

    public sealed class SendEmailHandler(NodeName name) : IMessageHandler<SendEmail>
    {
        public ValueTask HandleAsync(SendEmail message, MessageContext context, CancellationToken cancellationToken)
        {
            Console.WriteLine($"[{name.Value}] emailed {message.To}");
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>The children's output lines, so node 0 waits on what they did instead of sleeping.</summary>
    internal sealed class Output
    {
        private readonly List<string> _lines = [];
        private readonly Lock _gate = new();
        private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Add(string line)
        {
            TaskCompletionSource changed;
            lock (_gate)
            {
                _lines.Add(line);
                changed = _changed;
                _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
            }

            changed.TrySetResult();
        }

        public int Count(string text)
        {
            lock (_gate)
            {
                return _lines.Count(l => l.Contains(text, StringComparison.Ordinal));
            }
        }

        public Task WaitForAsync(params string[] texts) => WaitForCountAsync(() => texts.Count(t => Count(t) > 0), texts.Length);

        public async Task WaitForCountAsync(Func<int> count, int target)
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            while (true)
            {
                Task changed;
                lock (_gate)
                {
                    changed = _changed.Task;
                }

                if (count() >= target)
                {
                    return;
                }

                await changed.WaitAsync(timeout.Token);
            }
        }
    }
}
