using System.Globalization;
using Patterns.Orchestration.History;

namespace Patterns.Orchestration;

/// <summary>
/// The workflow code does not match the instance's history: replaying it made a different decision than the one recorded
/// (a step reordered, renamed, added or removed, or a changed input). Names the first mismatching history event and its index.
/// </summary>
public sealed class NonDeterminismException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="NonDeterminismException"/> class.</summary>
    /// <param name="instanceId">The instance.</param>
    /// <param name="eventIndex">The zero-based index, in the run's history, of the first event that does not match.</param>
    /// <param name="recorded">The history event at that index, or null when the history has none there.</param>
    /// <param name="actual">What the code did instead, or null when it did nothing there.</param>
    public NonDeterminismException(string instanceId, long eventIndex, HistoryEvent? recorded, string? actual)
        : base(string.Create(
            CultureInfo.InvariantCulture,
            $"Workflow instance '{instanceId}' does not match its history at event {eventIndex}: the history records {(recorded is null ? "no further command" : recorded.ToString())}, but the code {(actual is null ? "made no such command" : "made " + actual)}. Was the workflow changed without ctx.Patched(...)?"))
    {
        InstanceId = instanceId;
        EventIndex = eventIndex;
        Recorded = recorded;
        Actual = actual;
    }

    /// <summary>Gets the instance.</summary>
    public string InstanceId { get; }

    /// <summary>Gets the zero-based index of the first mismatching event in the run's history (its stream version minus one).</summary>
    public long EventIndex { get; }

    /// <summary>Gets the recorded event at <see cref="EventIndex"/>, or null.</summary>
    public HistoryEvent? Recorded { get; }

    /// <summary>Gets a description of what the code did instead, or null.</summary>
    public string? Actual { get; }
}

/// <summary>
/// The workflow code broke a determinism rule: it left the workflow's scheduler (<c>Task.Run</c>, <c>Task.Delay</c>,
/// <c>ConfigureAwait(false)</c>, I/O) or called the <see cref="WorkflowContext"/> from another thread. The workflow task fails;
/// nothing it did is recorded.
/// </summary>
public sealed class WorkflowDeterminismException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="WorkflowDeterminismException"/> class.</summary>
    /// <param name="instanceId">The instance.</param>
    /// <param name="problem">What the code did.</param>
    public WorkflowDeterminismException(string instanceId, string problem)
        : base($"Workflow instance '{instanceId}' broke a determinism rule: {problem}.")
    {
        InstanceId = instanceId;
    }

    /// <summary>Gets the instance.</summary>
    public string InstanceId { get; }
}

/// <summary>An activity failed after its last attempt; the workflow sees this from the awaited call.</summary>
public sealed class ActivityFailureException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="ActivityFailureException"/> class.</summary>
    /// <param name="activity">The activity's name.</param>
    /// <param name="errorType">The full name of the exception type the activity threw.</param>
    /// <param name="message">The exception's message.</param>
    public ActivityFailureException(string activity, string? errorType, string? message)
        : base($"Activity '{activity}' failed: {errorType}: {message}")
    {
        Activity = activity;
        ErrorType = errorType;
        ErrorMessage = message;
    }

    /// <summary>Gets the activity's name.</summary>
    public string Activity { get; }

    /// <summary>Gets the full name of the exception type the activity threw.</summary>
    public string? ErrorType { get; }

    /// <summary>Gets the activity exception's message.</summary>
    public string? ErrorMessage { get; }
}

/// <summary>A child workflow failed, was cancelled or terminated.</summary>
public sealed class ChildWorkflowFailureException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="ChildWorkflowFailureException"/> class.</summary>
    /// <param name="instanceId">The child instance.</param>
    /// <param name="message">Why it failed.</param>
    public ChildWorkflowFailureException(string instanceId, string? message)
        : base($"Child workflow '{instanceId}' failed: {message}") => InstanceId = instanceId;

    /// <summary>Gets the child instance id.</summary>
    public string InstanceId { get; }
}

/// <summary>A workflow instance ended without a result: it failed, was cancelled, terminated, or its workflow task faulted.</summary>
public sealed class WorkflowFailedException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="WorkflowFailedException"/> class.</summary>
    /// <param name="instanceId">The instance.</param>
    /// <param name="status">How it ended.</param>
    /// <param name="error">The failure's message, if any.</param>
    public WorkflowFailedException(string instanceId, WorkflowStatus status, string? error)
        : base($"Workflow instance '{instanceId}' ended {status}{(error is null ? "." : ": " + error)}")
    {
        InstanceId = instanceId;
        Status = status;
        Error = error;
    }

    /// <summary>Gets the instance.</summary>
    public string InstanceId { get; }

    /// <summary>Gets how it ended.</summary>
    public WorkflowStatus Status { get; }

    /// <summary>Gets the failure's message, if any.</summary>
    public string? Error { get; }
}

/// <summary>No workflow instance has this id.</summary>
public sealed class WorkflowNotFoundException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="WorkflowNotFoundException"/> class.</summary>
    /// <param name="instanceId">The instance id.</param>
    public WorkflowNotFoundException(string instanceId)
        : base($"No workflow instance '{instanceId}' exists.") => InstanceId = instanceId;

    /// <summary>Gets the instance id.</summary>
    public string InstanceId { get; }
}

/// <summary>Thrown by <see cref="WorkflowContext.ContinueAsNew"/>: ends the run and starts a new one with a fresh history.</summary>
internal sealed class ContinueAsNewException(byte[]? input) : Exception("The workflow continues as new.")
{
    public byte[]? Input { get; } = input;
}
