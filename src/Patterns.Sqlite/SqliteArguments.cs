using System.Globalization;
using Patterns.Storage;

namespace Patterns.Sqlite;

/// <summary>Argument checks shared by the store's entry points, with messages that name the problem.</summary>
internal static class SqliteArguments
{
    public static void Key(string value, string name) => ArgumentException.ThrowIfNullOrEmpty(value, name);

    public static void Lease(string name, string owner, TimeSpan duration)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentException.ThrowIfNullOrEmpty(owner);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(duration, TimeSpan.Zero);
    }

    public static void Append(string streamId, IReadOnlyList<SerializedEvent> events)
    {
        EventStorageArguments.ValidateAppend(streamId, events);
        for (var i = 0; i < events.Count; i++)
        {
            if (events[i].EventId == Guid.Empty)
            {
                throw new ArgumentException(Invariant($"Event {i} of the append to stream '{streamId}' has an empty event id."), nameof(events));
            }
        }
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
