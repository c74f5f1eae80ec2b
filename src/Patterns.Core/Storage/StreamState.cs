namespace Patterns.Storage;

/// <summary>What a store knows about one stream.</summary>
/// <param name="StreamId">The stream.</param>
/// <param name="Version">The version of the stream's last event; 0 when it has none.</param>
/// <param name="IsDeleted">Whether the stream was deleted.</param>
/// <param name="TruncatedBefore">Events with a version below this are no longer read; 0 when the stream was never truncated.</param>
public readonly record struct StreamState(string StreamId, long Version, bool IsDeleted, long TruncatedBefore)
{
    /// <summary>Gets whether the stream has ever had an event and is not deleted.</summary>
    public bool Exists => Version > 0 && !IsDeleted;
}

/// <summary>The direction in which a stream is read.</summary>
public enum ReadDirection
{
    /// <summary>From lower versions to higher ones.</summary>
    Forward,

    /// <summary>From higher versions to lower ones.</summary>
    Backward,
}

/// <summary>How a stream is deleted.</summary>
public enum StreamDeleteMode
{
    /// <summary>
    /// The stream is marked deleted: its events are no longer read from the stream and appending to it fails,
    /// but they stay in the global log so that subscribers and projections still see history.
    /// </summary>
    Soft,

    /// <summary>
    /// The stream's events are removed from storage, where the store supports it (see
    /// <see cref="EventStorageCapabilities.HardDelete"/>); its id can never be used again.
    /// </summary>
    Hard,
}

/// <summary>What an <see cref="IEventStorage"/> implementation supports beyond the required contract.</summary>
[Flags]
public enum EventStorageCapabilities
{
    /// <summary>Only the required contract.</summary>
    None = 0,

    /// <summary><see cref="StreamDeleteMode.Hard"/> physically removes events.</summary>
    HardDelete = 1,

    /// <summary>Inline projections run in the same transaction as the append.</summary>
    TransactionalProjections = 2,

    /// <summary>Data survives the process (a durable store).</summary>
    Durable = 4,
}
