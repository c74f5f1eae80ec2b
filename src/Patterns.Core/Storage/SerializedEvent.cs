namespace Patterns.Storage;

/// <summary>
/// An event as handed to an <see cref="IEventStorage"/> for appending: already serialized, with its type
/// name and metadata. The event store facade builds these from typed events.
/// </summary>
/// <param name="EventId">The event's id; appending an id the stream already holds is an idempotent retry.</param>
/// <param name="EventType">The event's registered type name (independent of the CLR type name).</param>
/// <param name="Data">The serialized event body.</param>
/// <param name="Timestamp">When the event was recorded, from the facade's <see cref="TimeProvider"/>.</param>
public sealed record SerializedEvent(Guid EventId, string EventType, ReadOnlyMemory<byte> Data, DateTimeOffset Timestamp)
{
    /// <summary>Gets the correlation id, if any.</summary>
    public string? CorrelationId { get; init; }

    /// <summary>Gets the causation id (the id of the message or event that caused this one), if any.</summary>
    public string? CausationId { get; init; }

    /// <summary>Gets free-form metadata serialized by the facade (for example headers), if any.</summary>
    public ReadOnlyMemory<byte> Metadata { get; init; }
}
