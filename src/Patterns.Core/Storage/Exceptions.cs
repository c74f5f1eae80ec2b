using System.Globalization;

namespace Patterns.Storage;

/// <summary>An append or delete found the stream at a version other than the expected one.</summary>
public sealed class WrongExpectedVersionException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="WrongExpectedVersionException"/> class.</summary>
    /// <param name="streamId">The stream.</param>
    /// <param name="expected">The version the caller expected.</param>
    /// <param name="actual">The stream's actual version (0 when it has no events).</param>
    public WrongExpectedVersionException(string streamId, ExpectedVersion expected, long actual)
        : base(string.Create(CultureInfo.InvariantCulture, $"Stream '{streamId}' is at version {actual}, but version {expected} was expected."))
    {
        StreamId = streamId;
        Expected = expected;
        Actual = actual;
    }

    /// <summary>Gets the stream.</summary>
    public string StreamId { get; }

    /// <summary>Gets the version the caller expected.</summary>
    public ExpectedVersion Expected { get; }

    /// <summary>Gets the stream's actual version.</summary>
    public long Actual { get; }
}

/// <summary>An operation addressed a deleted stream.</summary>
public sealed class StreamDeletedException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="StreamDeletedException"/> class.</summary>
    /// <param name="streamId">The deleted stream.</param>
    public StreamDeletedException(string streamId)
        : base($"Stream '{streamId}' was deleted.") => StreamId = streamId;

    /// <summary>Gets the deleted stream.</summary>
    public string StreamId { get; }
}

/// <summary>
/// An append reused event ids that the stream already holds, but not as an exact retry of an earlier append
/// (different positions in the stream, or a mix of new and existing ids).
/// </summary>
public sealed class DuplicateEventException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="DuplicateEventException"/> class.</summary>
    /// <param name="streamId">The stream.</param>
    /// <param name="eventId">The first event id that is already stored.</param>
    public DuplicateEventException(string streamId, Guid eventId)
        : base($"Event {eventId} is already in stream '{streamId}', and the append is not an exact retry of the append that stored it.")
    {
        StreamId = streamId;
        EventId = eventId;
    }

    /// <summary>Gets the stream.</summary>
    public string StreamId { get; }

    /// <summary>Gets the event id that was already stored.</summary>
    public Guid EventId { get; }
}
