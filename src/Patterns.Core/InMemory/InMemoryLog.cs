using Microsoft.Extensions.Logging;

namespace Patterns.InMemory;

internal static partial class InMemoryLog
{
    [LoggerMessage(EventId = 1101, Level = LogLevel.Warning, Message = "Message {MessageId} from '{Queue}' was dead-lettered: {Reason}")]
    public static partial void DeadLettered(ILogger logger, Guid messageId, string queue, string reason, Exception? exception);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Warning, Message = "{Count} message(s) buffered for '{Queue}' were not handled before the drain deadline and are lost (the in-memory transport does not persist).")]
    public static partial void MessagesDropped(ILogger logger, int count, string queue);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Warning, Message = "The dead-letter queue of '{Queue}' is full (capacity {Capacity}); its {Count} oldest message(s) were discarded.")]
    public static partial void DeadLetterEvicted(ILogger logger, int count, string queue, int capacity);

    [LoggerMessage(EventId = 1105, Level = LogLevel.Warning, Message = "{Count} delayed redelivery(ies) for '{Queue}' were still waiting for their delay when the transport closed and are lost (the in-memory transport does not persist).")]
    public static partial void DelayedRedeliveriesLost(ILogger logger, int count, string queue);

    [LoggerMessage(EventId = 1106, Level = LogLevel.Warning, Message = "The handler of message {MessageId} from '{Queue}' did not stop by the drain deadline although its token was cancelled; it was abandoned and the message is counted as dropped (the in-memory transport does not persist).")]
    public static partial void HandlerAbandoned(ILogger logger, Guid messageId, string queue);
}
