using Patterns.Messaging;

namespace Patterns.PubSub;

/// <summary>Publishes messages to topics; every matching subscription receives a copy.</summary>
/// <remarks>
/// Publishing to a topic nobody subscribes to is a no-op, counted in <c>patterns.messages.unrouted</c>.
/// When a subscription's buffer is full the publish waits for space (back-pressure) unless the
/// subscription rejects, in which case it throws <see cref="Transport.QueueFullException"/>.
/// </remarks>
public interface IPublisher
{
    /// <summary>Publishes a message to the topic named after its type (see <see cref="MessageTypeRegistry"/>).</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="message">The message.</param>
    /// <param name="cancellationToken">Cancels waiting for buffer space.</param>
    /// <returns>A task that completes when every subscription's transport has accepted the message.</returns>
    ValueTask PublishAsync<TMessage>(TMessage message, CancellationToken cancellationToken = default)
        where TMessage : notnull;

    /// <summary>Publishes a message to a topic.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="topic">The topic: dot-separated segments, no wildcards.</param>
    /// <param name="message">The message.</param>
    /// <param name="cancellationToken">Cancels waiting for buffer space.</param>
    /// <returns>A task that completes when every subscription's transport has accepted the message.</returns>
    ValueTask PublishAsync<TMessage>(string topic, TMessage message, CancellationToken cancellationToken = default)
        where TMessage : notnull;

    /// <summary>Publishes a message to a topic with per-message options.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="topic">The topic; the message type's name when <see langword="null"/>.</param>
    /// <param name="message">The message.</param>
    /// <param name="options">Partition key, correlation and headers.</param>
    /// <param name="cancellationToken">Cancels waiting for buffer space.</param>
    /// <returns>A task that completes when every subscription's transport has accepted the message.</returns>
    ValueTask PublishAsync<TMessage>(string? topic, TMessage message, MessageOptions options, CancellationToken cancellationToken = default)
        where TMessage : notnull;
}
