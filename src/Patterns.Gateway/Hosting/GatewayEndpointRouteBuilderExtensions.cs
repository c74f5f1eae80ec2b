using Microsoft.AspNetCore.Routing;
using Patterns.Gateway.Resilience;
using Patterns.Gateway.Security;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Maps the gateway's proxy routes.</summary>
public static class GatewayEndpointRouteBuilderExtensions
{
    /// <summary>
    /// Maps every configured route through YARP with the gateway's proxy pipeline: declared oversize bodies answered 413, request bodies buffered for retries,
    /// session affinity, load balancing and passive health checks.
    /// </summary>
    /// <param name="endpoints">The endpoint route builder.</param>
    /// <param name="configure">Adds middleware to the proxy pipeline ahead of load balancing.</param>
    /// <returns>The convention builder of the proxy endpoints.</returns>
    public static ReverseProxyConventionBuilder MapGateway(this IEndpointRouteBuilder endpoints, Action<IReverseProxyApplicationBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        return endpoints.MapReverseProxy(proxy =>
        {
            proxy.Use(RequestLimitsMiddleware.InvokeAsync);
            proxy.Use(BodyBufferingMiddleware.InvokeAsync);
            configure?.Invoke(proxy);
            proxy.UseSessionAffinity();
            proxy.UseLoadBalancing();
            proxy.UsePassiveHealthChecks();
        });
    }
}
