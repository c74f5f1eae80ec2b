using Patterns.Transport;

namespace Patterns.Queues;

/// <summary>Reads, replays and purges the dead-letter queue of a queue or a pub/sub subscription.</summary>
/// <remarks>A subscription's dead letters are addressed by its consumer group.</remarks>
public interface IDeadLetterQueue
{
    /// <summary>Reads dead letters without removing them, oldest first.</summary>
    /// <param name="queue">The queue name or subscription consumer group.</param>
    /// <param name="maxCount">The most to return.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The dead letters, each with its reason and exception.</returns>
    ValueTask<IReadOnlyList<DeadLetterMessage>> PeekAsync(string queue, int maxCount = 100, CancellationToken cancellationToken = default);

    /// <summary>Moves dead letters back to their queue for another try, oldest first.</summary>
    /// <param name="queue">The queue name or subscription consumer group.</param>
    /// <param name="maxCount">The most to move.</param>
    /// <param name="cancellationToken">Cancels the replay.</param>
    /// <returns>How many were moved.</returns>
    ValueTask<int> ReplayAsync(string queue, int maxCount = int.MaxValue, CancellationToken cancellationToken = default);

    /// <summary>Deletes every dead letter of a queue.</summary>
    /// <param name="queue">The queue name or subscription consumer group.</param>
    /// <param name="cancellationToken">Cancels the purge.</param>
    /// <returns>How many were deleted.</returns>
    ValueTask<int> PurgeAsync(string queue, CancellationToken cancellationToken = default);
}
