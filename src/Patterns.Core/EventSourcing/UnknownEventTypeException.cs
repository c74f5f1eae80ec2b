using System.Globalization;

namespace Patterns.EventSourcing;

/// <summary>A stored event's type name is not registered, so it cannot be turned back into a typed event.</summary>
public sealed class UnknownEventTypeException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="UnknownEventTypeException"/> class.</summary>
    /// <param name="eventType">The unknown type name.</param>
    /// <param name="streamId">The event's stream.</param>
    /// <param name="version">The event's version.</param>
    /// <param name="position">The event's global position.</param>
    public UnknownEventTypeException(string eventType, string streamId, long version, long position)
        : this(eventType, eventType, streamId, version, position)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="UnknownEventTypeException"/> class for an event whose byte-level upcasters lead to an unregistered name.</summary>
    /// <param name="eventType">The unknown type name the upcasters lead to.</param>
    /// <param name="storedEventType">The name the event is stored under.</param>
    /// <param name="streamId">The event's stream.</param>
    /// <param name="version">The event's version.</param>
    /// <param name="position">The event's global position.</param>
    public UnknownEventTypeException(string eventType, string storedEventType, string streamId, long version, long position)
        : base(Describe(eventType, storedEventType, streamId, version, position))
    {
        EventType = eventType;
        StoredEventType = storedEventType;
        StreamId = streamId;
        Version = version;
        Position = position;
    }

    /// <summary>Gets the unknown type name.</summary>
    public string EventType { get; }

    /// <summary>Gets the name the event is stored under (differs from <see cref="EventType"/> when byte-level upcasters renamed it).</summary>
    public string StoredEventType { get; }

    /// <summary>Gets the event's stream.</summary>
    public string StreamId { get; }

    /// <summary>Gets the event's version.</summary>
    public long Version { get; }

    /// <summary>Gets the event's global position.</summary>
    public long Position { get; }

    private static string Describe(string eventType, string storedEventType, string streamId, long version, long position) =>
        string.Equals(eventType, storedEventType, StringComparison.Ordinal)
            ? string.Create(
                CultureInfo.InvariantCulture,
                $"The event at position {position} (stream '{streamId}', version {version}) has type '{eventType}', which is not registered. Register it with AddEvent<T>(\"{eventType}\") or [MessageName(\"{eventType}\")], or add an upcaster from it.")
            : string.Create(
                CultureInfo.InvariantCulture,
                $"The event at position {position} (stream '{streamId}', version {version}) is stored as '{storedEventType}', and its upcasters lead to '{eventType}', which is not registered. Register a type under that name with AddEvent<T>(\"{eventType}\") or [MessageName(\"{eventType}\")], or add an upcaster from it: the upcasting chain is missing a link.");
}
