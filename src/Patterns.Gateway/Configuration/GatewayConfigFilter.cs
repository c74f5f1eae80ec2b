using Yarp.ReverseProxy.Configuration;

namespace Patterns.Gateway.Configuration;

/// <summary>Validates the gateway's metadata when YARP loads a configuration: at start a bad value fails the host, on reload YARP keeps the last good configuration.</summary>
internal sealed class GatewayConfigFilter : IProxyConfigFilter
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

    public ValueTask<RouteConfig> ConfigureRouteAsync(RouteConfig route, ClusterConfig? cluster, CancellationToken cancel) => new(route);
}
