using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Patterns.Gateway.Telemetry;

/// <summary>The package's one <see cref="ActivitySource"/> and one <see cref="Meter"/>, both named <c>Patterns.Gateway</c>.</summary>
internal static class GatewayTelemetry
{
    public const string Name = "Patterns.Gateway";
    public const string ClusterTag = "patterns.gateway.cluster";
    public const string RouteIdTag = "patterns.gateway.route";
    public const string DestinationTag = "patterns.gateway.destination";
    public const string ErrorTag = "error.type";
    public const string RouteTag = "http.route";
    public const string TopicTag = "messaging.destination.name";
    public const string StatusTag = "http.response.status_code";

    private static readonly string? Version = typeof(GatewayTelemetry).Assembly.GetName().Version?.ToString();

    public static readonly ActivitySource Source = new(Name, Version);

    public static readonly Meter Meter = new(Name, Version);

    public static readonly Counter<long> Retries = Meter.CreateCounter<long>("patterns.gateway.retries", "{retry}", "Retries sent to another destination.");

    public static readonly Counter<long> Hedges = Meter.CreateCounter<long>("patterns.gateway.hedges", "{attempt}", "Hedged attempts sent.");

    public static readonly Counter<long> Ejections = Meter.CreateCounter<long>("patterns.gateway.ejections", "{ejection}", "Destinations ejected as outliers.");

    public static readonly Counter<long> PushDropped = Meter.CreateCounter<long>("patterns.gateway.push.dropped", "{message}", "Messages dropped for slow push clients.");

    public static readonly Counter<long> PushDisconnected = Meter.CreateCounter<long>("patterns.gateway.push.disconnected", "{connection}", "Slow push clients disconnected.");

    public static readonly Histogram<double> ProxyDuration = Meter.CreateHistogram<double>("patterns.gateway.proxy.duration", "s", "Duration of proxied requests, retries and hedges included, per route, cluster, destination and status.");

    public static readonly Histogram<double> TranslationDuration = Meter.CreateHistogram<double>("patterns.gateway.translation.duration", "s", "Duration of HTTP requests translated to messaging calls.");

    public static readonly Histogram<double> LegDuration = Meter.CreateHistogram<double>("patterns.gateway.aggregate.leg.duration", "s", "Duration of aggregation legs.");
}
