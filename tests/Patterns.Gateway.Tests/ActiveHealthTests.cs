using Microsoft.AspNetCore.Http;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Tests;

public sealed class ActiveHealthTests
{
    [Fact]
    public async Task YarpActiveProbes_FailingHealthEndpoint_DestinationLeavesRotationAlongsideWeights()
    {
        Func<HttpContext, Task> sick = c =>
        {
            c.Response.StatusCode = c.Request.Path == "/health" ? 503 : 200;
            return c.Response.WriteAsync("sick");
        };
        await using var healthy = await Backend.StartAsync("healthy");
        await using var unhealthy = await Backend.StartAsync("unhealthy", sick);
        var route = new RouteConfig { RouteId = "r", ClusterId = "c", Match = new RouteMatch { Path = "{**rest}" } };
        var cluster = new ClusterConfig
        {
            ClusterId = "c",
            LoadBalancingPolicy = GatewayPolicies.Weighted,
            HealthCheck = new HealthCheckConfig
            {
                Active = new ActiveHealthCheckConfig { Enabled = true, Interval = TimeSpan.FromSeconds(1), Timeout = TimeSpan.FromSeconds(5), Path = "/health" },
            },
            Destinations = new Dictionary<string, DestinationConfig>
            {
                ["healthy"] = new() { Address = healthy.Address, Metadata = new Dictionary<string, string> { [GatewayMetadata.Weight] = "1" } },
                ["unhealthy"] = new() { Address = unhealthy.Address, Metadata = new Dictionary<string, string> { [GatewayMetadata.Weight] = "9" } },
            },
        };
        await using var gateway = await Gateways.FromCodeAsync([route], [cluster]);
        var state = OutlierDetectionTests.Cluster(gateway);

        Waits.Until(() => state.DestinationsState.AllDestinations.Single(d => d.DestinationId == "unhealthy").Health.Active == DestinationHealth.Unhealthy, "the probe marks the sick destination");
        Waits.Until(() => state.DestinationsState.AvailableDestinations.Count == 1, "the sick destination leaves rotation");
        var before = unhealthy.Received.Count(r => r.Path != "/health");
        await OutlierDetectionTests.Send(gateway.Client, 10);

        unhealthy.Received.Count(r => r.Path != "/health").Should().Be(before);
        healthy.Received.Count(r => r.Path != "/health").Should().BeGreaterThanOrEqualTo(10);
    }
}
