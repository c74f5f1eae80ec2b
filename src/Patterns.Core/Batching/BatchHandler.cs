namespace Patterns.Batching;

/// <summary>Handles one batch. Mark single items failed with <see cref="Batch{T}.Fail(int, Exception)"/>; throwing fails the whole batch.</summary>
/// <typeparam name="T">The item type.</typeparam>
/// <param name="batch">The batch; valid until the returned task completes.</param>
/// <param name="cancellationToken">Cancelled when the batcher stops and its drain deadline has passed, or an attempt timeout fires.</param>
/// <returns>A task that completes when the batch is handled.</returns>
public delegate ValueTask BatchHandler<T>(Batch<T> batch, CancellationToken cancellationToken);

/// <summary>Handles batches of messages consumed from a queue or a subscription.</summary>
/// <typeparam name="TMessage">The message type.</typeparam>
/// <remarks>
/// Registered by type, a handler is resolved from a new DI scope for each batch, unless it is registered as a
/// singleton. Each message is settled by its item's outcome: acknowledged when handled, retried and then
/// dead-lettered when marked failed (or when the handler throws).
/// </remarks>
public interface IBatchHandler<TMessage>
{
    /// <summary>Handles one batch.</summary>
    /// <param name="batch">The messages and their envelopes; valid until this method's task completes.</param>
    /// <param name="cancellationToken">Cancelled when the consumer stops and its drain deadline has passed, or an attempt timeout fires.</param>
    /// <returns>A task that completes when the batch is handled.</returns>
    ValueTask HandleAsync(Batch<TMessage> batch, CancellationToken cancellationToken);
}
