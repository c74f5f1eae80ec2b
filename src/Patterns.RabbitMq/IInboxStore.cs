namespace Patterns.RabbitMq;

/// <summary>
/// Remembers which messages each consumer group has handled, so a message the broker delivers again (after a
/// crash between handling and acknowledging, or a duplicate publish) is acknowledged without being handled twice.
/// </summary>
/// <remarks>
/// Register an implementation in the container to make de-duplication survive restarts and span processes (a
/// store-backed inbox); without one the transport keeps a bounded in-memory set per process. Implementations
/// must be thread-safe.
/// </remarks>
public interface IInboxStore
{
    /// <summary>Gets a value indicating whether <paramref name="consumerGroup"/> has handled message <paramref name="messageId"/>.</summary>
    /// <param name="consumerGroup">The consumer group.</param>
    /// <param name="messageId">The message id.</param>
    /// <param name="cancellationToken">Cancels the look-up.</param>
    /// <returns><see langword="true"/> when the message was handled before.</returns>
    ValueTask<bool> HasHandledAsync(string consumerGroup, Guid messageId, CancellationToken cancellationToken = default);

    /// <summary>Records that <paramref name="consumerGroup"/> has handled message <paramref name="messageId"/>. Called before the message is acknowledged.</summary>
    /// <param name="consumerGroup">The consumer group.</param>
    /// <param name="messageId">The message id.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>A task that completes when the record is stored.</returns>
    ValueTask MarkHandledAsync(string consumerGroup, Guid messageId, CancellationToken cancellationToken = default);
}
