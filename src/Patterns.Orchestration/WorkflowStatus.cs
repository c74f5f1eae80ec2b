namespace Patterns.Orchestration;

/// <summary>Where a workflow instance stands.</summary>
public enum WorkflowStatus
{
    /// <summary>The instance is running or waiting (for an activity, a timer, a signal).</summary>
    Running = 0,

    /// <summary>The workflow returned a result.</summary>
    Completed = 1,

    /// <summary>The workflow threw an exception.</summary>
    Failed = 2,

    /// <summary>The workflow ended after cancellation was requested.</summary>
    Canceled = 3,

    /// <summary>The instance was terminated by a client; its code did not run to the end.</summary>
    Terminated = 4,

    /// <summary>
    /// A workflow task failed: the code broke a determinism rule or does not match the history (after a code change).
    /// Nothing was recorded; the instance resumes from its history when the host restarts with fixed code, or on
    /// <see cref="IWorkflowClient.ResumeAsync"/>.
    /// </summary>
    Faulted = 5,
}

/// <summary>A summary of one workflow instance.</summary>
/// <param name="InstanceId">The instance id.</param>
/// <param name="WorkflowType">The workflow type's registered name.</param>
/// <param name="Run">The current run: 1, plus one per continue-as-new.</param>
/// <param name="Status">The status.</param>
/// <param name="CreatedAt">When the instance was started.</param>
/// <param name="ClosedAt">When it completed, failed, was cancelled or terminated; null while running.</param>
/// <param name="Error">The failure's message, for failed and faulted instances.</param>
public sealed record WorkflowInstanceInfo(
    string InstanceId, string WorkflowType, int Run, WorkflowStatus Status, DateTimeOffset CreatedAt, DateTimeOffset? ClosedAt, string? Error)
{
    /// <summary>Gets the serialized custom status set by <see cref="WorkflowContext.SetCustomStatus"/>, or null.</summary>
    public ReadOnlyMemory<byte>? CustomStatusPayload { get; init; }
}
