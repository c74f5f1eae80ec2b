using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Gateway.Aggregation;
using Patterns.Gateway.Configuration;
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
    /// session affinity, load balancing, passive health checks, and a circuit breaker's judgement of an answer once its body is through. Also maps the request routes and aggregate routes of configuration (the
    /// <c>Requests</c> and <c>Aggregates</c> sections of <see cref="Patterns.Gateway.GatewayBuilder.LoadFromConfig"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">The configuration is invalid: the message names every route or cluster and field at fault
    /// (an unknown policy name, a malformed gateway key, a misspelt field).</exception>
    /// <param name="endpoints">The endpoint route builder.</param>
    /// <param name="configure">Adds middleware to the proxy pipeline ahead of load balancing.</param>
    /// <returns>The convention builder of the proxy endpoints.</returns>
    public static ReverseProxyConventionBuilder MapGateway(this IEndpointRouteBuilder endpoints, Action<IReverseProxyApplicationBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ResiliencePolicyRegistry registry;
        try
        {
            // The named resilience policies first: a problem in them is reported as itself, not as every route naming the policy.
            registry = endpoints.ServiceProvider.GetRequiredService<ResiliencePolicyRegistry>();
            _ = registry.Current;
        }
        catch (InvalidOperationException ex)
        {
            throw new InvalidOperationException("Invalid gateway configuration: " + ex.Message, ex);
        }

        ReverseProxyConventionBuilder proxy;
        try
        {
            proxy = endpoints.MapReverseProxy(pipeline =>
            {
                pipeline.Use(ProxyTelemetryMiddleware.InvokeAsync);
                pipeline.Use(RequestLimitsMiddleware.InvokeAsync);
                pipeline.Use(BodyBufferingMiddleware.InvokeAsync);
                configure?.Invoke(pipeline);
                pipeline.UseSessionAffinity();
                pipeline.UseLoadBalancing();
                pipeline.UsePassiveHealthChecks();

                // Last: runs once the forwarder is done, so a circuit breaker counts an answer whose body broke off (BreakerHold).
                pipeline.Use(BreakerHolds.Middleware(registry));
            });
        }
        catch (InvalidOperationException ex) when (ex.InnerException is AggregateException invalid)
        {
            // YARP's own message says only that the configuration could not be loaded; the problems are inside it.
            throw new InvalidOperationException("Invalid gateway configuration: " + string.Join(" ", invalid.InnerExceptions.Select(Describe)), ex);
        }

        MapConfigRoutes(endpoints);
        return proxy;
    }

    /// <summary>One problem of a configuration load: YARP's message, and the message of the exception it wraps, if any.</summary>
    private static string Describe(Exception error)
    {
        var text = error.Message;
        for (var inner = error.InnerException; inner is not null; inner = inner.InnerException)
        {
            text += " " + inner.Message;
        }

        return text;
    }

    private static void MapConfigRoutes(IEndpointRouteBuilder endpoints)
    {
        var services = endpoints.ServiceProvider;
        var lifetime = services.GetService<IHostApplicationLifetime>();
        foreach (var gateway in services.GetServices<GatewaySection>())
        {
            ConfigRouteDataSource[] sources =
            [
                new RequestRouteDataSource(gateway.Section.GetSection("Requests"), services),
                new AggregateRouteDataSource(gateway.Section.GetSection("Aggregates"), gateway.Section.GetSection("Clusters"), services),
            ];
            foreach (var source in sources)
            {
                endpoints.DataSources.Add(source);
                lifetime?.ApplicationStopped.Register(source.Dispose);
            }
        }
    }
}
