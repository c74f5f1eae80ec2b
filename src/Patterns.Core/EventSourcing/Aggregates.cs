using System.ComponentModel.DataAnnotations;
using Patterns.Storage;

namespace Patterns.EventSourcing;

/// <summary>
/// A mutable aggregate that rebuilds its state by applying its events in order. Register it with
/// <see cref="EventSourcingBuilder.AddAggregate{TAggregate}(Action{AggregateOptions})"/> and load, decide and save
/// through <see cref="IAggregateRepository{TState}"/>.
/// </summary>
/// <remarks>
/// <see cref="Apply"/> is called for every stored event and for every new event after it is appended; it
/// must not throw and must not decide anything (a <c>switch</c> over the event types is the usual shape).
/// Nothing is discovered by reflection, so aggregates work trimmed and with Native AOT. For snapshots, the
/// aggregate must round-trip through the configured serializer (public settable properties, or a
/// <c>JsonSerializerContext</c> that knows it).
/// </remarks>
public interface IAggregate
{
    /// <summary>Changes the state to reflect one event.</summary>
    /// <param name="event">The event (after upcasting).</param>
    void Apply(object @event);
}

/// <summary>Options of one aggregate type.</summary>
public sealed class AggregateOptions
{
    /// <summary>Gets or sets the prefix that turns an aggregate id into its stream id (<c>{prefix}{id}</c>).</summary>
    /// <value>Default <c>{name}-</c>, where the name is the state type's <c>[MessageName]</c> or its CLR name.</value>
    public string? StreamPrefix { get; set; }

    /// <summary>Gets or sets after how many events a snapshot is saved; 0 never saves one.</summary>
    /// <value>Default 0.</value>
    [Range(0, int.MaxValue)]
    public int SnapshotEvery { get; set; }

    /// <summary>
    /// Gets or sets the version of the snapshot's shape. Change it when the state type changes shape: snapshots
    /// with another schema version are ignored (the state is rebuilt from the events) and replaced.
    /// </summary>
    /// <value>Default 1.</value>
    [Range(0, int.MaxValue)]
    public int SnapshotSchemaVersion { get; set; } = 1;

    /// <summary>Gets or sets how many times <see cref="IAggregateRepository{TState}.ExecuteAsync"/> reloads and decides again after a concurrent append wins.</summary>
    /// <value>Default 3.</value>
    [Range(0, 1000)]
    public int ConflictRetries { get; set; } = 3;
}

/// <summary>An aggregate's state as loaded from its stream, with the version it was loaded at.</summary>
/// <typeparam name="TState">The state type.</typeparam>
public sealed class LoadedAggregate<TState>
    where TState : class
{
    internal LoadedAggregate(string id, string streamId, TState state, long version, long? snapshotVersion)
    {
        Id = id;
        StreamId = streamId;
        State = state;
        Version = version;
        SnapshotVersion = snapshotVersion;
    }

    /// <summary>Gets the aggregate's id.</summary>
    public string Id { get; }

    /// <summary>Gets the stream the aggregate's events are in.</summary>
    public string StreamId { get; }

    /// <summary>Gets the state (for an <see cref="IAggregate"/>, the instance that later saves keep applying events to).</summary>
    public TState State { get; }

    /// <summary>Gets the stream version the state reflects; 0 when the aggregate has no events.</summary>
    public long Version { get; }

    /// <summary>Gets whether the aggregate has any events.</summary>
    public bool Exists => Version > 0;

    /// <summary>Gets the version of the snapshot the load started from, or null when it replayed the stream from the start.</summary>
    public long? SnapshotVersion { get; }
}

/// <summary>Loads aggregates from their streams (through snapshots when configured), and appends their new events with optimistic concurrency.</summary>
/// <typeparam name="TState">The aggregate's state type.</typeparam>
public interface IAggregateRepository<TState>
    where TState : class
{
    /// <summary>Gets the stream id of an aggregate id.</summary>
    /// <param name="id">The aggregate id.</param>
    /// <returns>The stream id.</returns>
    string GetStreamId(string id);

    /// <summary>Loads an aggregate's current state: from its latest usable snapshot, then the events after it.</summary>
    /// <param name="id">The aggregate id.</param>
    /// <param name="cancellationToken">Cancels the load.</param>
    /// <returns>The state and version; version 0 and the initial state when it has no events.</returns>
    /// <exception cref="StreamDeletedException">The aggregate's stream was deleted.</exception>
    /// <exception cref="InvalidOperationException">The stream is truncated past the events the load needs (no usable snapshot covers them).</exception>
    ValueTask<LoadedAggregate<TState>> LoadAsync(string id, CancellationToken cancellationToken = default);

    /// <summary>Loads an aggregate's state as of a version (events up to and including it).</summary>
    /// <param name="id">The aggregate id.</param>
    /// <param name="version">The last version to apply.</param>
    /// <param name="cancellationToken">Cancels the load.</param>
    /// <returns>The state and the version it reflects.</returns>
    /// <exception cref="StreamDeletedException">The aggregate's stream was deleted.</exception>
    /// <exception cref="InvalidOperationException">The stream is truncated past the events the load needs (no usable snapshot covers them).</exception>
    ValueTask<LoadedAggregate<TState>> LoadAsync(string id, long version, CancellationToken cancellationToken = default);

    /// <summary>Loads an aggregate's state as of a point in time (events appended at or before it), replaying from the first event.</summary>
    /// <param name="id">The aggregate id.</param>
    /// <param name="pointInTime">The last event timestamp to apply.</param>
    /// <param name="cancellationToken">Cancels the load.</param>
    /// <returns>The state and the version it reflects.</returns>
    /// <exception cref="StreamDeletedException">The aggregate's stream was deleted.</exception>
    /// <exception cref="InvalidOperationException">The stream is truncated (a point-in-time load needs every event from the first).</exception>
    ValueTask<LoadedAggregate<TState>> LoadAsOfAsync(string id, DateTimeOffset pointInTime, CancellationToken cancellationToken = default);

    /// <summary>
    /// Appends new events expecting the stream to be at the loaded version, applies them to the state, and saves a
    /// snapshot when a <see cref="AggregateOptions.SnapshotEvery"/> boundary is crossed.
    /// </summary>
    /// <param name="aggregate">The aggregate as loaded.</param>
    /// <param name="events">The new events (an <see cref="EventData"/> keeps its metadata).</param>
    /// <param name="cancellationToken">Cancels the append before it commits.</param>
    /// <returns>The aggregate after the append.</returns>
    /// <exception cref="WrongExpectedVersionException">Another append reached the stream first.</exception>
    ValueTask<LoadedAggregate<TState>> SaveAsync(LoadedAggregate<TState> aggregate, IEnumerable<object> events, CancellationToken cancellationToken = default);

    /// <summary>
    /// Loads the aggregate, asks <paramref name="decide"/> for the events a command produces, and appends them
    /// with the loaded version. When another append wins the race, it reloads and decides again, up to
    /// <see cref="AggregateOptions.ConflictRetries"/> times.
    /// </summary>
    /// <param name="id">The aggregate id.</param>
    /// <param name="decide">Returns the new events for the current state (none to append nothing); throws to reject the command.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The aggregate after the append.</returns>
    /// <exception cref="WrongExpectedVersionException">Concurrent appends won more than <see cref="AggregateOptions.ConflictRetries"/> times.</exception>
    ValueTask<LoadedAggregate<TState>> ExecuteAsync(string id, Func<TState, IEnumerable<object>> decide, CancellationToken cancellationToken = default);
}
