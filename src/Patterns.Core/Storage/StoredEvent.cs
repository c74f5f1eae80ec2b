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
}
