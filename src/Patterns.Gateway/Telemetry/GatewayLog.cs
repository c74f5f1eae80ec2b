using Microsoft.Extensions.Logging;

namespace Patterns.Gateway.Telemetry;

/// <summary>The gateway's log messages (event ids 1310 and up; the outlier detector has 1301 and 1302).</summary>
internal static partial class GatewayLog
{
    [LoggerMessage(EventId = 1310, Level = LogLevel.Error, Message = "The changed gateway {Kind} were rejected; the last good ones stay. {Errors}")]
    public static partial void ConfigRoutesRejected(ILogger logger, string kind, string errors);

    [LoggerMessage(EventId = 1314, Level = LogLevel.Warning, Message = "Resilience policies the configuration no longer defines are kept for the routes that still name them. {Routes}")]
    public static partial void CarriedPoliciesKept(ILogger logger, string routes);

    [LoggerMessage(EventId = 1311, Level = LogLevel.Warning, Message = "{Method} {Path} to cluster '{Cluster}' was not retried after a failure: {Reason}")]
    public static partial void RetryRefused(ILogger logger, string method, string path, string cluster, string reason);

    [LoggerMessage(EventId = 1312, Level = LogLevel.Information, Message = "A Server-Sent Events client of topic '{Topic}' took no write for a keep-alive interval and was disconnected.")]
    public static partial void StalledClientDropped(ILogger logger, string topic);

    [LoggerMessage(EventId = 1313, Level = LogLevel.Information, Message = "A WebSocket client of '{Path}' did not answer a keep-alive ping within {Timeout} and was disconnected ({Topics} topic subscriptions released).")]
    public static partial void UnresponsiveWebSocketDropped(ILogger logger, string path, TimeSpan timeout, int topics);
}
