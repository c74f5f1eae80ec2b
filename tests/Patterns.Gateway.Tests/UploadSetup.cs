using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Patterns.Gateway.Resilience;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Tests;

/// <summary>The destination, gateway and client that the upload tests (<see cref="UploadBlameTests"/>, <see cref="ClientUploadStallTests"/>) set up alike.</summary>
internal static class UploadSetup
{
    /// <summary>
    /// A cluster's metadata: outlier detection that ejects at one failure; with <paramref name="breaker"/>, a circuit breaker
    /// that opens on a success and a failure (0.5 of 2 attempts) for a minute; with <paramref name="timeout"/>, the request's
    /// timeout (<c>Patterns.Timeout</c>) of 3 s.
    /// </summary>
    public static Dictionary<string, string> Metadata(bool breaker = false, bool timeout = false)
    {
        var metadata = new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "1" };
        if (timeout)
        {
            metadata[GatewayMetadata.Timeout] = "00:00:03";
        }

        if (breaker)
        {
            metadata[GatewayMetadata.CircuitBreakerFailureRatio] = "0.5";
            metadata[GatewayMetadata.CircuitBreakerMinimumThroughput] = "2";
            metadata[GatewayMetadata.CircuitBreakerBreakDuration] = "00:01:00";
        }

        return metadata;
    }

    /// <summary>
    /// A destination that answers "ok" to a request without the <paramref name="header"/> header (a warm-up, or the request
    /// that shows no circuit opened) and hands a request with it to <paramref name="upload"/>.
    /// </summary>
    public static Task<KestrelHost> StartDestinationAsync(
        string header, RequestDelegate upload, HttpProtocols protocols, Action<WebApplicationBuilder>? configure = null) =>
        KestrelHost.StartAsync(
            configure ?? (_ => { }),
            app => app.Run(async c =>
            {
                if (!c.Request.Headers.ContainsKey(header))
                {
                    await c.Response.WriteAsync("ok", c.RequestAborted);
                    return;
                }

                await upload(c);
            }),
            protocols);

    /// <summary>
    /// A gateway with one route to one destination behind passive outlier detection, that speaks <paramref name="outgoing"/>
    /// to it and HTTP/2 to its clients (so its answer comes while the body is still open), with Kestrel's minimum body data
    /// rate off (only what the test does ends a request). Every request it takes is handed to <paramref name="seen"/>.
    /// </summary>
    public static Task<KestrelHost> StartGatewayAsync(
        KestrelHost destination, Dictionary<string, string> metadata, TimeProvider time, Version outgoing, TimeSpan? activityTimeout, Action<HttpContext> seen)
    {
        var route = new RouteConfig { RouteId = "all", ClusterId = "c", Match = new RouteMatch { Path = "{**rest}" } };
        var cluster = new ClusterConfig
        {
            ClusterId = "c",
            LoadBalancingPolicy = GatewayPolicies.Weighted,
            Metadata = metadata,
            HealthCheck = new HealthCheckConfig { Passive = new PassiveHealthCheckConfig { Enabled = true, Policy = GatewayPolicies.OutlierDetection } },
            HttpRequest = new ForwarderRequestConfig
            {
                Version = outgoing,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
                ActivityTimeout = activityTimeout,
            },
            Destinations = new Dictionary<string, DestinationConfig> { ["b"] = new() { Address = destination.Address } },
        };

        return Gateways.FromCodeAsync(
            [route], [cluster], time,
            services: b => b.WebHost.ConfigureKestrel(o => o.Limits.MinRequestBodyDataRate = null),
            app: a => a.Use((context, next) =>
            {
                seen(context);
                return next(context);
            }),
            protocols: HttpProtocols.Http2);
    }

    /// <summary>The one destination's state in the gateway's cluster (its passive health).</summary>
    public static DestinationState Destination(KestrelHost gateway) => OutlierDetectionTests.Cluster(gateway).DestinationsState.AllDestinations.Single();

    /// <summary>A client of the gateway, on a connection of its own.</summary>
    public static HttpClient Client(KestrelHost gateway) => new(new SocketsHttpHandler()) { BaseAddress = new Uri(gateway.Address) };

    /// <summary>The HTTP version a test's "h1" or "h2" (h2c) names for the gateway's requests to the destination.</summary>
    public static Version Outgoing(string outgoing) => outgoing == "h2" ? HttpVersion.Version20 : HttpVersion.Version11;
}
