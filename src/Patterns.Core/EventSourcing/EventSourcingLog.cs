using Microsoft.Extensions.Logging;

namespace Patterns.EventSourcing;

internal static partial class EventSourcingLog
{
    [LoggerMessage(EventId = 4001, Level = LogLevel.Debug, Message = "Append to stream '{StreamId}' expected version {Expected} but the stream is at {Actual}.")]
    public static partial void Conflict(ILogger logger, string streamId, string expected, long actual);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Information, Message = "Subscription '{Subscription}' started at checkpoint {Checkpoint}.")]
    public static partial void SubscriptionStarted(ILogger logger, string subscription, long checkpoint);

    [LoggerMessage(EventId = 4003, Level = LogLevel.Debug, Message = "Subscription '{Subscription}' caught up at position {Position}.")]
    public static partial void CaughtUp(ILogger logger, string subscription, long position);

    [LoggerMessage(EventId = 4004, Level = LogLevel.Debug, Message = "Subscription '{Subscription}' attempt {Attempt} on the event at position {Position} failed; retrying in {Delay}.")]
    public static partial void Retrying(ILogger logger, Exception? exception, string subscription, int attempt, long position, TimeSpan delay);

    [LoggerMessage(EventId = 4005, Level = LogLevel.Error, Message = "Subscription '{Subscription}' stopped: it failed on the event at position {Position} (stream '{StreamId}', version {Version}, type '{EventType}') after its retries, and does not move past it.")]
    public static partial void Faulted(ILogger logger, Exception exception, string subscription, long position, string streamId, long version, string eventType);

    [LoggerMessage(EventId = 4006, Level = LogLevel.Warning, Message = "Subscription '{Subscription}' parked the event at position {Position} (stream '{StreamId}', version {Version}, type '{EventType}') after its retries.")]
    public static partial void Parked(ILogger logger, Exception exception, string subscription, long position, string streamId, long version, string eventType);

    [LoggerMessage(EventId = 4007, Level = LogLevel.Error, Message = "Subscription '{Subscription}' stopped because the store failed.")]
    public static partial void StoreFailed(ILogger logger, Exception exception, string subscription);

    [LoggerMessage(EventId = 4008, Level = LogLevel.Information, Message = "Subscription '{Subscription}' stopped at checkpoint {Checkpoint}.")]
    public static partial void SubscriptionStopped(ILogger logger, string subscription, long checkpoint);

    [LoggerMessage(EventId = 4009, Level = LogLevel.Information, Message = "Rebuilding '{Name}' from position 0 into the shadows of its collections ({Collections}); the live ones are served until the rebuild has caught up and is swapped in.")]
    public static partial void Rebuilding(ILogger logger, string name, string collections);

    [LoggerMessage(EventId = 4010, Level = LogLevel.Debug, Message = "Ignoring the snapshot of stream '{StreamId}' at version {Version}: {Reason}")]
    public static partial void SnapshotIgnored(ILogger logger, string streamId, long version, string reason);

    [LoggerMessage(EventId = 4011, Level = LogLevel.Warning, Message = "Could not save the snapshot of stream '{StreamId}' at version {Version}; the aggregate still loads from its events.")]
    public static partial void SnapshotFailed(ILogger logger, Exception exception, string streamId, long version);

    [LoggerMessage(EventId = 4012, Level = LogLevel.Debug, Message = "Aggregate stream '{StreamId}' changed concurrently (attempt {Attempt}); reloading and deciding again.")]
    public static partial void AggregateConflict(ILogger logger, string streamId, int attempt);

    [LoggerMessage(EventId = 4013, Level = LogLevel.Warning, Message = "Could not save the checkpoint of subscription '{Subscription}' at {Checkpoint} while stopping; it resumes from its previous checkpoint.")]
    public static partial void CheckpointFailed(ILogger logger, Exception exception, string subscription, long checkpoint);

    [LoggerMessage(EventId = 4014, Level = LogLevel.Warning, Message = "Subscription '{Subscription}' waits for its previous run, abandoned at a stop deadline while its handler ignored cancellation, to end before it starts again.")]
    public static partial void WaitingForAbandonedRun(ILogger logger, string subscription);

    [LoggerMessage(EventId = 4015, Level = LogLevel.Debug, Message = "Subscription '{Subscription}' is stopping: it reads no more events and finishes the one in hand until the stop deadline.")]
    public static partial void Stopping(ILogger logger, string subscription);

    [LoggerMessage(EventId = 4016, Level = LogLevel.Information, Message = "Subscription '{Subscription}' replayed its parked events: {Handled} handled, {Failed} parked again.")]
    public static partial void ReplayedParked(ILogger logger, string subscription, int handled, int failed);

    [LoggerMessage(EventId = 4017, Level = LogLevel.Warning, Message = "Subscription '{Subscription}' lost its lease (token {Token}) to another process, or could not renew it; it stands by and runs again when it takes the lease back.")]
    public static partial void OwnershipLost(ILogger logger, string subscription, long token);

    [LoggerMessage(EventId = 4018, Level = LogLevel.Information, Message = "Rebuild of '{Name}' caught up at {Checkpoint} and was swapped in; it runs live from there.")]
    public static partial void RebuildSwapped(ILogger logger, string name, long checkpoint);

    [LoggerMessage(EventId = 4019, Level = LogLevel.Information, Message = "Rebuild of '{Name}' runs from shadow checkpoint {Checkpoint}; the live read model is served unchanged until the swap.")]
    public static partial void RebuildResumed(ILogger logger, string name, long checkpoint);

    [LoggerMessage(EventId = 4020, Level = LogLevel.Warning, Message = "Subscription '{Subscription}' could not reach the store (failure {Failures} in a row, a transient error); it runs again from its checkpoint in {Delay}.")]
    public static partial void StoreUnavailable(ILogger logger, Exception exception, string subscription, int failures, TimeSpan delay);

    [LoggerMessage(EventId = 4021, Level = LogLevel.Warning, Message = "Subscription '{Subscription}' could not take or renew its lease (failure {Failures} in a row, a transient error). It tries again after a back-off from StoreRetryDelay doubling up to StoreRetryMaxDelay, and stops handling events before a lease it could not renew may expire.")]
    public static partial void LeaseStoreUnavailable(ILogger logger, Exception exception, string subscription, int failures);

    [LoggerMessage(EventId = 4022, Level = LogLevel.Error, Message = "Subscription '{Subscription}' stopped: the store has failed with transient errors since {Since:o}, longer than MaxOutageDuration ({Limit}). It stays faulted at checkpoint {Checkpoint} until it is restarted (IEventSubscriptions.RestartAsync).")]
    public static partial void OutageLimitExceeded(ILogger logger, Exception exception, string subscription, DateTimeOffset since, TimeSpan limit, long checkpoint);
}
