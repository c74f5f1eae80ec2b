namespace Patterns.Storage;

/// <summary>A store that commits a <see cref="UnitOfWork"/> in one transaction.</summary>
/// <remarks>
/// Every store (in-memory, SQLite, PostgreSQL) gives the same semantics, which the conformance suite names:
/// all parts or none; the first failing part's exception (<see cref="WrongExpectedVersionException"/>,
/// <see cref="StreamDeletedException"/>, <see cref="DuplicateEventException"/>, <see cref="DuplicateMessageException"/>,
/// <see cref="CheckpointConflictException"/>, <see cref="LeaseLostException"/>); appends that repeat an earlier append
/// exactly return its original result (an idempotent retry) and the rest of the unit still commits. Units committed
/// concurrently may share one database transaction (group commit), each keeping its own outcome.
/// </remarks>
public interface IUnitOfWorkStorage
{
    /// <summary>Commits every part of <paramref name="work"/>, or none of it.</summary>
    /// <param name="work">The unit of work.</param>
    /// <param name="cancellationToken">Cancels the commit while it has not started; a commit in progress runs to its end.</param>
    /// <returns>The outcome: one <see cref="AppendResult"/> per append and the outbox sequence numbers.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="work"/> is null.</exception>
    ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default);

    /// <summary>
    /// Gets a value indicating whether the store numbers a unit's outbox messages consecutively, in the order they were
    /// enqueued, and makes sequence numbers visible in order (no commit sees a number above one still in progress).
    /// </summary>
    /// <remarks>
    /// The outbox relay relies on it to take the messages its own process committed from memory, by the numbers
    /// <see cref="UnitOfWorkResult.LastOutboxSequence"/> gives them; a store that does not declare it (the default) has
    /// every message read back by the relay. The built-in stores (in-memory, SQLite, PostgreSQL) declare it.
    /// </remarks>
    /// <value>Default <see langword="false"/>.</value>
    bool NumbersOutboxConsecutively => false;
}

/// <summary>The outcome of a committed <see cref="UnitOfWork"/>.</summary>
/// <param name="Appends">One result per append, in the order the appends were added.</param>
/// <param name="LastOutboxSequence">
/// The sequence number of the last outbox message stored, or 0 when the unit stored none. A unit's messages get
/// consecutive numbers in the order they were enqueued, so the first is <c>LastOutboxSequence - Outbox.Count + 1</c>
/// (the outbox relay hands its own process's messages over in memory by these numbers).
/// </param>
public sealed record UnitOfWorkResult(IReadOnlyList<AppendResult> Appends, long LastOutboxSequence)
{
    /// <summary>Gets the result of a unit with no appends and no outbox messages.</summary>
    public static UnitOfWorkResult Empty { get; } = new([], 0);
}
