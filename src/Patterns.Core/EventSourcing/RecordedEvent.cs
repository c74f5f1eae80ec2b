using System.Collections.ObjectModel;

namespace Patterns.EventSourcing;

/// <summary>An event read back from the store: the typed event (after upcasting) and its metadata.</summary>
public sealed record RecordedEvent
{
    private readonly string? _storedEventType;

    /// <summary>Gets the event's id.</summary>
    public required Guid EventId { get; init; }

    /// <summary>Gets the stream the event belongs to.</summary>
    public required string StreamId { get; init; }

    /// <summary>Gets the event's one-based version within its stream.</summary>
    public required long Version { get; init; }

    /// <summary>Gets the event's one-based position in the global log.</summary>
    public required long Position { get; init; }

    /// <summary>Gets the registered type name of <see cref="Data"/> (after upcasting).</summary>
    public required string EventType { get; init; }

    /// <summary>Gets the event, deserialized and upcast to its current type.</summary>
    public required object Data { get; init; }

    /// <summary>Gets when the event was appended, from the appending process's <see cref="TimeProvider"/>.</summary>
    public required DateTimeOffset Timestamp { get; init; }

    /// <summary>Gets the correlation id, if any.</summary>
    public string? CorrelationId { get; init; }

    /// <summary>Gets the causation id, if any.</summary>
    public string? CausationId { get; init; }

    /// <summary>Gets the headers stored with the event.</summary>
    /// <value>Empty when the event has none.</value>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = ReadOnlyDictionary<string, string>.Empty;

    /// <summary>Gets the type name the event was stored under, which differs from <see cref="EventType"/> when it was upcast.</summary>
    /// <value><see cref="EventType"/> unless set.</value>
    public string StoredEventType
    {
        get => _storedEventType ?? EventType;
        init => _storedEventType = value;
    }
}
