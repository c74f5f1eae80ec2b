using System.Globalization;
using Patterns.Storage;

namespace Patterns.Sqlite;

/// <summary>Argument checks shared by the store's entry points, with messages that name the problem.</summary>
internal static class SqliteArguments
{
    public static void Key(string value, string name) => ArgumentException.ThrowIfNullOrEmpty(value, name);

    public static void Append(string streamId, IReadOnlyList<SerializedEvent> events)
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
            if (e.EventId == Guid.Empty)
            {
                throw new ArgumentException(Invariant($"Event {i} of the append to stream '{streamId}' has an empty event id."), nameof(events));
            }

            if (string.IsNullOrEmpty(e.EventType))
            {
                throw new ArgumentException(Invariant($"Event {i} ({e.EventId}) of the append to stream '{streamId}' has no event type."), nameof(events));
            }

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
        new($"Event id {eventId} appears more than once in the append to stream '{streamId}'.", "events");

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
