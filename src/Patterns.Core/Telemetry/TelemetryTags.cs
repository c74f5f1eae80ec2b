namespace Patterns.Telemetry;

/// <summary>Attribute names used on spans and instruments (OpenTelemetry messaging conventions).</summary>
internal static class TelemetryTags
{
    public const string System = "messaging.system";
    public const string Destination = "messaging.destination.name";
    public const string OperationName = "messaging.operation.name";
    public const string OperationType = "messaging.operation.type";
    public const string ConsumerGroup = "messaging.consumer.group.name";
    public const string MessageId = "messaging.message.id";
    public const string ConversationId = "messaging.message.conversation_id";
    public const string ErrorType = "error.type";
    public const string DeliveryCount = "messaging.patterns.delivery_count";
}
