namespace Patterns.Storage;

/// <summary>Durable checkpoints: the last global position a named subscription or projection has handled.</summary>
public interface ICheckpointStore
{
    /// <summary>Gets a checkpoint, or null when the subscription has none yet.</summary>
    /// <param name="name">The subscription's or projection's name.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The last handled position, or null.</returns>
    ValueTask<long?> LoadAsync(string name, CancellationToken cancellationToken = default);

    /// <summary>Stores a checkpoint.</summary>
    /// <param name="name">The subscription's or projection's name.</param>
    /// <param name="position">The last handled position; 0 resets the subscription to the start of the log.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the checkpoint is durable.</returns>
    ValueTask SaveAsync(string name, long position, CancellationToken cancellationToken = default);
}
