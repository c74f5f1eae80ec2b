namespace Patterns.Messaging;

/// <summary>Handles messages of one type, from a pub/sub subscription or a queue.</summary>
/// <typeparam name="TMessage">The message type.</typeparam>
/// <remarks>
/// Registered by type, a handler is resolved from a new DI scope for each message, unless it is registered
/// as a singleton. A handler that throws is retried by its consumer's resilience pipeline and then
/// redelivered or dead-lettered; it never stops the consumer.
/// </remarks>
public interface IMessageHandler<in TMessage>
{
    /// <summary>Handles one message.</summary>
    /// <param name="message">The message.</param>
    /// <param name="context">The envelope and helpers for sending follow-up messages; valid until this method's task completes.</param>
    /// <param name="cancellationToken">Cancelled when the consumer stops and the drain deadline has passed, or an attempt timeout fires.</param>
    /// <returns>A task that completes when the message is handled.</returns>
    ValueTask HandleAsync(TMessage message, MessageContext context, CancellationToken cancellationToken);
}
