using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Gateway.Messaging;
using Patterns.Gateway.Resilience;
using Patterns.Gateway.Security;
using Patterns.Gateway.Telemetry;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Maps the gateway's proxy routes.</summary>
public static class GatewayEndpointRouteBuilderExtensions
{
    /// <summary>
    /// Maps every configured route through YARP with the gateway's proxy pipeline: declared oversize bodies answered 413, request bodies buffered for retries,
    /// session affinity, load balancing and passive health checks. Also maps the request routes of configuration (the
    /// <c>Requests</c> section of <see cref="Patterns.Gateway.GatewayBuilder.LoadFromConfig"/>); a bad one throws here, naming the route and the field.
    /// </summary>
    /// <param name="endpoints">The endpoint route builder.</param>
    /// <param name="configure">Adds middleware to the proxy pipeline ahead of load balancing.</param>
    /// <returns>The convention builder of the proxy endpoints.</returns>
    public static ReverseProxyConventionBuilder MapGateway(this IEndpointRouteBuilder endpoints, Action<IReverseProxyApplicationBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        MapRequestRoutes(endpoints);
        return endpoints.MapReverseProxy(proxy =>
        {
            proxy.Use(ProxyTelemetryMiddleware.InvokeAsync);
            proxy.Use(RequestLimitsMiddleware.InvokeAsync);
            proxy.Use(BodyBufferingMiddleware.InvokeAsync);
            configure?.Invoke(proxy);
            proxy.UseSessionAffinity();
            proxy.UseLoadBalancing();
            proxy.UsePassiveHealthChecks();
        });
    }

    private static void MapRequestRoutes(IEndpointRouteBuilder endpoints)
    {
        var services = endpoints.ServiceProvider;
        var sections = services.GetServices<RequestRouteSection>().ToList();
        if (sections.Count == 0)
        {
            return;
        }

        var targets = services.GetServices<RequestTarget>().ToList();
        var messages = services.GetServices<MessageTarget>().ToList();
        var isService = services.GetService<IServiceProviderIsService>();
        var logger = services.GetRequiredService<ILoggerFactory>().CreateLogger("Patterns.Gateway.RequestRoutes");
        var lifetime = services.GetService<IHostApplicationLifetime>();
        foreach (var section in sections)
        {
            var source = new RequestRouteDataSource(section.Section, targets, messages, isService, logger);
            endpoints.DataSources.Add(source);
            lifetime?.ApplicationStopped.Register(source.Dispose);
        }
    }
}
