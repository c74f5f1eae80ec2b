using Microsoft.Extensions.Logging;

namespace Patterns.Postgres;

internal static partial class PostgresLog
{
    [LoggerMessage(EventId = 4001, Level = LogLevel.Information, Message = "Migrated PostgreSQL schema '{Schema}' from version {From} to {To}.")]
    public static partial void Migrated(ILogger logger, string schema, int from, int to);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Debug, Message = "Listening for event notifications on channel '{Channel}'.")]
    public static partial void Listening(ILogger logger, string channel);

    [LoggerMessage(EventId = 4003, Level = LogLevel.Warning, Message = "The connection listening on channel '{Channel}' failed; waiters poll until it reconnects in {Delay}.")]
    public static partial void ListenerFailed(ILogger logger, Exception exception, string channel, TimeSpan delay);

    [LoggerMessage(EventId = 4004, Level = LogLevel.Warning, Message = "Ignored a notification on channel '{Channel}' with an unexpected payload '{Payload}'.")]
    public static partial void BadNotification(ILogger logger, string channel, string payload);
}
