using System.Collections.Concurrent;

namespace Patterns.Streaming;

/// <summary>
/// Where a stream pipeline keeps its operator state (open windows and the watermark) between runs: saved when the
/// pipeline stops, loaded when it starts, deleted when its input is exhausted. Durable implementations come with the stores.
/// </summary>
public interface IStreamSnapshotStore
{
    /// <summary>Loads the last snapshot of a pipeline.</summary>
    /// <param name="pipeline">The pipeline's name.</param>
    /// <param name="cancellationToken">Cancels the load.</param>
    /// <returns>The snapshot, or <see langword="null"/> when there is none.</returns>
    ValueTask<StreamSnapshot?> LoadAsync(string pipeline, CancellationToken cancellationToken = default);

    /// <summary>Saves a pipeline's snapshot, replacing the previous one.</summary>
    /// <param name="snapshot">The snapshot.</param>
    /// <param name="cancellationToken">Cancels the save.</param>
    /// <returns>A task that completes when the snapshot is saved.</returns>
    ValueTask SaveAsync(StreamSnapshot snapshot, CancellationToken cancellationToken = default);

    /// <summary>Deletes a pipeline's snapshot.</summary>
    /// <param name="pipeline">The pipeline's name.</param>
    /// <param name="cancellationToken">Cancels the delete.</param>
    /// <returns>A task that completes when the snapshot is gone.</returns>
    ValueTask DeleteAsync(string pipeline, CancellationToken cancellationToken = default);
}

/// <summary>The state of a stopped pipeline's operators.</summary>
/// <param name="Pipeline">The pipeline's name.</param>
/// <param name="TakenAt">When it was taken, from the pipeline's <see cref="TimeProvider"/>.</param>
/// <param name="Operators">Each stateful stage's state by stage id (for example <c>Tumbling@3</c> or <c>Tumbling@3#p1</c> in partition 1); window stages keep a <see cref="WindowOperatorState{TKey, TAccumulate}"/>.</param>
public sealed record StreamSnapshot(string Pipeline, DateTimeOffset TakenAt, IReadOnlyDictionary<string, object> Operators);

/// <summary>The state of one window stage: its watermark and the accumulator of every key in every open window.</summary>
/// <typeparam name="TKey">The key type.</typeparam>
/// <typeparam name="TAccumulate">The accumulator type (the count, sum, minimum, maximum or user fold).</typeparam>
/// <param name="Watermark">The watermark, or <see langword="null"/> before the first element.</param>
/// <param name="Windows">The open windows, one entry per key and window.</param>
public sealed record WindowOperatorState<TKey, TAccumulate>(DateTimeOffset? Watermark, IReadOnlyList<WindowState<TKey, TAccumulate>> Windows)
    where TKey : notnull;

/// <summary>One key's accumulator in one open window.</summary>
/// <typeparam name="TKey">The key type.</typeparam>
/// <typeparam name="TAccumulate">The accumulator type.</typeparam>
/// <param name="Key">The key.</param>
/// <param name="Start">The window's start.</param>
/// <param name="End">The window's end.</param>
/// <param name="Accumulator">The accumulator.</param>
/// <param name="Fired">Whether the window has fired and is kept only for late elements.</param>
public sealed record WindowState<TKey, TAccumulate>(TKey Key, DateTimeOffset Start, DateTimeOffset End, TAccumulate Accumulator, bool Fired)
    where TKey : notnull;

/// <summary>Keeps snapshots in memory: a pipeline restarted in the same process resumes where it stopped. Thread-safe.</summary>
public sealed class InMemoryStreamSnapshotStore : IStreamSnapshotStore
{
    private readonly ConcurrentDictionary<string, StreamSnapshot> _snapshots = new(StringComparer.Ordinal);

    /// <inheritdoc />
    public ValueTask<StreamSnapshot?> LoadAsync(string pipeline, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        return new(_snapshots.TryGetValue(pipeline, out var snapshot) ? snapshot : null);
    }

    /// <inheritdoc />
    public ValueTask SaveAsync(StreamSnapshot snapshot, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        _snapshots[snapshot.Pipeline] = snapshot;
        return default;
    }

    /// <inheritdoc />
    public ValueTask DeleteAsync(string pipeline, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        _snapshots.TryRemove(pipeline, out _);
        return default;
    }
}
