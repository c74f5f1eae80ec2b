namespace Patterns.Storage;

/// <summary>An event as read back from an <see cref="IEventStorage"/>: the appended data plus its place in the stream and the log.</summary>
/// <param name="EventId">The event's id.</param>
/// <param name="StreamId">The stream the event belongs to.</param>
/// <param name="Version">The event's one-based version within its stream.</param>
/// <param name="Position">The event's one-based position in the global log.</param>
/// <param name="EventType">The event's registered type name, as appended (upcasting happens above the storage).</param>
/// <param name="Data">The serialized event body.</param>
/// <param name="Timestamp">When the event was recorded.</param>
public sealed record StoredEvent(
    Guid EventId,
    string StreamId,
    long Version,
    long Position,
    string EventType,
    ReadOnlyMemory<byte> Data,
    DateTimeOffset Timestamp)
{
    /// <summary>Gets the correlation id, if any.</summary>
    public string? CorrelationId { get; init; }

    /// <summary>Gets the causation id, if any.</summary>
    public string? CausationId { get; init; }

    /// <summary>Gets the serialized metadata, if any.</summary>
    public ReadOnlyMemory<byte> Metadata { get; init; }

    /// <summary>
    /// Stamps an append's events with their stream, consecutive versions and consecutive positions: the construction
    /// every store uses for the events it appends (and hands to an inline projection).
    /// </summary>
    /// <param name="streamId">The stream appended to.</param>
    /// <param name="firstVersion">The version of the first event.</param>
    /// <param name="firstPosition">The global position of the first event.</param>
    /// <param name="events">The appended events.</param>
    /// <param name="copyBuffers">Whether to copy the data and metadata, for a store that keeps them (the caller may reuse its buffers).</param>
    /// <returns>The stored events, in order.</returns>
    public static StoredEvent[] FromAppend(string streamId, long firstVersion, long firstPosition, IReadOnlyList<SerializedEvent> events, bool copyBuffers = false)
    {
        ArgumentNullException.ThrowIfNull(events);
        var stored = new StoredEvent[events.Count];
        for (var i = 0; i < stored.Length; i++)
        {
            var e = events[i];
            stored[i] = new StoredEvent(e.EventId, streamId, firstVersion + i, firstPosition + i, e.EventType, copyBuffers ? e.Data.ToArray() : e.Data, e.Timestamp)
            {
                CorrelationId = e.CorrelationId,
                CausationId = e.CausationId,
                Metadata = e.Metadata.IsEmpty ? default : copyBuffers ? e.Metadata.ToArray() : e.Metadata,
            };
        }

        return stored;
    }
}
