using Patterns.Gateway.Health;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers the gateway's health check.</summary>
public static class GatewayHealthChecksBuilderExtensions
{
    /// <summary>Adds a check over every cluster: healthy when all destinations are available, degraded when some are down or ejected, unhealthy when a cluster has none.</summary>
    /// <param name="builder">The health checks builder.</param>
    /// <param name="name">The check's name.</param>
    /// <returns>The builder.</returns>
    public static IHealthChecksBuilder AddGatewayClusters(this IHealthChecksBuilder builder, string name = "gateway")
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.AddCheck<GatewayHealthCheck>(name, tags: ["gateway"]);
    }
}
