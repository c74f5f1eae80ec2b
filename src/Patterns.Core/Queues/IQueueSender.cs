using Patterns.Messaging;

namespace Patterns.Queues;

/// <summary>Sends messages to named queues, where exactly one competing consumer handles each.</summary>
public interface IQueueSender
{
    /// <summary>Sends a message to a queue.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="queue">The queue name.</param>
    /// <param name="message">The message.</param>
    /// <param name="cancellationToken">Cancels waiting for queue space.</param>
    /// <returns>A task that completes when the transport has accepted the message.</returns>
    /// <exception cref="Transport.QueueFullException">The queue is full and its full mode is reject.</exception>
    /// <exception cref="InvalidOperationException">The queue does not exist.</exception>
    ValueTask SendAsync<TMessage>(string queue, TMessage message, CancellationToken cancellationToken = default)
        where TMessage : notnull;

    /// <summary>Sends a message to a queue with per-message options.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="queue">The queue name.</param>
    /// <param name="message">The message.</param>
    /// <param name="options">Partition key, correlation and headers.</param>
    /// <param name="cancellationToken">Cancels waiting for queue space.</param>
    /// <returns>A task that completes when the transport has accepted the message.</returns>
    ValueTask SendAsync<TMessage>(string queue, TMessage message, MessageOptions options, CancellationToken cancellationToken = default)
        where TMessage : notnull;
}
