using System.Net;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Patterns.Gateway.Tests;

/// <summary>Aggregate (BFF) routes declared in configuration (<c>Aggregates</c>), with hot reload and validation.</summary>
public sealed class ConfigAggregateRouteTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static Task<KestrelHost> StartAsync(IConfiguration config, GatewayLogs? logs = null) =>
        Gateways.FromConfigAsync(config, services: b =>
        {
            b.Services.AddAuthorization(o => o.AddPolicy("members", p => p.RequireClaim("member")));
            if (logs is not null)
            {
                b.Logging.AddProvider(logs);
            }
        });

    [Fact]
    public async Task Aggregate_FromConfig_FansOutToClusterAndAddress_AndReloadChangesItWithoutRestart()
    {
        await using var users = await Backend.StartAsync("users", Backend.Json("{\"name\":\"Ada\"}"));
        await using var orders = await Backend.StartAsync("orders", Backend.Json("[{\"id\":1}]"));
        await using var prices = await Backend.StartAsync("prices", Backend.Json("{\"total\":9.5}"));
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Clusters:users:Destinations:d1:Address"] = users.Address,
            ["Aggregates:home:Path"] = "/bff/home/{id}",
            ["Aggregates:home:PropagateHeaders:0"] = "X-Tenant",
            ["Aggregates:home:Legs:user:Target"] = "users",
            ["Aggregates:home:Legs:user:Path"] = "/users/{id}",
            ["Aggregates:home:Legs:orders:Target"] = orders.Address,
            ["Aggregates:home:Legs:orders:Path"] = "/orders?customer={id}",
            ["Aggregates:home:Legs:orders:OnFailure"] = "Omit",
            ["Aggregates:home:Legs:orders:Timeout"] = "00:00:05",
        }).Build();
        await using var gateway = await StartAsync(config);

        using (var request = new HttpRequestMessage(HttpMethod.Get, "/bff/home/7"))
        {
            request.Headers.Add("X-Tenant", "acme");
            using var response = await gateway.Client.SendAsync(request, Ct);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
            (await response.Content.ReadAsStringAsync(Ct)).Should().Be("{\"orders\":[{\"id\":1}],\"user\":{\"name\":\"Ada\"}}");
        }

        users.Received.Single().Path.Should().Be("/users/7");
        users.Received.Single().Headers["X-Tenant"].ToString().Should().Be("acme");
        orders.Received.Single().Path.Should().Be("/orders?customer=7");

        // The leg marked Omit fails: the answer is partial and names it.
        orders.Behavior = c =>
        {
            c.Response.StatusCode = 503;
            return Task.CompletedTask;
        };
        using (var partial = await gateway.Client.GetAsync("/bff/home/8", Ct))
        {
            partial.StatusCode.Should().Be(HttpStatusCode.OK);
            partial.Headers.GetValues("X-Partial").Should().Equal("orders");
            (await partial.Content.ReadAsStringAsync(Ct)).Should().Be("{\"user\":{\"name\":\"Ada\"},\"partial\":true,\"failed\":[\"orders\"]}");
        }

        // The route moves and gains a leg by a configuration change alone.
        config["Aggregates:home:Path"] = "/bff/v2/home/{id}";
        config["Aggregates:home:Legs:prices:Target"] = prices.Address;
        config["Aggregates:home:Legs:prices:Path"] = "/prices/{id}";
        config.Reload();

        using (var moved = await gateway.Client.GetAsync("/bff/v2/home/9", Ct))
        {
            moved.StatusCode.Should().Be(HttpStatusCode.OK);
            (await moved.Content.ReadAsStringAsync(Ct)).Should().Be("{\"prices\":{\"total\":9.5},\"user\":{\"name\":\"Ada\"},\"partial\":true,\"failed\":[\"orders\"]}");
        }

        prices.Received.Single().Path.Should().Be("/prices/9");
        using var old = await gateway.Client.GetAsync("/bff/home/9", Ct);
        old.StatusCode.Should().Be(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task Aggregate_FromConfig_PostSendsTheBodyOnlyToLegsThatForwardIt()
    {
        await using var carts = await Backend.StartAsync("carts", Backend.Json("{\"saved\":true}"));
        await using var offers = await Backend.StartAsync("offers", Backend.Json("[]"));
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Aggregates:checkout:Path"] = "/bff/checkout",
            ["Aggregates:checkout:MaxBodyBytes"] = "64",
            ["Aggregates:checkout:Legs:cart:Target"] = carts.Address,
            ["Aggregates:checkout:Legs:cart:Path"] = "/carts",
            ["Aggregates:checkout:Legs:cart:ForwardBody"] = "true",
            ["Aggregates:checkout:Legs:offers:Target"] = offers.Address,
            ["Aggregates:checkout:Legs:offers:Path"] = "/offers",
            ["Aggregates:checkout:Legs:offers:Method"] = "get",
        }).Build();
        await using var gateway = await StartAsync(config);

        using var content = new StringContent("{\"sku\":\"a1\"}", Encoding.UTF8, "application/json");
        using var response = await gateway.Client.PostAsync("/bff/checkout", content, Ct);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        (await response.Content.ReadAsStringAsync(Ct)).Should().Be("{\"cart\":{\"saved\":true},\"offers\":[]}");
        carts.Received.Single().Should().Match<(string Method, string Path, string Body, IHeaderDictionary Headers)>(r => r.Method == "POST" && r.Body == "{\"sku\":\"a1\"}");
        offers.Received.Single().Should().Match<(string Method, string Path, string Body, IHeaderDictionary Headers)>(r => r.Method == "GET" && r.Body.Length == 0);

        using var big = new StringContent(new string('x', 65), Encoding.UTF8, "application/json");
        using var tooLarge = await gateway.Client.PostAsync("/bff/checkout", big, Ct);
        tooLarge.StatusCode.Should().Be(HttpStatusCode.RequestEntityTooLarge);
        carts.Hits.Should().Be(1);
    }

    [Fact]
    public async Task Aggregate_Invalid_FailsStartNamingEveryRouteLegAndField()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Clusters:users:Destinations:d1:Address"] = "http://127.0.0.1:1",
            ["Aggregates:home:Path"] = "/bff/home/{id}",
            ["Aggregates:home:Legs:user:Target"] = "user",
            ["Aggregates:home:Legs:user:Path"] = "/users/{userId}",
            ["Aggregates:home:Legs:user:Timeout"] = "soon",
            ["Aggregates:home:Legs:user:OnFailure"] = "Ignore",
            ["Aggregates:home:Legs:user:Methd"] = "GET",
            ["Aggregates:home:Legs:orders:Path"] = "/orders",
            ["Aggregates:home:Legs:orders:ForwardBody"] = "maybe",
            ["Aggregates:home:Legs:orders:Method"] = "FETCH",
            ["Aggregates:empty:Path"] = "/bff/empty",
            ["Aggregates:empty:Legz:a:Target"] = "users",
            ["Aggregates:locked:Path"] = "/bff/locked",
            ["Aggregates:locked:AuthorizationPolicy"] = "admins",
            ["Aggregates:locked:Legs:a:Target"] = "users",
            ["Aggregates:locked:Legs:a:Path"] = "/a",
            ["Aggregates:twice:Path"] = "/BFF/LOCKED",
            ["Aggregates:twice:Legs:a:Target"] = "users",
            ["Aggregates:twice:Legs:a:Path"] = "/a",
        }).Build();

        var error = await Gateways.StartFailureAsync(() => StartAsync(config));
        error.Should().StartWith("Invalid gateway aggregate routes: ");
        error.Should().Contain("Aggregate route 'home': leg 'user': 'Target' is 'user', which is neither a cluster (known: users) nor an absolute http(s) address.");
        error.Should().Contain("Aggregate route 'home': leg 'user': 'Path' '/users/{userId}' uses '{userId}', which is not a parameter of the route's path '/bff/home/{id}'.");
        error.Should().Contain("Aggregate route 'home': leg 'user': 'Timeout' is 'soon'; it must be a positive duration such as 00:00:05.");
        error.Should().Contain("Aggregate route 'home': leg 'user': 'OnFailure' is 'Ignore'; it must be 'Fail' or 'Omit'.");
        error.Should().Contain("Aggregate route 'home': leg 'user': unknown field 'Methd'");
        error.Should().Contain("Aggregate route 'home': leg 'orders': 'Target' is missing");
        error.Should().Contain("Aggregate route 'home': leg 'orders': 'ForwardBody' is 'maybe'; it must be true or false.");
        error.Should().Contain("Aggregate route 'home': leg 'orders': 'Method' is 'FETCH'");
        error.Should().Contain("Aggregate route 'empty': unknown field 'Legz'");
        error.Should().Contain("Aggregate route 'empty': 'Legs' is missing or empty");
        error.Should().Contain("Aggregate route 'locked': Authorization policy 'admins' not found for route 'locked'.");
        error.Should().Contain("Aggregate route 'twice': 'Path' '/BFF/LOCKED' is also the path of aggregate route 'locked'.");
    }

    [Fact]
    public async Task Aggregate_ReloadWithUnknownClusterOrPolicy_KeepsLastGoodRouteAndLogs()
    {
        await using var users = await Backend.StartAsync("users", Backend.Json("{\"name\":\"Ada\"}"));
        var logs = new GatewayLogs();
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Aggregates:home:Path"] = "/bff/home/{id}",
            ["Aggregates:home:AuthorizationPolicy"] = "Anonymous",
            ["Aggregates:home:Legs:user:Target"] = users.Address,
            ["Aggregates:home:Legs:user:Path"] = "/users/{id}",
        }).Build();
        await using var gateway = await StartAsync(config, logs);

        // Both problems reject the whole change, the moved path included.
        config["Aggregates:home:Path"] = "/bff/v2/home/{id}";
        config["Aggregates:home:AuthorizationPolicy"] = "admins";
        config["Aggregates:home:Legs:user:Target"] = "accounts";
        config.Reload();

        var logged = logs.Of(1310).Should().ContainSingle().Which;
        logged.Should().StartWith("The changed gateway aggregate routes were rejected; the last good ones stay.");
        logged.Should().Contain("Aggregate route 'home': leg 'user': 'Target' is 'accounts', which is neither a cluster (none is configured) nor an absolute http(s) address.");
        logged.Should().Contain("Aggregate route 'home': Authorization policy 'admins' not found for route 'home'.");
        using (var kept = await gateway.Client.GetAsync("/bff/home/1", Ct))
        {
            kept.StatusCode.Should().Be(HttpStatusCode.OK);
            (await kept.Content.ReadAsStringAsync(Ct)).Should().Be("{\"user\":{\"name\":\"Ada\"}}");
        }

        using (var notMoved = await gateway.Client.GetAsync("/bff/v2/home/1", Ct))
        {
            notMoved.StatusCode.Should().Be(HttpStatusCode.NotFound);
        }

        // With a known target and policy the next change applies.
        config["Aggregates:home:AuthorizationPolicy"] = "Anonymous";
        config["Aggregates:home:Legs:user:Target"] = users.Address;
        config.Reload();

        using var moved = await gateway.Client.GetAsync("/bff/v2/home/1", Ct);
        moved.StatusCode.Should().Be(HttpStatusCode.OK);
        logs.Of(1310).Should().HaveCount(1);
    }
}
