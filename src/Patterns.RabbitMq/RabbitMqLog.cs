using Microsoft.Extensions.Logging;

namespace Patterns.RabbitMq;

internal static partial class RabbitMqLog
{
    [LoggerMessage(EventId = 5001, Level = LogLevel.Information, Message = "Connected to RabbitMQ at {Endpoint} ({Purpose}).")]
    public static partial void Connected(ILogger logger, string endpoint, string purpose);

    [LoggerMessage(EventId = 5002, Level = LogLevel.Warning, Message = "Connecting to RabbitMQ at {Endpoint} failed; retrying in {Delay}.")]
    public static partial void ConnectFailed(ILogger logger, Exception exception, string endpoint, TimeSpan delay);

    [LoggerMessage(EventId = 5003, Level = LogLevel.Warning, Message = "The {Purpose} connection to RabbitMQ at {Endpoint} was lost: {Reason}. It reconnects on its own.")]
    public static partial void ConnectionLost(ILogger logger, string purpose, string endpoint, string reason);

    [LoggerMessage(EventId = 5004, Level = LogLevel.Information, Message = "The {Purpose} connection to RabbitMQ at {Endpoint} is back.")]
    public static partial void ConnectionRecovered(ILogger logger, string purpose, string endpoint);

    [LoggerMessage(EventId = 5005, Level = LogLevel.Warning, Message = "Message {MessageId} from '{Queue}' was dead-lettered: {Reason}")]
    public static partial void DeadLettered(ILogger logger, Guid messageId, string queue, string reason, Exception? exception);

    [LoggerMessage(EventId = 5006, Level = LogLevel.Warning, Message = "A delivery from '{Queue}' could not be read and is dead-lettered: {Reason}")]
    public static partial void Malformed(ILogger logger, string queue, string reason);


    [LoggerMessage(EventId = 5008, Level = LogLevel.Warning, Message = "Settling message {MessageId} from '{Queue}' failed; its channel is closed so that the broker delivers it (and the channel's other unacknowledged messages) again.")]
    public static partial void SettleFailed(ILogger logger, Exception exception, Guid messageId, string queue);

    [LoggerMessage(EventId = 5009, Level = LogLevel.Warning, Message = "The consumer of '{Queue}' stopped receiving ({Reason}); subscribing again.")]
    public static partial void ConsumerInterrupted(ILogger logger, string queue, string reason);

    [LoggerMessage(EventId = 5010, Level = LogLevel.Warning, Message = "Subscribing to '{Queue}' again failed; retrying in {Delay}.")]
    public static partial void ResubscribeFailed(ILogger logger, Exception exception, string queue, TimeSpan delay);

    [LoggerMessage(EventId = 5011, Level = LogLevel.Debug, Message = "Queue '{Queue}' already exists with other settings; using it as it is: {Reason}")]
    public static partial void QueueExistsWithOtherSettings(ILogger logger, string queue, string reason);

    [LoggerMessage(EventId = 5012, Level = LogLevel.Warning, Message = "A message for temporary queue '{Queue}' was dropped: {Reason}")]
    public static partial void TemporaryDropped(ILogger logger, string queue, string reason);

    [LoggerMessage(EventId = 5013, Level = LogLevel.Error, Message = "RabbitMQ returned message {MessageId} sent to exchange '{Exchange}' with routing key '{RoutingKey}' ({ReplyCode} {ReplyText}): no queue took it, so it is lost. Publisher confirms are off, so the send had completed already.")]
    public static partial void Returned(ILogger logger, string? messageId, string exchange, string routingKey, ushort replyCode, string replyText);


    [LoggerMessage(EventId = 5015, Level = LogLevel.Error, Message = "Handling a delivery from '{Queue}' failed inside the transport; its channel is closed so that the broker delivers its unacknowledged messages again.")]
    public static partial void ProcessingFailed(ILogger logger, Exception exception, string queue);
}
