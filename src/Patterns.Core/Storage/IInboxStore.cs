namespace Patterns.Storage;

/// <summary>
/// Remembers which message ids a consumer has handled, so a redelivered message can be skipped
/// (effectively-once handling on an at-least-once transport).
/// </summary>
public interface IInboxStore
{
    /// <summary>Gets whether a consumer has already handled a message.</summary>
    /// <param name="consumer">The consumer (for example the queue or subscription name).</param>
    /// <param name="messageId">The message id.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>Whether the message was marked handled.</returns>
    ValueTask<bool> ContainsAsync(string consumer, string messageId, CancellationToken cancellationToken = default);

    /// <summary>
    /// Gets which of several messages a consumer has already handled. A consumer that checks a group of messages at once
    /// (an ETL load checks the messages that arrived together) reads them with one call; a store over a network reads
    /// them in one round trip (the default asks <see cref="ContainsAsync"/> for each).
    /// </summary>
    /// <param name="consumer">The consumer.</param>
    /// <param name="messageIds">The message ids.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The ids among <paramref name="messageIds"/> marked handled by <paramref name="consumer"/>.</returns>
    async ValueTask<IReadOnlySet<string>> ContainsManyAsync(string consumer, IReadOnlyCollection<string> messageIds, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(consumer);
        ArgumentNullException.ThrowIfNull(messageIds);
        var found = new HashSet<string>(StringComparer.Ordinal);
        foreach (var id in messageIds)
        {
            if (await ContainsAsync(consumer, id, cancellationToken).ConfigureAwait(false))
            {
                found.Add(id);
            }
        }

        return found;
    }

    /// <summary>Marks a message handled by a consumer.</summary>
    /// <param name="consumer">The consumer.</param>
    /// <param name="messageId">The message id.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>False when it was already marked (another delivery won the race); true otherwise.</returns>
    ValueTask<bool> TryMarkHandledAsync(string consumer, string messageId, CancellationToken cancellationToken = default);

    /// <summary>Forgets entries marked before a point in time, to bound the store's size.</summary>
    /// <param name="olderThan">Entries marked before this are removed.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>How many entries were removed.</returns>
    ValueTask<long> PruneAsync(DateTimeOffset olderThan, CancellationToken cancellationToken = default);
}
