using Microsoft.Extensions.Logging;

namespace Patterns.Hosting;

internal static partial class HostingLog
{
    [LoggerMessage(EventId = 1001, Level = LogLevel.Debug, Message = "A message published to topic '{Topic}' reached no subscription (a no-op).")]
    public static partial void Unrouted(ILogger logger, string topic);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Warning, Message = "Handler {Handler} failed on message {MessageId} from '{Source}' (delivery {Delivery}); it will be {Outcome}.")]
    public static partial void HandlerFailed(ILogger logger, Exception exception, string handler, Guid messageId, string source, int delivery, string outcome);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Warning, Message = "Message {MessageId} from '{Source}' cannot be handled and is dead-lettered: {Reason}")]
    public static partial void Rejected(ILogger logger, Guid messageId, string source, string reason);

    [LoggerMessage(EventId = 1004, Level = LogLevel.Information, Message = "Patterns started {Consumers} consumer(s) on transport '{Transport}'.")]
    public static partial void Started(ILogger logger, int consumers, string transport);

    [LoggerMessage(EventId = 1005, Level = LogLevel.Information, Message = "Patterns is draining {Consumers} consumer(s) (deadline {Timeout}).")]
    public static partial void Draining(ILogger logger, int consumers, TimeSpan timeout);

    [LoggerMessage(EventId = 1006, Level = LogLevel.Warning, Message = "The response to request {MessageId} could not be delivered to '{ReplyTo}'.")]
    public static partial void ReplyFailed(ILogger logger, Exception exception, Guid messageId, string replyTo);

    [LoggerMessage(EventId = 1007, Level = LogLevel.Debug, Message = "A response with correlation id {CorrelationId} arrived after its request completed or timed out; it is dropped.")]
    public static partial void LateReply(ILogger logger, Guid? correlationId);

    [LoggerMessage(EventId = 1008, Level = LogLevel.Debug, Message = "Handler {Handler} attempt {Attempt} failed; retrying in {Delay}.")]
    public static partial void Retrying(ILogger logger, Exception? exception, string handler, int attempt, TimeSpan delay);

    [LoggerMessage(EventId = 1009, Level = LogLevel.Information, Message = "Message {MessageId} from '{Source}' was handled before by '{Consumer}' (its inbox entry exists); this copy is settled without effect.")]
    public static partial void Duplicate(ILogger logger, Guid messageId, string consumer, string source);

    [LoggerMessage(EventId = 1010, Level = LogLevel.Warning, Message = "A message was published to topic '{Topic}' before the host has started; no consumer has subscribed yet, so it reached no subscription and was dropped. Publish after IHost.StartAsync (or from a hosted service that starts after AddPatterns').")]
    public static partial void PublishedBeforeStart(ILogger logger, string topic);

    [LoggerMessage(EventId = 1011, Level = LogLevel.Information, Message = "Handler {Handler} stopped with message {MessageId} from '{Source}' unhandled ({Reason}); the message is released, to be delivered again without counting a delivery.")]
    public static partial void Released(ILogger logger, string handler, Guid messageId, string source, string reason);
}
