using System.Globalization;

namespace Patterns.EventSourcing;

/// <summary>Handles the events of a subscription.</summary>
/// <remarks>
/// A subscription delivers events one at a time, in log order (or stream order), and never moves its
/// checkpoint past an event this handler has not handled. After a crash, events since the last checkpoint
/// are delivered again (at-least-once), so handlers should be idempotent.
/// </remarks>
public interface IEventHandler
{
    /// <summary>Handles one event.</summary>
    /// <param name="event">The event.</param>
    /// <param name="cancellationToken">Cancelled when the subscription stops.</param>
    /// <returns>A task that completes when the event is handled; a fault is retried per the subscription's pipeline.</returns>
    ValueTask HandleAsync(RecordedEvent @event, CancellationToken cancellationToken);
}

/// <summary>What a subscription or projection is doing.</summary>
public enum SubscriptionState
{
    /// <summary>Not running: the host has not started, or it stopped.</summary>
    Stopped,

    /// <summary>Reading history towards the head of the log.</summary>
    CatchingUp,

    /// <summary>Caught up, waiting for new events.</summary>
    Live,

    /// <summary>
    /// Stopped by an error (see <see cref="SubscriptionStatus.Error"/>): a handler's failure, an event it cannot read, or a
    /// permanent store error (a transient one makes it <see cref="Recovering"/> instead, until the outage outlasts
    /// <see cref="EventSourcingOptions.MaxOutageDuration"/>); restart it with
    /// <see cref="IEventSubscriptions.RestartAsync"/>.
    /// </summary>
    Faulted,

    /// <summary>An inline projection: it runs inside each append and is always up to date.</summary>
    Inline,

    /// <summary>Waiting to run: another process holds the subscription's lease (see <see cref="EventSourcingOptions.LeaseDuration"/>).</summary>
    Standby,

    /// <summary>
    /// The store failed with a transient error (an outage; see <see cref="SubscriptionStatus.StoreError"/>): it runs again
    /// from its checkpoint after a back-off (<see cref="EventSourcingOptions.StoreRetryDelay"/>, doubling up to
    /// <see cref="EventSourcingOptions.StoreRetryMaxDelay"/>), and is back to catching up or live once a commit succeeds.
    /// </summary>
    Recovering,
}

/// <summary>A snapshot of one subscription's or projection's progress.</summary>
/// <param name="Name">The subscription's or projection's name (also its checkpoint's name).</param>
/// <param name="State">What it is doing.</param>
/// <param name="Checkpoint">The last position handled (a stream version for a one-stream subscription).</param>
/// <param name="ProcessedPosition">The global position up to which every selected event has been handled.</param>
/// <param name="Error">Why it faulted, when <paramref name="State"/> is <see cref="SubscriptionState.Faulted"/>.</param>
public sealed record SubscriptionStatus(string Name, SubscriptionState State, long Checkpoint, long ProcessedPosition, SubscriptionFaultedException? Error)
{
    /// <summary>Gets the transient store error the subscription is recovering from, when <see cref="State"/> is <see cref="SubscriptionState.Recovering"/>.</summary>
    /// <value>The last such error, or <see langword="null"/>.</value>
    public Exception? StoreError { get; init; }
}

/// <summary>A subscription stopped because an event could not be handled (or read) and its failure mode is <see cref="SubscriptionFailureMode.Stop"/>.</summary>
public sealed class SubscriptionFaultedException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="SubscriptionFaultedException"/> class.</summary>
    /// <param name="subscription">The subscription.</param>
    /// <param name="position">The failed event's global position (0 when the failure was not about one event).</param>
    /// <param name="streamId">The failed event's stream, if any.</param>
    /// <param name="version">The failed event's version (0 when none).</param>
    /// <param name="innerException">The handler's or the store's exception.</param>
    public SubscriptionFaultedException(string subscription, long position, string? streamId, long version, Exception innerException)
        : base(Describe(subscription, position, streamId, version, innerException), innerException)
    {
        Subscription = subscription;
        Position = position;
        StreamId = streamId;
        Version = version;
    }

    /// <summary>Initializes a new instance of the <see cref="SubscriptionFaultedException"/> class for a failure that is about no event.</summary>
    internal SubscriptionFaultedException(string subscription, string message, Exception innerException)
        : base(message, innerException)
    {
        Subscription = subscription;
    }

    /// <summary>Gets the subscription.</summary>
    public string Subscription { get; }

    /// <summary>Gets the failed event's global position, or 0.</summary>
    public long Position { get; }

    /// <summary>Gets the failed event's stream, or null.</summary>
    public string? StreamId { get; }

    /// <summary>Gets the failed event's version, or 0.</summary>
    public long Version { get; }

    private static string Describe(string subscription, long position, string? streamId, long version, Exception inner) =>
        streamId is null
            ? $"Subscription '{subscription}' stopped: {inner.GetType().FullName}: {inner.Message}"
            : string.Create(
                CultureInfo.InvariantCulture,
                $"Subscription '{subscription}' stopped at the event at position {position} (stream '{streamId}', version {version}), which its handler failed on: {inner.GetType().FullName}: {inner.Message}. It resumes from this event when restarted.");
}

/// <summary>An event a subscription gave up on and set aside (failure mode <see cref="SubscriptionFailureMode.Park"/>).</summary>
/// <param name="Subscription">The subscription.</param>
/// <param name="EventId">The event's id.</param>
/// <param name="StreamId">The event's stream.</param>
/// <param name="Version">The event's version.</param>
/// <param name="Position">The event's global position.</param>
/// <param name="EventType">The event's stored type name.</param>
/// <param name="Error">The last failure's type and message.</param>
/// <param name="ParkedAt">When it was parked.</param>
public sealed record ParkedEvent(string Subscription, Guid EventId, string StreamId, long Version, long Position, string EventType, string Error, DateTimeOffset ParkedAt);

/// <summary>Watches and controls the running subscriptions and projections.</summary>
public interface IEventSubscriptions
{
    /// <summary>Gets the status of every subscription and projection.</summary>
    /// <returns>The statuses, by name.</returns>
    IReadOnlyList<SubscriptionStatus> GetStatuses();

    /// <summary>Gets one status.</summary>
    /// <param name="name">The subscription's or projection's name.</param>
    /// <returns>The status.</returns>
    /// <exception cref="ArgumentException">No subscription or projection has that name.</exception>
    SubscriptionStatus GetStatus(string name);

    /// <summary>
    /// Waits until a subscription or projection has handled every selected event up to a global position, for
    /// example the <see cref="Storage.AppendResult.LastPosition"/> of an append whose read model a caller wants to see.
    /// </summary>
    /// <param name="name">The subscription's or projection's name.</param>
    /// <param name="position">The global position.</param>
    /// <param name="cancellationToken">Ends the wait.</param>
    /// <returns>A task that completes when the position is processed.</returns>
    /// <exception cref="SubscriptionFaultedException">The subscription faulted (or was faulted already).</exception>
    Task WaitForPositionAsync(string name, long position, CancellationToken cancellationToken = default);

    /// <summary>Restarts a subscription from its checkpoint, for example after fixing what made it fault.</summary>
    /// <param name="name">The subscription's or projection's name.</param>
    /// <param name="cancellationToken">Bounds the wait for the running loop to stop.</param>
    /// <returns>A task that completes when it has restarted.</returns>
    Task RestartAsync(string name, CancellationToken cancellationToken = default);

    /// <summary>
    /// Rebuilds from position 0 into shadow collections (<c>{collection}~rebuild</c>) and swaps them in once they have
    /// caught up, in one unit of work; the old read model is served until then. An async projection's rebuild is
    /// recorded durably and resumed after a crash or restart; an inline projection is replayed before this returns,
    /// while appends go on, and this process's appends wait only for the last catch-up and the swap.
    /// </summary>
    /// <param name="name">The subscription's or projection's name.</param>
    /// <param name="cancellationToken">Cancels the rebuild.</param>
    /// <returns>A task that completes when the rebuild has started (async) or finished (inline).</returns>
    Task RebuildAsync(string name, CancellationToken cancellationToken = default);

    /// <summary>Lists the events a subscription has parked, in position order.</summary>
    /// <param name="name">The subscription's or projection's name.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The parked events.</returns>
    IAsyncEnumerable<ParkedEvent> GetParkedEventsAsync(string name, CancellationToken cancellationToken = default);

    /// <summary>
    /// Hands a subscription's parked events to its handler again, in position order, for example once what made them
    /// fail is fixed. The subscription stops first (finishing the event in hand) and restarts afterwards, so the handler
    /// never runs twice at once. An event that is handled leaves the parked list; one that fails again (after the
    /// retries) stays parked with its new error.
    /// </summary>
    /// <param name="name">The subscription's or projection's name.</param>
    /// <param name="cancellationToken">Cancels the replay (the stop waits for the event in hand until then); events not reached stay parked.</param>
    /// <returns>How many parked events were handled and removed.</returns>
    /// <exception cref="ArgumentException">No subscription or projection has that name.</exception>
    Task<int> ReplayParkedEventsAsync(string name, CancellationToken cancellationToken = default);
}
