using Patterns.Gateway.Resilience;
using Yarp.ReverseProxy.Configuration;

namespace Patterns.Gateway.Configuration;

/// <summary>Validates the gateway's metadata when YARP loads a configuration: at start a bad value fails the host, on reload YARP keeps the last good configuration.</summary>
internal sealed class GatewayConfigFilter(ResiliencePolicyRegistry policies) : IProxyConfigFilter
{
    public ValueTask<ClusterConfig> ConfigureClusterAsync(ClusterConfig cluster, CancellationToken cancel)
    {
        var errors = new List<string>();
        ClusterPolicy.Parse(cluster, errors);
        if (errors.Count > 0)
        {
            throw new InvalidOperationException(string.Join(" ", errors));
        }

        return new ValueTask<ClusterConfig>(cluster);
    }

    public ValueTask<RouteConfig> ConfigureRouteAsync(RouteConfig route, ClusterConfig? cluster, CancellationToken cancel)
    {
        if (route.Metadata is not { Count: > 0 } metadata)
        {
            return new(route);
        }

        foreach (var key in metadata.Keys)
        {
            if (key.StartsWith("Patterns.", StringComparison.OrdinalIgnoreCase) && !string.Equals(key, GatewayMetadata.ResiliencePolicy, StringComparison.OrdinalIgnoreCase))
            {
                throw new InvalidOperationException($"Route '{route.RouteId}': Metadata '{key}' is not a gateway route key; a route takes only '{GatewayMetadata.ResiliencePolicy}'.");
            }
        }

        if (ClusterPolicy.TryGetRoutePolicy(metadata, out var name))
        {
            var set = policies.Current;

            // A carried policy (one the configuration no longer defines) is kept only for a route YARP already serves with it:
            // a new route, or a changed one newly naming it, fails as for an unknown policy.
            if (string.IsNullOrWhiteSpace(name) || set.Find(name) is not { } named
                || (set.Carried.Contains(name, StringComparer.OrdinalIgnoreCase) && !policies.LiveRouteNames(route.RouteId, name)))
            {
                var known = set.Names.Except(set.Carried, StringComparer.OrdinalIgnoreCase).Order(StringComparer.OrdinalIgnoreCase).ToList();
                throw new InvalidOperationException(
                    $"Route '{route.RouteId}': resilience policy '{name}' is not defined; " +
                    (known.Count == 0 ? "no policy is (define one with AddResiliencePolicy or under ResiliencePolicies in the gateway's configuration)." : $"the policies are {string.Join(", ", known)}."));
            }

            policies.Pin(route, named);
        }

        return new(route);
    }
}
