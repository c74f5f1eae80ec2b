using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Telemetry;
using Patterns.Transport;

namespace Patterns.Hosting;

/// <summary>
/// Turns a delivered envelope into the typed message a consumer handles: the body itself in-process, or the
/// payload deserialized as the registered type. A message that cannot be materialized gets a dead-letter
/// settlement that names the problem. Shared by every consumer of the transport.
/// </summary>
internal static class MessageMaterializer
{
    public static bool TryGet<TMessage>(
        in Envelope envelope,
        MessageTypeRegistry registry,
        IMessageSerializer serializer,
        ILogger logger,
        string system,
        string source,
        string consumerGroup,
        out TMessage message,
        out Settlement rejection)
    {
        rejection = default;
        if (envelope.Body is TMessage typed)
        {
            message = typed;
            return true;
        }

        message = default!;
        string reason;
        Exception? exception = null;
        if (envelope.Body is { } other)
        {
            reason = $"Consumer group '{consumerGroup}' handles '{typeof(TMessage).FullName}' but received a body of type '{other.GetType().FullName}'.";
        }
        else if (envelope.PayloadLength == 0)
        {
            reason = "The message has neither a body nor a payload.";
        }
        else if (!TryResolveType<TMessage>(envelope, registry, consumerGroup, out var type, out reason))
        {
            // reason is set
        }
        else
        {
            try
            {
                message = (TMessage)serializer.Deserialize(envelope.PayloadSequence, type);
                return true;
            }
            catch (Exception ex) when (ex is MessageDeserializationException or InvalidCastException or NotSupportedException)
            {
                reason = $"Malformed payload: {ex.Message}";
                exception = ex;
            }
        }

        HostingLog.Rejected(logger, envelope.MessageId, source, reason);
        PatternsTelemetry.Failed.Add(1, PatternsTelemetry.Tags(system, source, consumerGroup));
        rejection = Settlement.DeadLetter(reason, exception);
        return false;
    }

    private static bool TryResolveType<TMessage>(in Envelope envelope, MessageTypeRegistry registry, string consumerGroup, out Type type, out string reason)
    {
        type = typeof(TMessage);
        reason = string.Empty;
        if (envelope.MessageType is not { } name)
        {
            return true;
        }

        if (!registry.TryGetType(name, out var registered))
        {
            reason = $"Unknown message type '{name}': no type is registered under that name (consumer group '{consumerGroup}' handles '{typeof(TMessage).FullName}').";
            return false;
        }

        if (!typeof(TMessage).IsAssignableFrom(registered))
        {
            reason = $"Message type '{name}' ({registered.FullName}) is not a '{typeof(TMessage).FullName}', which consumer group '{consumerGroup}' handles.";
            return false;
        }

        type = registered;
        return true;
    }
}
