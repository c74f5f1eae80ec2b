namespace Patterns.Storage;

/// <summary>Selects events from the global log by event type or stream-id prefix; an empty filter selects everything.</summary>
public sealed record EventFilter
{
    /// <summary>Gets a filter that selects every event.</summary>
    public static EventFilter All { get; } = new();

    /// <summary>Gets the event type names to select; null or empty selects every type.</summary>
    public IReadOnlyCollection<string>? EventTypes { get; init; }

    /// <summary>Gets the stream-id prefix to select (ordinal comparison); null selects every stream.</summary>
    public string? StreamPrefix { get; init; }

    /// <summary>Gets whether this filter selects every event.</summary>
    public bool IsAll => (EventTypes is null || EventTypes.Count == 0) && StreamPrefix is null;

    /// <summary>Gets whether an event of <paramref name="eventType"/> in <paramref name="streamId"/> passes the filter.</summary>
    /// <param name="streamId">The event's stream.</param>
    /// <param name="eventType">The event's type name as stored.</param>
    public bool Matches(string streamId, string eventType) =>
        (StreamPrefix is null || streamId.StartsWith(StreamPrefix, StringComparison.Ordinal))
        && (EventTypes is null || EventTypes.Count == 0 || EventTypes.Contains(eventType));
}
