using System.Globalization;

namespace Patterns.Storage;

/// <summary>
/// Argument checks that every <see cref="IEventStorage"/> implementation makes, with messages that name the
/// problem, so that all stores reject bad input the same way.
/// </summary>
public static class EventStorageArguments
{
    /// <summary>Checks the arguments of <see cref="IEventStorage.AppendAsync"/>.</summary>
    /// <param name="streamId">The stream appended to.</param>
    /// <param name="events">The events appended.</param>
    /// <exception cref="ArgumentException">
    /// The stream id is empty, there are no events, an event is null or has no type, or one event id appears twice.
    /// </exception>
    /// <exception cref="ArgumentNullException"><paramref name="streamId"/> or <paramref name="events"/> is null.</exception>
    public static void ValidateAppend(string streamId, IReadOnlyList<SerializedEvent> events)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        ArgumentNullException.ThrowIfNull(events);
        if (events.Count == 0)
        {
            throw new ArgumentException($"An append to stream '{streamId}' needs at least one event.", nameof(events));
        }

        for (var i = 0; i < events.Count; i++)
        {
            var e = events[i] ?? throw new ArgumentException(Invariant($"Event {i} of the append to stream '{streamId}' is null."), nameof(events));
            if (string.IsNullOrEmpty(e.EventType))
            {
                throw new ArgumentException(Invariant($"Event {i} ({e.EventId}) of the append to stream '{streamId}' has no event type."), nameof(events));
            }

            // Small appends (the usual case) find duplicates without allocating a set.
            if (events.Count <= 16)
            {
                for (var j = 0; j < i; j++)
                {
                    if (events[j].EventId == e.EventId)
                    {
                        throw Twice(streamId, e.EventId);
                    }
                }
            }
        }

        if (events.Count > 16)
        {
            var ids = new HashSet<Guid>(events.Count);
            foreach (var e in events)
            {
                if (!ids.Add(e.EventId))
                {
                    throw Twice(streamId, e.EventId);
                }
            }
        }
    }

    private static ArgumentException Twice(string streamId, Guid eventId) =>
        new($"Event id {eventId} appears more than once in one append to stream '{streamId}'.", "events");

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
