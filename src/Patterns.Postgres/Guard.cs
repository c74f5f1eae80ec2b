namespace Patterns.Postgres;

/// <summary>Argument checks shared by the store's operations. PostgreSQL text cannot hold U+0000, so it is refused up front.</summary>
internal static class Guard
{
    public static void Text(string value, string paramName)
    {
        ArgumentException.ThrowIfNullOrEmpty(value, paramName);
        if (value.Contains('\0', StringComparison.Ordinal))
        {
            throw new ArgumentException($"The value of {paramName} contains a NUL character (U+0000), which PostgreSQL text cannot store.", paramName);
        }
    }

    public static void Key(string collection, string id)
    {
        Text(collection, nameof(collection));
        Text(id, nameof(id));
    }

    /// <summary>Refuses an event field holding U+0000; the message is built only on failure.</summary>
    public static void EventText(string? value, string field, Guid eventId)
    {
        if (value is not null && value.Contains('\0', StringComparison.Ordinal))
        {
            throw new ArgumentException($"The {field} of event {eventId} contains a NUL character (U+0000), which PostgreSQL text cannot store.", "events");
        }
    }
}
