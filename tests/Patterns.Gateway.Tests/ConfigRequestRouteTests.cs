using System.Net;
using System.Net.Http.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Patterns.Gateway.Tests;

/// <summary>HTTP routes to request handlers declared in configuration (<c>Requests</c>), with hot reload and validation.</summary>
public sealed class ConfigRequestRouteTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static Task<KestrelHost> StartAsync(IConfiguration config, Action<WebApplicationBuilder>? services = null, Action<WebApplication>? app = null) =>
        Gateways.FromConfigAsync(
            config,
            services: b =>
            {
                b.AddPatterns(p => p.UseInMemory());
                b.AddRequestResponse(r => r
                    .AddHandler<GetQuote, Quote>((q, _) => ValueTask.FromResult(new Quote(q.Symbol, 42m)))
                    .AddHandler<Ping, Ping>((p, _) => ValueTask.FromResult(new Ping("pong:" + p.Text))));
                b.AddGateway(g => g.AddRequestType<GetQuote, Quote>().AddRequestType<Ping, Ping>("echo"));
                services?.Invoke(b);
            },
            app: app);

    private static Task<HttpResponseMessage> PostQuote(KestrelHost host, string path) =>
        host.Client.PostAsJsonAsync(path, new GetQuote("ACME"), Ct);

    [Fact]
    public async Task RequestRoute_FromConfig_CallsHandler_AndReloadMovesItWithoutRestart()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Requests:quotes:Path"] = "/api/quotes",
            ["Requests:quotes:Request"] = "GetQuote",
            ["Requests:echo:Path"] = "/api/echo",
            ["Requests:echo:Request"] = "echo",
        }).Build();
        await using var host = await StartAsync(config);

        using (var response = await PostQuote(host, "/api/quotes"))
        {
            response.StatusCode.Should().Be(HttpStatusCode.OK);
            (await response.Content.ReadFromJsonAsync<Quote>(Ct)).Should().Be(new Quote("ACME", 42m));
        }

        using (var echo = await host.Client.PostAsJsonAsync("/api/echo", new Ping("hi"), Ct))
        {
            (await echo.Content.ReadFromJsonAsync<Ping>(Ct)).Should().Be(new Ping("pong:hi"));
        }

        // The route moves to a new path, and a third appears, by a configuration change alone.
        config["Requests:quotes:Path"] = "/api/v2/quotes";
        config["Requests:more:Path"] = "/api/more-quotes";
        config["Requests:more:Request"] = "getquote";
        config.Reload();

        using (var moved = await PostQuote(host, "/api/v2/quotes"))
        {
            moved.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        using (var added = await PostQuote(host, "/api/more-quotes"))
        {
            (await added.Content.ReadFromJsonAsync<Quote>(Ct)).Should().Be(new Quote("ACME", 42m));
        }

        using var old = await PostQuote(host, "/api/quotes");
        old.StatusCode.Should().Be(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task RequestRoute_Invalid_FailsStartNamingEveryRouteAndField()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Requests:typo:Path"] = "/api/a",
            ["Requests:typo:Request"] = "GetQuot",
            ["Requests:slow:Path"] = "/api/b",
            ["Requests:slow:Request"] = "GetQuote",
            ["Requests:slow:Timeout"] = "soon",
            ["Requests:slow:MaxBodyBytes"] = "-1",
            ["Requests:nopath:Request"] = "GetQuote",
            ["Requests:extra:Path"] = "/api/c",
            ["Requests:extra:Request"] = "GetQuote",
            ["Requests:extra:Pth"] = "/api/d",
            ["Requests:twice:Path"] = "/API/C",
            ["Requests:twice:Request"] = "GetQuote",
            ["Requests:broken:Path"] = "/api/{id",
            ["Requests:broken:Request"] = "GetQuote",
        }).Build();

        var error = await Gateways.StartFailureAsync(() => StartAsync(config));
        error.Should().StartWith("Invalid gateway request routes: ");
        error.Should().Contain("Request route 'typo': 'Request' is 'GetQuot', which is not a request type the gateway knows (registered: echo, GetQuote)");
        error.Should().Contain("Request route 'slow': 'Timeout' is 'soon'; it must be a positive duration such as 00:00:05.");
        error.Should().Contain("Request route 'slow': 'MaxBodyBytes' is '-1'; it must be a whole number from 1 to 2147483647.");
        error.Should().Contain("Request route 'nopath': 'Path' is missing");
        error.Should().Contain("Request route 'extra': unknown field 'Pth'");
        error.Should().Contain("Request route 'twice': 'Path' '/API/C' is also the path of request route 'extra'.");
        error.Should().Contain("Request route 'broken': 'Path' '/api/{id' is not a valid route pattern");
    }

    [Fact]
    public async Task RequestRoute_ReloadWithInvalidRoute_KeepsLastGoodRoutes()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Requests:quotes:Path"] = "/api/quotes",
            ["Requests:quotes:Request"] = "GetQuote",
        }).Build();
        await using var host = await StartAsync(config);

        // One bad field rejects the whole change: the moved path does not apply either.
        config["Requests:quotes:Path"] = "/api/v2/quotes";
        config["Requests:quotes:Request"] = "Nope";
        config.Reload();

        using (var kept = await PostQuote(host, "/api/quotes"))
        {
            kept.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        using (var notMoved = await PostQuote(host, "/api/v2/quotes"))
        {
            notMoved.StatusCode.Should().Be(HttpStatusCode.NotFound);
        }

        // A later good change applies.
        config["Requests:quotes:Request"] = "GetQuote";
        config.Reload();

        using var moved = await PostQuote(host, "/api/v2/quotes");
        moved.StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [Fact]
    public async Task RequestRoute_PoliciesAndLimitsFromConfig_ApplyBeforeTheHandler()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Requests:quotes:Path"] = "/api/quotes",
            ["Requests:quotes:Request"] = "GetQuote",
            ["Requests:quotes:AuthorizationPolicy"] = "apikey",
            ["Requests:quotes:MaxBodyBytes"] = "64",
        }).Build();
        await using var host = await StartAsync(
            config,
            services: b =>
            {
                b.Services.AddAuthentication().AddApiKeys(o => o.Keys["key-1"] = "client-1");
                b.Services.AddAuthorization(o => o.AddPolicy("apikey", p => p.AddAuthenticationSchemes("ApiKey").RequireAuthenticatedUser()));
            },
            app: a =>
            {
                a.UseAuthentication();
                a.UseAuthorization();
            });

        using (var anonymous = await PostQuote(host, "/api/quotes"))
        {
            anonymous.StatusCode.Should().Be(HttpStatusCode.Unauthorized);
        }

        using var request = new HttpRequestMessage(HttpMethod.Post, "/api/quotes") { Content = JsonContent.Create(new GetQuote("ACME")) };
        request.Headers.Add("X-Api-Key", "key-1");
        using (var allowed = await host.Client.SendAsync(request, Ct))
        {
            allowed.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        using var large = new HttpRequestMessage(HttpMethod.Post, "/api/quotes") { Content = JsonContent.Create(new GetQuote(new string('x', 100))) };
        large.Headers.Add("X-Api-Key", "key-1");
        using var tooLarge = await host.Client.SendAsync(large, Ct);
        tooLarge.StatusCode.Should().Be(HttpStatusCode.RequestEntityTooLarge);
        tooLarge.Content.Headers.ContentType!.MediaType.Should().Be("application/problem+json");
    }

    [Fact]
    public async Task PublishAndSendRoutes_FromConfig_Answer202AndDeliver()
    {
        var published = new TaskCompletionSource<OrderPlaced>(TaskCreationOptions.RunContinuationsAsynchronously);
        var sent = new TaskCompletionSource<OrderPlaced>(TaskCreationOptions.RunContinuationsAsynchronously);
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Requests:orders:Path"] = "/api/orders",
            ["Requests:orders:Publish"] = "OrderPlaced",
            ["Requests:orders:Topic"] = "orders",
            ["Requests:billing:Path"] = "/api/billing",
            ["Requests:billing:Send"] = "order",
            ["Requests:billing:Queue"] = "billing",
        }).Build();
        await using var host = await StartAsync(config, services: b =>
        {
            b.AddPubSub(p => p.Subscribe<OrderPlaced>((m, _, _) => { published.TrySetResult(m); return ValueTask.CompletedTask; }, topic: "orders"));
            b.AddMessageQueue(q => q.AddQueue("billing").AddConsumer<OrderPlaced>("billing", (m, _, _) => { sent.TrySetResult(m); return ValueTask.CompletedTask; }));
            b.AddGateway(g => g.AddMessageType<OrderPlaced>().AddMessageType<OrderPlaced>("order"));
        });

        using (var response = await host.Client.PostAsJsonAsync("/api/orders", new OrderPlaced("o-1", 2), Ct))
        {
            response.StatusCode.Should().Be(HttpStatusCode.Accepted);
        }

        using (var response = await host.Client.PostAsJsonAsync("/api/billing", new OrderPlaced("o-2", 5), Ct))
        {
            response.StatusCode.Should().Be(HttpStatusCode.Accepted);
        }

        (await published.Task.WaitAsync(Waits.Bound, Ct)).Should().Be(new OrderPlaced("o-1", 2));
        (await sent.Task.WaitAsync(Waits.Bound, Ct)).Should().Be(new OrderPlaced("o-2", 5));
    }

    [Fact]
    public async Task PublishAndSendRoutes_Invalid_FailStartNamingRouteAndField()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Requests:both:Path"] = "/a",
            ["Requests:both:Request"] = "GetQuote",
            ["Requests:both:Publish"] = "OrderPlaced",
            ["Requests:noqueue:Path"] = "/b",
            ["Requests:noqueue:Send"] = "OrderPlaced",
            ["Requests:unknown:Path"] = "/c",
            ["Requests:unknown:Publish"] = "OrderShipped",
            ["Requests:stray:Path"] = "/d",
            ["Requests:stray:Request"] = "GetQuote",
            ["Requests:stray:Queue"] = "q",
        }).Build();

        var start = () => StartAsync(config, services: b => b.AddGateway(g => g.AddMessageType<OrderPlaced>()));

        var error = (await start.Should().ThrowAsync<InvalidOperationException>()).Which.Message;
        error.Should().Contain("Request route 'both': give exactly one of 'Request' (a request type, answered with its response), 'Publish' (a message type, published) or 'Send' (a message type, sent to 'Queue'); it has 2.");
        error.Should().Contain("Request route 'noqueue': 'Queue' is missing; a 'Send' route names the queue it sends to.");
        error.Should().Contain("Request route 'unknown': 'Publish' is 'OrderShipped', which is not a message type the gateway knows (registered: OrderPlaced)");
        error.Should().Contain("Request route 'stray': 'Queue' applies to a 'Send' route only.");
    }
}
