using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Runtime;

/// <summary>Something for one instance's workflow task to do; completes once its effect is committed (or refused).</summary>
internal abstract class WorkItem
{
    private readonly TaskCompletionSource<object?> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Task<object?> Done => _done.Task;

    public void Complete(object? result = null) => _done.TrySetResult(result);

    public void Fail(Exception error) => _done.TrySetException(error);
}

/// <summary>Start a run (idempotent: an existing instance is left as it is).</summary>
internal sealed class StartItem(string workflowType, byte[]? input, string? parentId, int parentSeq) : WorkItem
{
    public string WorkflowType { get; } = workflowType;

    public byte[]? Input { get; } = input;

    public string? ParentId { get; } = parentId;

    public int ParentSeq { get; } = parentSeq;
}

/// <summary>An incoming history event: an activity result, a timer, a signal, an update, a cancellation or a child's end.</summary>
internal sealed class EventItem(HistoryEvent incoming) : WorkItem
{
    public HistoryEvent Event { get; } = incoming;

    /// <summary>Gets the run the event is for (activity results and timers), or 0 for the current run.</summary>
    public int Run { get; init; }

    /// <summary>Gets whether the activity was retried: its attempt record goes with the commit.</summary>
    public bool Retried { get; init; }

    /// <summary>Gets the timer that fired, armed again if the workflow task that records its firing fails.</summary>
    public TimerRecord? Timer { get; init; }
}

/// <summary>Run a query handler against the instance's state.</summary>
internal sealed class QueryItem(string name) : WorkItem
{
    public string Name { get; } = name;
}

/// <summary>End the instance without running its code.</summary>
internal sealed class TerminateItem(string? reason) : WorkItem
{
    public string? Reason { get; } = reason;
}

/// <summary>Load the instance and re-dispatch what it waits for (after a restart, or to resume a faulted instance).</summary>
internal sealed class ResumeItem : WorkItem;

/// <summary>The instance's code escaped its scheduler: fail the workflow task.</summary>
internal sealed class EscapeItem : WorkItem;
