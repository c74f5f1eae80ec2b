using Microsoft.Extensions.Logging;

namespace Patterns.Batching;

internal static partial class BatchingLog
{
    [LoggerMessage(EventId = 3001, Level = LogLevel.Warning, Message = "Batcher '{Batcher}': an item failed after {Attempts} attempt(s) and is dead-lettered.")]
    public static partial void ItemDeadLettered(ILogger logger, Exception exception, string batcher, int attempts);

    [LoggerMessage(EventId = 3002, Level = LogLevel.Error, Message = "Batcher '{Batcher}': the dead-letter callback failed; the item is recorded only in this log.")]
    public static partial void DeadLetterCallbackFailed(ILogger logger, Exception exception, string batcher);

    [LoggerMessage(EventId = 3003, Level = LogLevel.Debug, Message = "Batcher '{Batcher}' is full ({Capacity} items); an item was dropped (FullMode = DropNewest).")]
    public static partial void ItemDropped(ILogger logger, string batcher, int capacity);

    [LoggerMessage(EventId = 3004, Level = LogLevel.Debug, Message = "Batcher '{Batcher}': batch attempt {Attempt} left {Failed} item(s) failed; retrying in {Delay}.")]
    public static partial void Retrying(ILogger logger, Exception? exception, string batcher, int attempt, int failed, TimeSpan delay);

    [LoggerMessage(EventId = 3005, Level = LogLevel.Information, Message = "Batcher '{Batcher}' is completing: {Items} item(s) still buffered.")]
    public static partial void Completing(ILogger logger, string batcher, int items);

    [LoggerMessage(EventId = 3006, Level = LogLevel.Warning, Message = "Batch consumer '{ConsumerGroup}': message {MessageId} failed after {Attempts} attempt(s); it will be {Outcome}.")]
    public static partial void MessageFailed(ILogger logger, Exception exception, string consumerGroup, Guid messageId, int attempts, string outcome);

    [LoggerMessage(EventId = 3007, Level = LogLevel.Information, Message = "Started {Consumers} batch consumer(s) on transport '{Transport}'.")]
    public static partial void ConsumersStarted(ILogger logger, int consumers, string transport);
}
