namespace Patterns.Storage;

/// <summary>
/// Runs inline projections inside an append: it receives the events just appended and writes read models
/// through <paramref name="documents"/>. Where the storage reports
/// <see cref="EventStorageCapabilities.TransactionalProjections"/>, the writes commit in the same transaction as
/// the events, and an exception thrown here fails the append (nothing is stored).
/// </summary>
/// <param name="appended">The events appended by this call, with their versions and positions.</param>
/// <param name="documents">Reads and writes documents inside the append's transaction.</param>
/// <param name="cancellationToken">Cancels the append.</param>
/// <returns>A task that completes when the projection has written its documents.</returns>
public delegate ValueTask InlineProjection(IReadOnlyList<StoredEvent> appended, IDocumentWriter documents, CancellationToken cancellationToken);

/// <summary>
/// The event store SPI: append-only streams with expected-version concurrency and one global ordered log.
/// Implementations work on serialized events; type names, serialization and upcasting live above them in the
/// event store facade. Every implementation passes the event store conformance suite in tests/.
/// </summary>
/// <remarks>
/// <para>Guarantees every implementation gives:</para>
/// <list type="bullet">
/// <item>An append is atomic: all of its events are stored, with consecutive versions, or none is.</item>
/// <item>An append whose <see cref="ExpectedVersion"/> does not hold throws <see cref="WrongExpectedVersionException"/>
/// carrying the stream, the expected and the actual version.</item>
/// <item>Re-appending the same event ids at the same place (a retried call) stores nothing and returns the
/// original <see cref="AppendResult"/>; reusing stored ids any other way throws <see cref="DuplicateEventException"/>.</item>
/// <item>Every event gets a global position; <see cref="ReadAllAsync"/> returns positions in increasing order and
/// never returns an event while an event with a lower position can still commit, so a reader that
/// remembers the last position it saw never skips an event.</item>
/// <item>Reads page through storage, so reading a very long stream or log uses constant memory.</item>
/// </list>
/// </remarks>
public interface IEventStorage
{
    /// <summary>Gets what this storage supports beyond the required contract.</summary>
    EventStorageCapabilities Capabilities { get; }

    /// <summary>Appends events to a stream atomically.</summary>
    /// <param name="streamId">The stream; created by its first append.</param>
    /// <param name="expectedVersion">The version the stream must be at.</param>
    /// <param name="events">The events, in order; at least one.</param>
    /// <param name="inlineProjection">Projections to run with the append, or null.</param>
    /// <param name="cancellationToken">Cancels the append before it commits.</param>
    /// <returns>The stream's new version and the positions given to the events.</returns>
    /// <exception cref="WrongExpectedVersionException">The stream is not at <paramref name="expectedVersion"/>.</exception>
    /// <exception cref="StreamDeletedException">The stream was deleted.</exception>
    /// <exception cref="DuplicateEventException">An event id is already stored and this is not an exact retry.</exception>
    /// <exception cref="ArgumentException"><paramref name="streamId"/> is empty or <paramref name="events"/> is empty.</exception>
    ValueTask<AppendResult> AppendAsync(
        string streamId,
        ExpectedVersion expectedVersion,
        IReadOnlyList<SerializedEvent> events,
        InlineProjection? inlineProjection = null,
        CancellationToken cancellationToken = default);

    /// <summary>Reads a stream's events, paging through storage.</summary>
    /// <param name="streamId">The stream; a stream that does not exist reads as empty.</param>
    /// <param name="direction">Forward (ascending versions) or backward.</param>
    /// <param name="fromVersion">The first version to return (inclusive); null starts at the first event (forward) or the last (backward).</param>
    /// <param name="maxCount">The most events to return.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The events in the requested order.</returns>
    /// <exception cref="StreamDeletedException">The stream was deleted.</exception>
    IAsyncEnumerable<StoredEvent> ReadStreamAsync(
        string streamId,
        ReadDirection direction = ReadDirection.Forward,
        long? fromVersion = null,
        long maxCount = long.MaxValue,
        CancellationToken cancellationToken = default);

    /// <summary>Reads the global log after a position, in position order, paging through storage.</summary>
    /// <param name="afterPosition">Returns events with a higher position than this; 0 reads from the start.</param>
    /// <param name="filter">Selects events by type or stream prefix; null selects all.</param>
    /// <param name="maxCount">The most events to return.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The committed events after <paramref name="afterPosition"/> that no lower uncommitted position can precede.</returns>
    IAsyncEnumerable<StoredEvent> ReadAllAsync(
        long afterPosition = 0,
        EventFilter? filter = null,
        long maxCount = long.MaxValue,
        CancellationToken cancellationToken = default);

    /// <summary>Gets a stream's version and deletion state.</summary>
    /// <param name="streamId">The stream.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The state; a stream that never existed is at version 0.</returns>
    ValueTask<StreamState> GetStreamStateAsync(string streamId, CancellationToken cancellationToken = default);

    /// <summary>Gets the highest position a reader can read without a gap below it (0 for an empty log).</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The head position.</returns>
    ValueTask<long> GetHeadPositionAsync(CancellationToken cancellationToken = default);

    /// <summary>Deletes a stream.</summary>
    /// <param name="streamId">The stream.</param>
    /// <param name="expectedVersion">The version the stream must be at.</param>
    /// <param name="mode">Soft (hide from stream reads) or hard (remove, where supported; otherwise soft).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the deletion is durable.</returns>
    /// <exception cref="WrongExpectedVersionException">The stream is not at <paramref name="expectedVersion"/>.</exception>
    ValueTask DeleteStreamAsync(
        string streamId,
        ExpectedVersion expectedVersion,
        StreamDeleteMode mode = StreamDeleteMode.Soft,
        CancellationToken cancellationToken = default);

    /// <summary>Hides a stream's events below a version from stream reads (they stay in the global log).</summary>
    /// <param name="streamId">The stream.</param>
    /// <param name="beforeVersion">Events with a lower version are no longer read from the stream.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the truncation is durable.</returns>
    ValueTask TruncateStreamAsync(string streamId, long beforeVersion, CancellationToken cancellationToken = default);

    /// <summary>
    /// Waits until the head position may have moved past <paramref name="afterPosition"/>: on an append signal, a
    /// database notification, or a poll interval. It may return early; callers re-read and wait again.
    /// </summary>
    /// <param name="afterPosition">The last position the caller has seen.</param>
    /// <param name="cancellationToken">Ends the wait.</param>
    /// <returns>A task that completes when new events may be readable.</returns>
    ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken);
}
