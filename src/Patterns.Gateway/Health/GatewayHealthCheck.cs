using Microsoft.Extensions.Diagnostics.HealthChecks;
using Yarp.ReverseProxy;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Health;

/// <summary>Healthy when every cluster has all its destinations available, degraded when some are ejected or down, unhealthy when a cluster has none.</summary>
internal sealed class GatewayHealthCheck(IProxyStateLookup lookup) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var data = new Dictionary<string, object>(StringComparer.Ordinal);
        var empty = new List<string>();
        var degraded = new List<string>();
        foreach (var cluster in lookup.GetClusters())
        {
            var all = cluster.DestinationsState.AllDestinations.Count;
            var available = cluster.DestinationsState.AvailableDestinations.Count;
            data[cluster.ClusterId] = $"{available}/{all} destinations available";
            if (all > 0 && available == 0)
            {
                empty.Add(cluster.ClusterId);
            }
            else if (available < all || cluster.DestinationsState.AllDestinations.Any(d => d.Health.Passive == DestinationHealth.Unhealthy))
            {
                degraded.Add(cluster.ClusterId);
            }
        }

        var result = empty.Count > 0
            ? HealthCheckResult.Unhealthy($"No destination available in: {string.Join(", ", empty)}.", data: data)
            : degraded.Count > 0
                ? HealthCheckResult.Degraded($"Destinations down in: {string.Join(", ", degraded)}.", data: data)
                : HealthCheckResult.Healthy($"{data.Count} clusters, every destination available.", data);
        return Task.FromResult(result);
    }
}
