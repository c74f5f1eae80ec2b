using Patterns.Storage;

namespace Patterns.EventSourcing;

/// <summary>
/// The event store: typed events appended to streams with expected-version concurrency, read back
/// deserialized and upcast, with one global ordered log. Resolve it from the container after
/// <c>AddEventSourcing</c>.
/// </summary>
/// <remarks>
/// Every append stamps its events with the host's <see cref="TimeProvider"/> and runs the registered inline
/// projections inside the append (in the same transaction where the store supports it). Reads page through
/// the store, so a very long stream is read in constant memory. Thread-safe.
/// </remarks>
public interface IEventStore
{
    /// <summary>Gets the storage under this store, for its capabilities and for tools that work on serialized events.</summary>
    IEventStorage Storage { get; }

    /// <summary>Appends events to a stream atomically.</summary>
    /// <param name="streamId">The stream; created by its first append.</param>
    /// <param name="expectedVersion">The version the stream must be at: <see cref="ExpectedVersion.Any"/>, <see cref="ExpectedVersion.NoStream"/>, <see cref="ExpectedVersion.StreamExists"/> or <see cref="ExpectedVersion.Exact"/>.</param>
    /// <param name="events">The events, in order; at least one.</param>
    /// <param name="cancellationToken">Cancels the append before it commits.</param>
    /// <returns>The stream's new version and the global positions given to the events.</returns>
    /// <exception cref="WrongExpectedVersionException">The stream is not at <paramref name="expectedVersion"/>.</exception>
    /// <exception cref="StreamDeletedException">The stream was deleted.</exception>
    /// <exception cref="DuplicateEventException">An event id is already in the stream and this is not an exact retry.</exception>
    /// <exception cref="ArgumentException"><paramref name="streamId"/> or <paramref name="events"/> is empty.</exception>
    ValueTask<AppendResult> AppendAsync(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<EventData> events, CancellationToken cancellationToken = default);

    /// <summary>Reads a stream's events, deserialized and upcast.</summary>
    /// <param name="streamId">The stream; a stream that does not exist reads as empty.</param>
    /// <param name="direction">Forward (ascending versions) or backward.</param>
    /// <param name="fromVersion">The first version to return; null starts at the first event (forward) or the last (backward).</param>
    /// <param name="maxCount">The most events to return.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The events.</returns>
    /// <exception cref="StreamDeletedException">The stream was deleted.</exception>
    /// <exception cref="UnknownEventTypeException">An event's type is not registered.</exception>
    IAsyncEnumerable<RecordedEvent> ReadStreamAsync(
        string streamId,
        ReadDirection direction = ReadDirection.Forward,
        long? fromVersion = null,
        long maxCount = long.MaxValue,
        CancellationToken cancellationToken = default);

    /// <summary>Reads the global log after a position, in position order, deserialized and upcast.</summary>
    /// <param name="afterPosition">Returns events with a higher position; 0 reads from the start.</param>
    /// <param name="filter">Selects events by stored type name or stream prefix; <see cref="CreateFilter"/> builds one from event types.</param>
    /// <param name="maxCount">The most events to return.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The events.</returns>
    /// <exception cref="UnknownEventTypeException">An event's type is not registered.</exception>
    IAsyncEnumerable<RecordedEvent> ReadAllAsync(
        long afterPosition = 0,
        EventFilter? filter = null,
        long maxCount = long.MaxValue,
        CancellationToken cancellationToken = default);

    /// <summary>Gets a stream's version and deletion state.</summary>
    /// <param name="streamId">The stream.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The state; a stream that never existed is at version 0.</returns>
    ValueTask<StreamState> GetStreamStateAsync(string streamId, CancellationToken cancellationToken = default);

    /// <summary>Gets the highest global position readable without a gap below it (0 for an empty log).</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The head position.</returns>
    ValueTask<long> GetHeadPositionAsync(CancellationToken cancellationToken = default);

    /// <summary>Deletes a stream (see <see cref="StreamDeleteMode"/>).</summary>
    /// <param name="streamId">The stream.</param>
    /// <param name="expectedVersion">The version the stream must be at.</param>
    /// <param name="mode">Soft (the default) keeps the events in the global log; hard removes them where the store supports it.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the deletion is durable.</returns>
    /// <exception cref="WrongExpectedVersionException">The stream is not at <paramref name="expectedVersion"/>.</exception>
    ValueTask DeleteStreamAsync(string streamId, ExpectedVersion expectedVersion, StreamDeleteMode mode = StreamDeleteMode.Soft, CancellationToken cancellationToken = default);

    /// <summary>Hides a stream's events below a version from stream reads; they stay in the global log.</summary>
    /// <param name="streamId">The stream.</param>
    /// <param name="beforeVersion">Events with a lower version are no longer read from the stream.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the truncation is durable.</returns>
    ValueTask TruncateStreamAsync(string streamId, long beforeVersion, CancellationToken cancellationToken = default);

    /// <summary>Gets the registered type name of an event type.</summary>
    /// <param name="eventType">The event's CLR type.</param>
    /// <returns>The name it is stored under.</returns>
    string GetEventTypeName(Type eventType);

    /// <summary>
    /// Builds a log filter that selects events of the given types, including events stored under older type
    /// names that upcast to them.
    /// </summary>
    /// <param name="eventTypes">The event types (or base types and interfaces) to select; empty selects every type.</param>
    /// <param name="streamPrefix">The stream-id prefix to select; null selects every stream.</param>
    /// <returns>The filter.</returns>
    EventFilter CreateFilter(IEnumerable<Type> eventTypes, string? streamPrefix = null);
}

/// <summary>Conveniences over <see cref="IEventStore"/>.</summary>
public static class EventStoreExtensions
{
    /// <summary>Appends one event (an <see cref="EventData"/> keeps its metadata; any other object is wrapped in a new one).</summary>
    /// <param name="store">The store.</param>
    /// <param name="streamId">The stream.</param>
    /// <param name="expectedVersion">The version the stream must be at.</param>
    /// <param name="event">The event.</param>
    /// <param name="cancellationToken">Cancels the append before it commits.</param>
    /// <returns>The stream's new version and the event's position.</returns>
    public static ValueTask<AppendResult> AppendAsync(this IEventStore store, string streamId, ExpectedVersion expectedVersion, object @event, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(@event);
        return store.AppendAsync(streamId, expectedVersion, [ToEventData(@event)], cancellationToken);
    }

    /// <summary>Appends events (each <see cref="EventData"/> keeps its metadata; any other object is wrapped in a new one).</summary>
    /// <param name="store">The store.</param>
    /// <param name="streamId">The stream.</param>
    /// <param name="expectedVersion">The version the stream must be at.</param>
    /// <param name="events">The events, in order.</param>
    /// <param name="cancellationToken">Cancels the append before it commits.</param>
    /// <returns>The stream's new version and the events' positions.</returns>
    public static ValueTask<AppendResult> AppendAsync(this IEventStore store, string streamId, ExpectedVersion expectedVersion, IEnumerable<object> events, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(events);
        return store.AppendAsync(streamId, expectedVersion, events.Select(ToEventData).ToArray(), cancellationToken);
    }

    /// <summary>Builds a log filter that selects events of the given types (and older type names that upcast to them).</summary>
    /// <param name="store">The store.</param>
    /// <param name="eventTypes">The event types.</param>
    /// <returns>The filter.</returns>
    public static EventFilter CreateFilter(this IEventStore store, params Type[] eventTypes)
    {
        ArgumentNullException.ThrowIfNull(store);
        return store.CreateFilter(eventTypes, null);
    }

    internal static EventData ToEventData(object @event) => @event as EventData ?? new EventData(@event);
}
