using System.Diagnostics;
using Microsoft.AspNetCore.Http;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Telemetry;

/// <summary>
/// First in the proxy pipeline: one span per proxied request (<c>gateway.proxy {route}</c>) tagged with the route, the
/// cluster and the destination that answered, and the <c>patterns.gateway.proxy.duration</c> histogram with the same
/// tags and the status. Costs one check per request while nobody listens.
/// </summary>
internal static class ProxyTelemetryMiddleware
{
    public static Task InvokeAsync(HttpContext context, RequestDelegate next) =>
        GatewayTelemetry.Source.HasListeners() || GatewayTelemetry.ProxyDuration.Enabled
            ? TrackAsync(context, next)
            : next(context);

    private static async Task TrackAsync(HttpContext context, RequestDelegate next)
    {
        var feature = context.Features.Get<IReverseProxyFeature>();
        var routeId = feature?.Route.Config.RouteId;
        var clusterId = feature?.Cluster?.Config.ClusterId;
        var started = Stopwatch.GetTimestamp();
        using var activity = GatewayTelemetry.Source.StartActivity("gateway.proxy " + routeId, ActivityKind.Internal);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(GatewayTelemetry.RouteIdTag, routeId);
            activity.SetTag(GatewayTelemetry.ClusterTag, clusterId);
        }

        string? error = null;
        try
        {
            await next(context).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            error = ex.GetType().FullName;
            throw;
        }
        finally
        {
            var destination = feature?.ProxiedDestination?.DestinationId;
            var status = context.Response.StatusCode;
            error ??= context.Features.Get<IForwarderErrorFeature>() is { Error: not ForwarderError.None } forwarderError ? forwarderError.Error.ToString()
                : status >= 500 ? status.ToString(System.Globalization.CultureInfo.InvariantCulture) : null;
            if (activity is { IsAllDataRequested: true })
            {
                activity.SetTag(GatewayTelemetry.DestinationTag, destination);
                activity.SetTag(GatewayTelemetry.StatusTag, status);
                if (error is not null)
                {
                    activity.SetTag(GatewayTelemetry.ErrorTag, error);
                    activity.SetStatus(ActivityStatusCode.Error);
                }
            }

            if (GatewayTelemetry.ProxyDuration.Enabled)
            {
                var tags = new TagList
                {
                    { GatewayTelemetry.RouteIdTag, routeId },
                    { GatewayTelemetry.ClusterTag, clusterId },
                    { GatewayTelemetry.DestinationTag, destination },
                    { GatewayTelemetry.StatusTag, status },
                };
                if (error is not null)
                {
                    tags.Add(GatewayTelemetry.ErrorTag, error);
                }

                GatewayTelemetry.ProxyDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds, tags);
            }
        }
    }
}
