using Microsoft.Extensions.Logging;

namespace Patterns.Gateway.Telemetry;

/// <summary>The gateway's log messages (event ids 1310 and up; the outlier detector has 1301 and 1302).</summary>
internal static partial class GatewayLog
{
    [LoggerMessage(EventId = 1310, Level = LogLevel.Error, Message = "The changed gateway request routes were rejected; the last good routes stay. {Errors}")]
    public static partial void RequestRoutesRejected(ILogger logger, string errors);

    [LoggerMessage(EventId = 1311, Level = LogLevel.Warning, Message = "{Method} {Path} to cluster '{Cluster}' was not retried after a failure: {Reason}")]
    public static partial void RetryRefused(ILogger logger, string method, string path, string cluster, string reason);

    [LoggerMessage(EventId = 1312, Level = LogLevel.Information, Message = "A Server-Sent Events client of topic '{Topic}' took no write for a keep-alive interval and was disconnected.")]
    public static partial void StalledClientDropped(ILogger logger, string topic);
}
