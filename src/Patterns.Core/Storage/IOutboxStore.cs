namespace Patterns.Storage;

/// <summary>Whether an outbox message is published to a topic or sent to a queue.</summary>
public enum OutboxMessageKind
{
    /// <summary>Published to a topic (pub/sub).</summary>
    Publish = 0,

    /// <summary>Sent to a queue (point to point).</summary>
    Send = 1,
}

/// <summary>An outgoing message stored by a <see cref="UnitOfWork"/>.</summary>
/// <param name="Destination">The topic or queue.</param>
/// <param name="Kind">Publish or send.</param>
/// <param name="Payload">The encoded message (envelope and body); the store keeps it as opaque bytes.</param>
public sealed record OutboxMessage(string Destination, OutboxMessageKind Kind, ReadOnlyMemory<byte> Payload)
{
    /// <summary>Gets the partition key; messages with the same key are handed to the transport in commit order.</summary>
    /// <value>Null by default.</value>
    public string? PartitionKey { get; init; }
}

/// <summary>An outbox message as stored, with its sequence number.</summary>
/// <param name="Sequence">The store's sequence number: increasing in commit order, unique, never reused.</param>
/// <param name="Message">The message.</param>
/// <param name="EnqueuedAt">When the unit of work that stored it committed.</param>
public sealed record StoredOutboxMessage(long Sequence, OutboxMessage Message, DateTimeOffset EnqueuedAt);

/// <summary>The outbox side of a store: what a relay reads and removes.</summary>
public interface IOutboxStore
{
    /// <summary>Reads committed outbox messages in sequence order.</summary>
    /// <param name="afterSequence">Reads messages with a greater sequence number.</param>
    /// <param name="maxCount">The most messages to read.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The messages, in sequence order; none when the outbox holds nothing after <paramref name="afterSequence"/>.</returns>
    ValueTask<IReadOnlyList<StoredOutboxMessage>> ReadOutboxAsync(long afterSequence, int maxCount, CancellationToken cancellationToken = default);

    /// <summary>Removes messages that were handed to the transport.</summary>
    /// <param name="throughSequence">Removes every message with this sequence number or a smaller one.</param>
    /// <param name="fence">When set, the removal happens only while this lease is held (else <see cref="LeaseLostException"/>).</param>
    /// <param name="cancellationToken">Cancels the removal.</param>
    /// <returns>How many messages were removed.</returns>
    ValueTask<long> DeleteOutboxAsync(long throughSequence, Lease? fence = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Removes messages that were handed to the transport after an earlier removal: those with a sequence number above
    /// <paramref name="afterSequence"/>, through <paramref name="throughSequence"/>. A relay calls this with the end of its
    /// previous removal, so a store need not pass over the messages removed before (on PostgreSQL a removed row stays in
    /// the table's index until vacuum, and a removal from the start walks every one of them). Messages at or below
    /// <paramref name="afterSequence"/> may be removed too; by default this is <see cref="DeleteOutboxAsync(long, Lease?, CancellationToken)"/>.
    /// </summary>
    /// <param name="afterSequence">The end of the previous removal; 0 when there was none.</param>
    /// <param name="throughSequence">Removes every message with this sequence number or a smaller one.</param>
    /// <param name="fence">When set, the removal happens only while this lease is held (else <see cref="LeaseLostException"/>).</param>
    /// <param name="cancellationToken">Cancels the removal.</param>
    /// <returns>How many messages were removed.</returns>
    ValueTask<long> DeleteOutboxRangeAsync(long afterSequence, long throughSequence, Lease? fence = null, CancellationToken cancellationToken = default) =>
        DeleteOutboxAsync(throughSequence, fence, cancellationToken);

    /// <summary>Completes when a message with a sequence number above <paramref name="afterSequence"/> may have been committed.</summary>
    /// <param name="afterSequence">The last sequence number the caller has seen.</param>
    /// <param name="cancellationToken">Ends the wait.</param>
    /// <returns>A task that completes on a commit (or at the store's poll interval, for commits made by other processes).</returns>
    ValueTask WaitForOutboxAsync(long afterSequence, CancellationToken cancellationToken);
}
