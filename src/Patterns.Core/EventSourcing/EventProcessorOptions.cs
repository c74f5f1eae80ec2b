using System.ComponentModel.DataAnnotations;
using Patterns.Resilience;
using Polly.Retry;

namespace Patterns.EventSourcing;

/// <summary>What a subscription or async projection does with an event its handler still fails on after the retries.</summary>
public enum SubscriptionFailureMode
{
    /// <summary>Stop the subscription with a clear error (logged, and surfaced as <see cref="SubscriptionState.Faulted"/>); the checkpoint stays before the failed event.</summary>
    Stop,

    /// <summary>Record the event as parked (see <see cref="IEventSubscriptions.GetParkedEventsAsync"/>) and go on with the next one.</summary>
    Park,
}

/// <summary>Where a subscription with no checkpoint starts.</summary>
public enum SubscriptionStartPosition
{
    /// <summary>At the first event: catch up on history, then go live.</summary>
    Beginning,

    /// <summary>At the current end: only events appended from now on.</summary>
    End,
}

/// <summary>Options shared by subscriptions and projections: which events, how failures are retried and handled, how often the checkpoint is saved.</summary>
public abstract class EventProcessorOptions : HandlerResilienceOptions
{
    private readonly RetryStrategyOptions _defaultRetry;

    /// <summary>Initializes a new instance of the <see cref="EventProcessorOptions"/> class with the defaults.</summary>
    protected EventProcessorOptions()
    {
        Retry = _defaultRetry = PipelineFactory.DefaultRetry();
    }

    /// <summary>
    /// Gets the event types to handle (a base type or interface selects every event type assignable to it, including
    /// older types that upcast to one, and types registered after the subscription started; an event whose type the
    /// process cannot resolve then faults the subscription instead of being skipped).
    /// </summary>
    /// <value>Empty: every event.</value>
    public IList<Type> EventTypes { get; } = [];

    /// <summary>Gets or sets the stream-id prefix of the events to handle (ordinal).</summary>
    /// <value>Default <see langword="null"/>: every stream.</value>
    public string? StreamPrefix { get; set; }

    /// <summary>Gets or sets what happens to an event whose handler still fails after the retries.</summary>
    /// <value>Default <see cref="SubscriptionFailureMode.Stop"/>.</value>
    public SubscriptionFailureMode OnFailure { get; set; } = SubscriptionFailureMode.Stop;

    /// <summary>Gets or sets how many events one read fetches.</summary>
    /// <value>Default 256.</value>
    [Range(1, 100_000)]
    public int BatchSize { get; set; } = 256;

    /// <summary>
    /// Gets or sets after how many handled events the checkpoint is saved. It is also saved at the end of each page of
    /// <see cref="BatchSize"/> events, whenever the subscription catches up and when it stops, so after a crash at most
    /// this many events are handled again.
    /// </summary>
    /// <value>
    /// Default 100 for a subscription (whose handler's side effects outside the store are repeated after a crash); 256
    /// for a projection, the default <see cref="BatchSize"/>: its documents commit with the checkpoint, so a crash
    /// repeats no effect, and one transaction per page is the cheapest catch-up.
    /// </value>
    [Range(1, int.MaxValue)]
    public int CheckpointInterval { get; set; } = 100;

    /// <summary>Gets or sets where a subscription without a checkpoint starts.</summary>
    /// <value>Default <see cref="SubscriptionStartPosition.Beginning"/>.</value>
    public SubscriptionStartPosition StartFrom { get; set; } = SubscriptionStartPosition.Beginning;

    /// <summary>Whether <paramref name="retry"/> is the retry these options started with, unchanged.</summary>
    internal bool HasDefaultRetry(RetryStrategyOptions retry)
    {
        var fresh = PipelineFactory.DefaultRetry();
        return ReferenceEquals(retry, _defaultRetry)
            && retry.MaxRetryAttempts == fresh.MaxRetryAttempts
            && retry.Delay == fresh.Delay
            && retry.MaxDelay == fresh.MaxDelay
            && retry.BackoffType == fresh.BackoffType
            && retry.UseJitter == fresh.UseJitter
            && retry.ShouldHandle == fresh.ShouldHandle
            && retry.DelayGenerator is null
            && retry.OnRetry is null;
    }
}

/// <summary>Options of one subscription.</summary>
public sealed class SubscriptionOptions : EventProcessorOptions
{
    /// <summary>Gets or sets the one stream to subscribe to; its checkpoint is then the stream version.</summary>
    /// <value>Default <see langword="null"/>: the whole log (filtered by <see cref="EventProcessorOptions.EventTypes"/> and <see cref="EventProcessorOptions.StreamPrefix"/>).</value>
    public string? StreamId { get; set; }
}

/// <summary>How a projection is run.</summary>
public enum ProjectionMode
{
    /// <summary>By a subscription with a checkpoint, after the append: eventually consistent, at-least-once.</summary>
    Async,

    /// <summary>Inside each append through <see cref="IEventStore"/>, in the same transaction where the store supports it; a failure fails the append.</summary>
    Inline,
}

/// <summary>Options of one projection.</summary>
public sealed class ProjectionOptions : EventProcessorOptions
{
    /// <summary>The checkpoint interval of a projection: one page of the default <see cref="EventProcessorOptions.BatchSize"/>.</summary>
    internal const int DefaultCheckpointInterval = 256;

    /// <summary>Initializes a new instance of the <see cref="ProjectionOptions"/> class.</summary>
    public ProjectionOptions() => CheckpointInterval = DefaultCheckpointInterval;

    /// <summary>Gets or sets how the projection runs.</summary>
    /// <value>Default <see cref="ProjectionMode.Async"/>.</value>
    public ProjectionMode Mode { get; set; } = ProjectionMode.Async;

    /// <summary>Gets the document collections the projection writes; a rebuild replays into their shadows (<c>{collection}~rebuild</c>) and swaps them in.</summary>
    /// <value>Empty, unless the projection was registered with a collection.</value>
    public IList<string> Collections { get; } = [];
}

/// <summary>Options shared by every event-sourcing feature.</summary>
public sealed class EventSourcingOptions
{
    /// <summary>Gets or sets the document collection parked events are recorded in.</summary>
    /// <value>Default <c>patterns.parked-events</c>.</value>
    [Required]
    public string ParkedEventsCollection { get; set; } = "patterns.parked-events";

    /// <summary>
    /// Gets or sets how long a process owns a subscription or projection after its last lease renewal, when the store
    /// has leases (<see cref="Storage.ILeaseStore"/>). Each subscription runs in one process at a time across every
    /// process that shares the store; the owner renews its lease every third of this time, and a standby polls as
    /// often, so a standby takes over within about 4/3 of this time after the owner dies. A graceful stop releases the
    /// lease at once. A take or renewal that fails with a transient store error is tried again after the
    /// <see cref="StoreRetryDelay"/> back-off instead; a renewal only while the lease is sure to be held (two thirds of
    /// this time after the last renewal began), after which the subscription's handlers stop before the lease can expire.
    /// </summary>
    /// <value>Default 15 seconds; between 1 second and 1 hour.</value>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// Gets or sets a value indicating whether subscriptions and projections take a lease before they run (single active
    /// owner). Turn it off only when one process alone ever runs them.
    /// </summary>
    /// <value>Default <see langword="true"/>; has no effect on a store without leases.</value>
    public bool ExclusiveOwnership { get; set; } = true;

    /// <summary>
    /// Gets or sets how long a subscription or async projection waits after its first store call in a row that failed
    /// with a transient error (an outage: a lost connection, a timeout, a busy or locked database, as
    /// <see cref="Storage.StorageErrors"/> and the store's <see cref="Storage.IStorageErrorClassifier"/> classify it)
    /// before it runs again from its checkpoint. Each further failure in a row doubles the wait, up to
    /// <see cref="StoreRetryMaxDelay"/>; the subscription reports <see cref="SubscriptionState.Recovering"/> meanwhile. A
    /// permanent error faults it.
    /// </summary>
    /// <value>Default 1 second; between 1 millisecond and 1 hour.</value>
    public TimeSpan StoreRetryDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Gets or sets the longest wait between a subscription's runs while the store keeps failing with transient errors (see <see cref="StoreRetryDelay"/>).</summary>
    /// <value>Default 30 seconds; at least <see cref="StoreRetryDelay"/> and at most 1 hour.</value>
    public TimeSpan StoreRetryMaxDelay { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Gets or sets how long a subscription or async projection keeps recovering from an outage (see
    /// <see cref="StoreRetryDelay"/>) before it gives up. The outage starts with the first of an unbroken series of
    /// transient store failures (a run's read or commit, or taking or renewing its lease); a commit that succeeds, or a
    /// run that catches up, ends the series. Once a failure comes this long or longer after the series started, the
    /// subscription stops as <see cref="SubscriptionState.Faulted"/> with the last store error
    /// (the <see cref="SubscriptionStatus.Error"/>'s inner exception), logs it as an error, and
    /// <see cref="EventSubscriptionsHealthCheck"/> reports it unhealthy; <see cref="IEventSubscriptions.RestartAsync"/>
    /// resumes it from its checkpoint.
    /// </summary>
    /// <value>
    /// Default <see langword="null"/>: no limit (it keeps trying, degraded, for as long as the outage lasts), as an ETL
    /// job's <c>MaxOutageDuration</c>. <see cref="Timeout.InfiniteTimeSpan"/> also means no limit; any other value must be positive.
    /// </value>
    public TimeSpan? MaxOutageDuration { get; set; }
}
