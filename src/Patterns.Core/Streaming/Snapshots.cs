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
/// <param name="Operators">
/// Each stateful stage's state by stage name: the operator's <c>name:</c> argument or, without one, its kind and position
/// (for example <c>totals</c>, or <c>Tumbling@3</c>), with <c>#p1</c> appended in partition 1. Window stages keep a
/// <see cref="WindowOperatorState{TKey, TAccumulate}"/>. A pipeline restores only a snapshot whose stateful stages are
/// exactly its own, by name and kind; otherwise its run fails with <see cref="StreamSnapshotMismatchException"/>.
/// </param>
public sealed record StreamSnapshot(string Pipeline, DateTimeOffset TakenAt, IReadOnlyDictionary<string, object> Operators);

/// <summary>The state of one window stage: its kind, its watermark and the accumulator of every key in every open window.</summary>
/// <typeparam name="TKey">The key type.</typeparam>
/// <typeparam name="TAccumulate">The accumulator type (the count, sum, minimum, maximum or user fold).</typeparam>
/// <param name="Kind">The kind of window that saved it: <c>Tumbling</c>, <c>Hopping</c> or <c>Session</c>; only a window of the same kind restores it.</param>
/// <param name="Watermark">The watermark, or <see langword="null"/> before the first element.</param>
/// <param name="Windows">The open windows, one entry per key and window.</param>
public sealed record WindowOperatorState<TKey, TAccumulate>(string Kind, DateTimeOffset? Watermark, IReadOnlyList<WindowState<TKey, TAccumulate>> Windows)
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

/// <summary>
/// A pipeline cannot resume from its snapshot: the snapshot's stateful stages do not match the pipeline's, by name or
/// by kind. The snapshot is left as it is; restore the pipeline that saved it, or delete the snapshot to start empty.
/// </summary>
public sealed class StreamSnapshotMismatchException : InvalidOperationException
{
    /// <summary>Initializes a new instance of the <see cref="StreamSnapshotMismatchException"/> class.</summary>
    public StreamSnapshotMismatchException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="StreamSnapshotMismatchException"/> class.</summary>
    /// <param name="message">What does not match.</param>
    public StreamSnapshotMismatchException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="StreamSnapshotMismatchException"/> class.</summary>
    /// <param name="message">What does not match.</param>
    /// <param name="innerException">The cause.</param>
    public StreamSnapshotMismatchException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="StreamSnapshotMismatchException"/> class.</summary>
    /// <param name="pipeline">The pipeline's name.</param>
    /// <param name="stage">The stage that does not match (with its partition, for example <c>totals#p1</c>).</param>
    /// <param name="message">What does not match.</param>
    public StreamSnapshotMismatchException(string pipeline, string stage, string message)
        : base(message)
    {
        Pipeline = pipeline;
        Stage = stage;
    }

    /// <summary>Gets the pipeline's name.</summary>
    public string? Pipeline { get; }

    /// <summary>Gets the first stage that does not match.</summary>
    public string? Stage { get; }
}
