using Microsoft.Extensions.Logging;

namespace Patterns.Orchestration;

internal static partial class OrchestrationLog
{
    [LoggerMessage(EventId = 7001, Level = LogLevel.Error, Message = "A workflow task of instance '{InstanceId}' failed.")]
    public static partial void WorkflowTaskFailed(ILogger logger, string instanceId, Exception exception);

    [LoggerMessage(EventId = 7002, Level = LogLevel.Error, Message = "Workflow instance '{InstanceId}' is faulted: its code broke a determinism rule or does not match its history. Fix the code; it resumes at the next start or on ResumeAsync.")]
    public static partial void WorkflowFaulted(ILogger logger, string instanceId, Exception exception);

    [LoggerMessage(EventId = 7003, Level = LogLevel.Warning, Message = "Activity '{Activity}' of instance '{InstanceId}' could not be sent; it is sent again when the instance resumes.")]
    public static partial void DispatchFailed(ILogger logger, string instanceId, string activity, Exception exception);

    [LoggerMessage(EventId = 7004, Level = LogLevel.Information, Message = "Activity '{Activity}' of instance '{InstanceId}' failed attempt {Attempt}; retrying.")]
    public static partial void ActivityRetry(ILogger logger, string activity, string instanceId, int attempt, Exception exception);

    [LoggerMessage(EventId = 7005, Level = LogLevel.Error, Message = "Recovering workflow instances at start failed.")]
    public static partial void RecoveryFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 7006, Level = LogLevel.Warning, Message = "This process lost workflow partition {Partition} to '{Owner}'; its instances run there now.")]
    public static partial void PartitionLost(ILogger logger, int partition, string owner);

    [LoggerMessage(EventId = 7007, Level = LogLevel.Warning, Message = "Taking or renewing the lease of workflow partition {Partition} failed; trying again.")]
    public static partial void OwnershipFailed(ILogger logger, int partition, Exception exception);

    [LoggerMessage(EventId = 7011, Level = LogLevel.Warning, Message = "Announcing this process to the others that balance workflow partitions failed; trying again.")]
    public static partial void MembershipFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 7012, Level = LogLevel.Warning, Message = "Watching the store for requests handed over and for the ends of instances other processes run failed; trying again (meanwhile they are read every HandoffInterval).")]
    public static partial void WatchFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 7008, Level = LogLevel.Warning, Message = "A request handed over from another process for instance '{InstanceId}' was refused.")]
    public static partial void HandOffRefused(ILogger logger, string instanceId, Exception exception);

    [LoggerMessage(EventId = 7013, Level = LogLevel.Warning, Message = "A commit of instance '{InstanceId}' reported an error but is in the store; the instance goes on from it.")]
    public static partial void CommitLandedDespiteError(ILogger logger, string instanceId, Exception exception);

    [LoggerMessage(EventId = 7014, Level = LogLevel.Warning, Message = "The workflow task that records timer {Seq} of instance '{InstanceId}' failed; the timer fires again in {Delay}.")]
    public static partial void TimerRetried(ILogger logger, string instanceId, int seq, TimeSpan delay);
}
