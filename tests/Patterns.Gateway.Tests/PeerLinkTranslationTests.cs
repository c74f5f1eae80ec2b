using System.Net;
using System.Net.Http.Json;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.PeerLinks;

namespace Patterns.Gateway.Tests;

/// <summary>
/// HTTP to Patterns messaging over peer links: the gateway is one host, the handlers and consumers live in another host
/// of the same test process, and the two are linked over gRPC on loopback. Every call crosses the link.
/// </summary>
public sealed class PeerLinkTranslationTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact(Timeout = 180_000)]
    public async Task MapRequest_HandlerOnAPeer_AnswersAcrossTheLink_ErrorsMapToTheirStatus_AndAStoppedPeerFailsFastWith503()
    {
        var never = new TaskCompletionSource<Quote>(TaskCreationOptions.RunContinuationsAsynchronously);
        var handledOn = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var ports = Ports.Pick();
        using var handlers = await StartHandlersAsync(ports, b => b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, ct) =>
        {
            handledOn.TrySetResult(q.Symbol);
            return q.Symbol switch
            {
                "SLOW" => new ValueTask<Quote>(never.Task.WaitAsync(ct)),
                "BOOM" => throw new InvalidOperationException("the quote service broke"),
                _ => ValueTask.FromResult(new Quote(q.Symbol, q.Symbol.Length * 1.25m)),
            };
        })));
        await using var gateway = await StartGatewayAsync(ports, handlers, app =>
        {
            app.MapRequest<GetQuote, Quote>("/quotes");
            app.MapRequest<GetQuote, Quote>("/quotes/slow", o => o.Timeout = TimeSpan.FromMilliseconds(300));
            app.MapRequest<Unhandled, Quote>("/unhandled");
        });

        // One request, then 64 at once: each answer is its own request's (the replies cross the link, matched by correlation).
        using (var response = await gateway.Client.PostAsJsonAsync("/quotes", new GetQuote("ACME"), Ct))
        {
            response.StatusCode.Should().Be(HttpStatusCode.OK);
            (await response.Content.ReadFromJsonAsync<Quote>(Ct)).Should().Be(new Quote("ACME", 5m));
        }

        (await handledOn.Task.WaitAsync(Waits.Bound, Ct)).Should().Be("ACME", "the handler ran on the other host");
        var symbols = Enumerable.Range(1, 64).Select(i => new string('Q', i)).ToArray();
        var answers = await Task.WhenAll(symbols.Select(async s =>
        {
            using var response = await gateway.Client.PostAsJsonAsync("/quotes", new GetQuote(s), Ct);
            response.EnsureSuccessStatusCode();
            return await response.Content.ReadFromJsonAsync<Quote>(Ct);
        }));
        answers.Should().Equal(symbols.Select(s => new Quote(s, s.Length * 1.25m)));

        // Errors: the handler's exception crosses the link as a 500 naming it; a handler that never answers is a 504;
        // a request type no node handles fails fast as a 404; a malformed body never leaves the gateway.
        var failed = await ProtocolTranslationTests.ExpectProblem(await Post(gateway, "/quotes", "{\"symbol\":\"BOOM\"}"), 500, "The handler failed");
        failed.GetProperty("detail").GetString().Should().Contain("the quote service broke");
        await ProtocolTranslationTests.ExpectProblem(await Post(gateway, "/quotes/slow", "{\"symbol\":\"SLOW\"}"), 504, "The handler did not answer in time");
        await ProtocolTranslationTests.ExpectProblem(await Post(gateway, "/unhandled", "{\"text\":\"x\"}"), 404, "No handler for this message");
        await ProtocolTranslationTests.ExpectProblem(await Post(gateway, "/quotes", "{\"symbol\":"), 400, "The request body is not a valid message");
        never.TrySetResult(new Quote("SLOW", 0m));

        // The handlers' host stops and goes away (its node closes when the host is disposed): once the gateway sees the
        // peer down, a request fails fast instead of waiting for its timeout, with 503 and Retry-After (the node that
        // handled it is unreachable, it may come back), while a request type no node ever handled is still a 404.
        var membership = gateway.Services.GetRequiredService<PeerMembership>();
        await handlers.StopAsync(Ct);
        handlers.Dispose();
        await WaitUntilAsync(membership, PeerState.Down);
        await ExpectUnavailable(await Post(gateway, "/quotes", "{\"symbol\":\"ACME\"}"), "GetQuote");
        await ProtocolTranslationTests.ExpectProblem(await Post(gateway, "/unhandled", "{\"text\":\"x\"}"), 404, "No handler for this message");
    }

    [Fact(Timeout = 180_000)]
    public async Task MapPublishAndMapSend_ConsumersOnAPeer_Answer202AndTheMessagesCrossTheLink_AndA503OnceThatPeerIsDown()
    {
        var published = new TaskCompletionSource<OrderPlaced>(TaskCreationOptions.RunContinuationsAsynchronously);
        var sent = new TaskCompletionSource<Ping>(TaskCreationOptions.RunContinuationsAsynchronously);
        var ports = Ports.Pick();
        using var consumers = await StartHandlersAsync(ports, b =>
        {
            b.AddPubSub(p => p.Subscribe<OrderPlaced>((m, _, _) => { published.TrySetResult(m); return ValueTask.CompletedTask; }, topic: "orders"));
            b.AddMessageQueue(q => q.AddQueue("pings").AddConsumer<Ping>("pings", (m, _, _) => { sent.TrySetResult(m); return ValueTask.CompletedTask; }));
        });
        await using var gateway = await StartGatewayAsync(ports, consumers, app =>
        {
            app.MapPublish<OrderPlaced>("/orders", topic: "orders");
            app.MapSend<Ping>("/pings", "pings");
            app.MapSend<Ping>("/nowhere", "nowhere");
        });

        using (var response = await Post(gateway, "/orders", "{\"orderId\":\"o-1\",\"lines\":3}"))
        {
            response.StatusCode.Should().Be(HttpStatusCode.Accepted);
        }

        (await published.Task.WaitAsync(Waits.Bound, Ct)).Should().Be(new OrderPlaced("o-1", 3));

        using (var response = await Post(gateway, "/pings", "{\"text\":\"hello\"}"))
        {
            response.StatusCode.Should().Be(HttpStatusCode.Accepted);
        }

        (await sent.Task.WaitAsync(Waits.Bound, Ct)).Should().Be(new Ping("hello"));

        // A queue no node consumes is refused at once, not accepted and lost.
        await ProtocolTranslationTests.ExpectProblem(await Post(gateway, "/nowhere", "{\"text\":\"lost\"}"), 404, "No handler for this message");
        await ProtocolTranslationTests.ExpectProblem(await Post(gateway, "/orders", "[1,2"), 400, "The request body is not a valid message");

        // The consumers' node goes down: a send to its queue is a 503 (its consumer is out of reach, not absent), a send to a
        // queue no node ever consumed is still a 404.
        var membership = gateway.Services.GetRequiredService<PeerMembership>();
        await consumers.StopAsync(Ct);
        await WaitUntilAsync(membership, PeerState.Down);
        await ExpectUnavailable(await Post(gateway, "/pings", "{\"text\":\"late\"}"), "pings");
        await ProtocolTranslationTests.ExpectProblem(await Post(gateway, "/nowhere", "{\"text\":\"lost\"}"), 404, "No handler for this message");
    }

    [Fact(Timeout = 180_000)]
    public async Task MapRequest_HandlersNodeDoesNotLinkBack_TheRequestIsHandledButItsReplyHasNoWayBack_504()
    {
        var handled = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var ports = Ports.Pick();

        // The handlers' node listens but does not list the gateway among its peers: only the gateway dials.
        using var handlers = await StartHandlersAsync(
            ports,
            b => b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, _) =>
            {
                handled.TrySetResult(q.Symbol);
                return ValueTask.FromResult(new Quote(q.Symbol, 1m));
            })),
            linkBack: false);

        // The timeout is generous so that the request reaches the handler before its deadline even on a slow machine
        // (a request that arrives after its deadline is dead-lettered unhandled); the answer is a 504 whatever it is.
        await using var gateway = await StartGatewayAsync(ports, handlers, app => app.MapRequest<GetQuote, Quote>("/quotes", o => o.Timeout = TimeSpan.FromSeconds(10)));

        var pending = Post(gateway, "/quotes", "{\"symbol\":\"ACME\"}");
        (await handled.Task.WaitAsync(Waits.Bound, Ct)).Should().Be("ACME", "the gateway's link to the handlers' node carries the request");
        await ProtocolTranslationTests.ExpectProblem(await pending, 504, "The handler did not answer in time");
    }

    /// <summary>
    /// Starts the host with the handlers or consumers: a plain host on peer links, listening on a loopback port and linked
    /// to the gateway's (peer links are a full mesh: the handlers' node sends the replies, so it links to the gateway too),
    /// or, with <paramref name="linkBack"/> false, only listening: the gateway dials it, it does not dial the gateway.
    /// </summary>
    private static async Task<IHost> StartHandlersAsync(Ports ports, Action<HostApplicationBuilder> services, bool linkBack = true)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.AddPatterns(p => p.UsePeerLinks(o => Link(o, "handlers", ports.Handlers, linkBack ? ports.Gateway : null)));
        services(builder);
        var host = builder.Build();
        await host.StartAsync(Ct);
        return host;
    }

    /// <summary>Starts the gateway on Kestrel, on peer links to the handlers' node, and waits until both ends of the link are up.</summary>
    private static async Task<KestrelHost> StartGatewayAsync(Ports ports, IHost handlers, Action<WebApplication> endpoints)
    {
        var gateway = await KestrelHost.StartAsync(
            b =>
            {
                b.AddPatterns(p => p.UsePeerLinks(o => Link(o, "gateway", ports.Gateway, ports.Handlers)));
                b.AddRequestResponse();
                b.AddPubSub();
                b.AddMessageQueue();
            },
            endpoints);
        await gateway.Services.GetRequiredService<PeerMembership>().WaitForAllUpAsync(Ct).WaitAsync(Waits.Bound, Ct);
        await handlers.Services.GetRequiredService<PeerMembership>().WaitForAllUpAsync(Ct).WaitAsync(Waits.Bound, Ct);
        return gateway;
    }

    private static void Link(PeerLinksOptions options, string node, int port, int? peer)
    {
        options.NodeId = node;
        options.ListenUri = new Uri($"http://127.0.0.1:{port}");
        if (peer is { } p)
        {
            options.Peers.Add(new Uri($"http://127.0.0.1:{p}"));
        }

        options.SharedSecret = "gateway-tests";
        options.MaxReconnectDelay = TimeSpan.FromMilliseconds(250);
    }

    /// <summary>
    /// The two nodes' listening ports, known before either starts since each names the other. They come from below the
    /// system's ephemeral range (32768-60999 on Linux), from which every outgoing connection also draws, so that none can
    /// take a port between this check and the node's bind; each is checked free, from a random start.
    /// </summary>
    private sealed record Ports(int Gateway, int Handlers)
    {
        private const int FirstPort = 20_000;
        private const int PortCount = 12_000;
        private static int _next = Random.Shared.Next(PortCount);

        public static Ports Pick() => new(Free(), Free());

        private static int Free()
        {
            for (var attempt = 0; attempt < PortCount; attempt++)
            {
                var port = FirstPort + (int)((uint)Interlocked.Increment(ref _next) % PortCount);
                try
                {
                    using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, port);
                    listener.Start();
                    return port;
                }
                catch (System.Net.Sockets.SocketException)
                {
                    // In use: the next one.
                }
            }

            throw new InvalidOperationException($"No free port between {FirstPort} and {FirstPort + PortCount}.");
        }
    }

    private static async Task WaitUntilAsync(PeerMembership membership, PeerState state)
    {
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        membership.PeerChanged += (_, e) =>
        {
            if (e.Peer.State == state)
            {
                reached.TrySetResult();
            }
        };
        if (membership.Peers.All(p => p.State == state))
        {
            return;
        }

        await reached.Task.WaitAsync(Waits.Bound, Ct);
    }

    /// <summary>A 503 problem with Retry-After whose detail names <paramref name="queue"/> and says its consumers cannot be reached.</summary>
    private static async Task ExpectUnavailable(HttpResponseMessage response, string queue)
    {
        response.Headers.RetryAfter.Should().NotBeNull("a 503 says when to try again");
        var problem = await ProtocolTranslationTests.ExpectProblem(response, 503, "The transport is unavailable");
        problem.GetProperty("detail").GetString().Should().Contain(queue).And.Contain("cannot be reached");
    }

    private static Task<HttpResponseMessage> Post(KestrelHost host, string path, string body) =>
        host.Client.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"), Ct);
}
