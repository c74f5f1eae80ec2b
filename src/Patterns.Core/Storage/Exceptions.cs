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

/// <summary>A unit of work claimed an inbox entry that its consumer had already recorded: the message is a duplicate.</summary>
public sealed class DuplicateMessageException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="DuplicateMessageException"/> class.</summary>
    /// <param name="consumer">The consumer.</param>
    /// <param name="messageId">The message id.</param>
    public DuplicateMessageException(string consumer, string messageId)
        : base($"Consumer '{consumer}' has already handled message '{messageId}'; the unit of work that claimed it again was not committed.")
    {
        Consumer = consumer;
        MessageId = messageId;
    }

    /// <summary>Gets the consumer.</summary>
    public string Consumer { get; }

    /// <summary>Gets the message id.</summary>
    public string MessageId { get; }
}

/// <summary>A unit of work expected a checkpoint at one position and found it at another.</summary>
public sealed class CheckpointConflictException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="CheckpointConflictException"/> class.</summary>
    /// <param name="name">The checkpoint's name.</param>
    /// <param name="expected">The position expected.</param>
    /// <param name="actual">The position stored (0 when there is none).</param>
    public CheckpointConflictException(string name, long expected, long actual)
        : base(string.Create(CultureInfo.InvariantCulture, $"Checkpoint '{name}' is at position {actual}, but position {expected} was expected; another writer moved it, and the unit of work was not committed."))
    {
        Name = name;
        Expected = expected;
        Actual = actual;
    }

    /// <summary>Gets the checkpoint's name.</summary>
    public string Name { get; }

    /// <summary>Gets the position expected.</summary>
    public long Expected { get; }

    /// <summary>Gets the position stored.</summary>
    public long Actual { get; }
}

/// <summary>A writer's lease is no longer held by it: another owner took it over, or it was released.</summary>
public sealed class LeaseLostException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="LeaseLostException"/> class.</summary>
    /// <param name="lease">The lease the writer believed it held.</param>
    /// <param name="currentOwner">The owner that holds the lease now, or null when nobody does.</param>
    public LeaseLostException(Lease lease, string? currentOwner)
        : base(string.Create(CultureInfo.InvariantCulture, $"Lease '{lease?.Name}' (token {lease?.Token}) is no longer held by '{lease?.Owner}'{(currentOwner is null ? string.Empty : $"; '{currentOwner}' holds it now")}; nothing was written."))
    {
        ArgumentNullException.ThrowIfNull(lease);
        Lease = lease;
        CurrentOwner = currentOwner;
    }

    /// <summary>Gets the lease the writer believed it held.</summary>
    public Lease Lease { get; }

    /// <summary>Gets the owner that holds the lease now, or null.</summary>
    public string? CurrentOwner { get; }
}
