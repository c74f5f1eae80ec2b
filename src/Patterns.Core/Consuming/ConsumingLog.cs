using Microsoft.Extensions.Logging;

namespace Patterns.Consuming;

internal static partial class ConsumingLog
{
    [LoggerMessage(EventId = 1201, Level = LogLevel.Debug, Message = "Message {MessageId} was handled before by consumer group '{Group}' (its inbox entry exists); this copy is acknowledged without handling it again.")]
    public static partial void Duplicate(ILogger logger, Guid messageId, string group);

    [LoggerMessage(EventId = 1202, Level = LogLevel.Warning, Message = "The inbox store failed while checking message {MessageId} for consumer group '{Group}'; the message is put off for {Delay} and checked again.")]
    public static partial void InboxCheckFailed(ILogger logger, Exception exception, Guid messageId, string group, TimeSpan delay);

    [LoggerMessage(EventId = 1203, Level = LogLevel.Error, Message = "Message {MessageId} was handled by consumer group '{Group}', but the inbox store failed to record it; it is delivered again (and may be handled twice).")]
    public static partial void InboxMarkFailed(ILogger logger, Exception exception, Guid messageId, string group);

    [LoggerMessage(EventId = 1204, Level = LogLevel.Warning, Message = "Message {MessageId} for consumer group '{Group}' expired at {ExpiresAt} before it was handled; it is dead-lettered.")]
    public static partial void Expired(ILogger logger, Guid messageId, string group, DateTimeOffset expiresAt);

    [LoggerMessage(EventId = 1205, Level = LogLevel.Debug, Message = "Message {MessageId} for consumer group '{Group}' is scheduled for {DeliverAt}; it is put off for {Delay}.")]
    public static partial void Deferred(ILogger logger, Guid messageId, string group, DateTimeOffset deliverAt, TimeSpan delay);
}
