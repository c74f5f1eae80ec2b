using Patterns.Messaging;

namespace Patterns.EventSourcing;

/// <summary>An event to append: the typed event plus the metadata stored with it.</summary>
/// <remarks>
/// The event id is created with the instance, so appending the same <see cref="EventData"/> instances again
/// (a retried call) is an idempotent no-op that returns the original result. Set <see cref="EventId"/> to a
/// value derived from the command to make retries across processes idempotent too.
/// </remarks>
public sealed record EventData
{
    /// <summary>Initializes a new instance of the <see cref="EventData"/> class.</summary>
    /// <param name="data">The event; its type must be registered (or registrable) in the event type registry.</param>
    /// <exception cref="ArgumentNullException"><paramref name="data"/> is null.</exception>
    public EventData(object data)
    {
        ArgumentNullException.ThrowIfNull(data);
        Data = data;
    }

    /// <summary>Gets the event.</summary>
    public object Data { get; }

    /// <summary>Gets the event's id.</summary>
    /// <value>A new unique id unless set.</value>
    public Guid EventId { get; init; } = MessageIds.Next();

    /// <summary>Gets the id that ties the event to the conversation or workflow it belongs to.</summary>
    /// <value>Default <see langword="null"/>.</value>
    public string? CorrelationId { get; init; }

    /// <summary>Gets the id of the command, message or event that caused this event.</summary>
    /// <value>Default <see langword="null"/>.</value>
    public string? CausationId { get; init; }

    /// <summary>Gets free-form string headers stored with the event (for example the user or tenant).</summary>
    /// <value>Default <see langword="null"/>: no headers.</value>
    public IReadOnlyDictionary<string, string>? Headers { get; init; }
}
