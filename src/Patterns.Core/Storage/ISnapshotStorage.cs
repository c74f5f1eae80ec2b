namespace Patterns.Storage;

/// <summary>A serialized aggregate snapshot, stored beside its stream.</summary>
/// <param name="StreamId">The stream the snapshot summarizes.</param>
/// <param name="Version">The stream version the snapshot reflects.</param>
/// <param name="SnapshotType">The snapshot's type name.</param>
/// <param name="SchemaVersion">The aggregate's snapshot schema version; a snapshot with another schema version is ignored.</param>
/// <param name="Data">The serialized state.</param>
/// <param name="Timestamp">When the snapshot was taken.</param>
public sealed record StoredSnapshot(string StreamId, long Version, string SnapshotType, int SchemaVersion, ReadOnlyMemory<byte> Data, DateTimeOffset Timestamp);

/// <summary>Stores the latest snapshot of each stream.</summary>
public interface ISnapshotStorage
{
    /// <summary>Gets the latest snapshot of a stream, or null.</summary>
    /// <param name="streamId">The stream.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The snapshot, or null when none was saved.</returns>
    ValueTask<StoredSnapshot?> LoadAsync(string streamId, CancellationToken cancellationToken = default);

    /// <summary>Saves a snapshot, replacing an older one of the same stream (a snapshot older than the stored one is ignored).</summary>
    /// <param name="snapshot">The snapshot.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the snapshot is stored.</returns>
    ValueTask SaveAsync(StoredSnapshot snapshot, CancellationToken cancellationToken = default);
}
