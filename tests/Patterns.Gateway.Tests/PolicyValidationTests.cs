using System.Net;
using System.Net.Http.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Patterns.Gateway.Tests;

/// <summary>Policy names and gateway keys are checked when the configuration loads: the host fails at start, a reload is rejected and logged.</summary>
public sealed class PolicyValidationTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static Task<KestrelHost> StartAsync(IConfiguration config, GatewayLogs? logs = null) =>
        Gateways.FromConfigAsync(config, services: b =>
        {
            b.Services.AddAuthorization(o => o.AddPolicy("members", p => p.RequireClaim("member")));
            b.Services.AddRateLimiter(o => o.AddPerClientFixedWindow("per-client", 100, TimeSpan.FromMinutes(1)));
            b.AddPatterns(p => p.UseInMemory());
            b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, _) => ValueTask.FromResult(new Quote(q.Symbol, 42m))));
            b.AddGateway(g => g.AddRequestType<GetQuote, Quote>());
            if (logs is not null)
            {
                b.Logging.AddProvider(logs);
            }
        },
        app: a => a.UseRateLimiter());

    [Fact]
    public async Task Start_UnknownPolicyNames_FailsNamingEveryRouteClusterAndPolicy()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Routes:admin:ClusterId"] = "c",
            ["Routes:admin:Match:Path"] = "/admin/{**rest}",
            ["Routes:admin:AuthorizationPolicy"] = "admins",
            ["Routes:burst:ClusterId"] = "c",
            ["Routes:burst:Match:Path"] = "/burst/{**rest}",
            ["Routes:burst:RateLimiterPolicy"] = "per-second",
            ["Clusters:c:LoadBalancingPolicy"] = "Wieghted",
            ["Clusters:c:HealthCheck:Passive:Enabled"] = "true",
            ["Clusters:c:HealthCheck:Passive:Policy"] = "Outliers",
            ["Clusters:c:Destinations:a:Address"] = "http://127.0.0.1:1",
        }).Build();

        var error = await Gateways.StartFailureAsync(() => StartAsync(config));
        error.Should().StartWith("Invalid gateway configuration: ");
        error.Should().Contain("Authorization policy 'admins' not found for route 'admin'.");
        error.Should().Contain("RateLimiter policy 'per-second' not found for route 'burst'.");
        error.Should().Contain("No matching ILoadBalancingPolicy found for the load balancing policy 'Wieghted' set on the cluster 'c'.");
        error.Should().Contain("No matching IPassiveHealthCheckPolicy found for the passive health check policy name 'Outliers' set on the cluster 'c'.");
    }

    [Fact]
    public async Task Start_GatewayKeyMisspeltOrWithoutItsPolicy_FailsNamingClusterAndKey()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Routes:r:ClusterId"] = "c",
            ["Routes:r:Match:Path"] = "{**rest}",
            ["Clusters:c:Metadata:Patterns.Retry.MaxRetry"] = "2",
            ["Clusters:c:Metadata:Patterns.RoutingKey"] = "header:X-User",
            ["Clusters:c:Metadata:Patterns.Outlier.ConsecutiveFailures"] = "5",
            ["Clusters:c:Destinations:a:Address"] = "http://127.0.0.1:1",
            ["Clusters:c:Destinations:a:Metadata:Patterns.Weight"] = "3",
        }).Build();

        var error = await Gateways.StartFailureAsync(() => StartAsync(config));
        error.Should().StartWith("Invalid gateway configuration: ");
        error.Should().Contain("Cluster 'c': Metadata 'Patterns.Retry.MaxRetry' is not a gateway key; the keys are Patterns.RoutingKey, ");
        error.Should().Contain("Cluster 'c': Metadata 'Patterns.RoutingKey' applies only with LoadBalancingPolicy 'Weighted'; the cluster's is 'PowerOfTwoChoices (the default)'.");
        error.Should().Contain("Cluster 'c': Metadata 'Patterns.Outlier.ConsecutiveFailures' applies only when HealthCheck:Passive is enabled with Policy 'OutlierDetection' (the cluster's passive health check is off)");
        error.Should().Contain("Cluster 'c' destination 'a': Metadata 'Patterns.Weight' is not a gateway key; a destination takes only 'Weight'.");
    }

    [Fact]
    public void Parse_KeyInTheWrongCaseInACaseSensitiveDictionary_SuggestsTheKey()
    {
        var errors = new List<string>();
        var config = new Yarp.ReverseProxy.Configuration.ClusterConfig
        {
            ClusterId = "c",
            Metadata = new Dictionary<string, string>(StringComparer.Ordinal) { ["Patterns.timeout"] = "00:00:05", ["Patterns.Retry.MaxRetries"] = "1" },
        };

        Configuration.ClusterPolicy.Parse(config, errors);

        errors.Should().Equal("Cluster 'c': Metadata 'Patterns.timeout' is not a gateway key; did you mean 'Patterns.Timeout'? (this metadata dictionary is case-sensitive)");
    }

    [Fact]
    public async Task Reload_UnknownPolicyName_KeepsLastGoodConfigurationAndLogs()
    {
        await using var a = await Backend.StartAsync("a");
        await using var b = await Backend.StartAsync("b");
        var logs = new GatewayLogs();
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Routes:r:ClusterId"] = "a",
            ["Routes:r:Match:Path"] = "{**rest}",
            ["Clusters:a:Destinations:d:Address"] = a.Address,
            ["Clusters:b:Destinations:d:Address"] = b.Address,
        }).Build();
        await using var gateway = await StartAsync(config, logs);
        (await RoutingTests.Send(gateway.Client, HttpMethod.Get, "/x")).Should().Be("a");

        // The route would move to cluster b, but it names a rate limiter nobody registered: the whole change is rejected.
        config["Routes:r:ClusterId"] = "b";
        config["Routes:r:RateLimiterPolicy"] = "per-secnod";
        config["Clusters:b:LoadBalancingPolicy"] = "RoundRobbin";
        config.Reload();

        var logged = await logs.WaitForAsync("Failed to apply the new config");
        logged.Should().Contain("RateLimiter policy 'per-secnod' not found for route 'r'.");
        logged.Should().Contain("No matching ILoadBalancingPolicy found for the load balancing policy 'RoundRobbin' set on the cluster 'b'.");
        for (var i = 0; i < 10; i++)
        {
            (await RoutingTests.Send(gateway.Client, HttpMethod.Get, "/x")).Should().Be("a");
        }

        // Fixed names: the change applies.
        config["Routes:r:RateLimiterPolicy"] = "per-client";
        config["Clusters:b:LoadBalancingPolicy"] = "RoundRobin";
        config.Reload();
        await Gateways.EventuallyAsync(gateway.Client, "/x", body => body == "b");
        b.Hits.Should().BeGreaterThan(0);
    }

    [Fact]
    public async Task RequestRoute_UnknownPolicyNames_FailStartAndAReloadNamingOneIsRejected()
    {
        var bad = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Requests:quotes:Path"] = "/api/quotes",
            ["Requests:quotes:Request"] = "GetQuote",
            ["Requests:quotes:AuthorizationPolicy"] = "admins",
            ["Requests:quotes:RateLimiterPolicy"] = "per-secnod",
        }).Build();

        var error = await Gateways.StartFailureAsync(() => StartAsync(bad));
        error.Should().StartWith("Invalid gateway request routes: ");
        error.Should().Contain("Request route 'quotes': Authorization policy 'admins' not found for route 'quotes'.");
        error.Should().Contain("Request route 'quotes': RateLimiter policy 'per-secnod' not found for route 'quotes'.");

        var logs = new GatewayLogs();
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Requests:quotes:Path"] = "/api/quotes",
            ["Requests:quotes:Request"] = "GetQuote",
            ["Requests:quotes:RateLimiterPolicy"] = "per-client",
        }).Build();
        await using var gateway = await StartAsync(config, logs);

        config["Requests:quotes:Path"] = "/api/v2/quotes";
        config["Requests:quotes:RateLimiterPolicy"] = "per-secnod";
        config.Reload();

        logs.Of(1310).Should().ContainSingle().Which.Should().Be(
            "The changed gateway request routes were rejected; the last good ones stay. Request route 'quotes': RateLimiter policy 'per-secnod' not found for route 'quotes'.");
        using var kept = await gateway.Client.PostAsJsonAsync("/api/quotes", new GetQuote("ACME"), Ct);
        kept.StatusCode.Should().Be(HttpStatusCode.OK);
        using var notMoved = await gateway.Client.PostAsJsonAsync("/api/v2/quotes", new GetQuote("ACME"), Ct);
        notMoved.StatusCode.Should().Be(HttpStatusCode.NotFound);
    }
}
