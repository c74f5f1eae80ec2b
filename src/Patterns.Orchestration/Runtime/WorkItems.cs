using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Runtime;

/// <summary>Something for one instance's workflow task to do; completes once its effect is committed (or refused).</summary>
/// <remarks>
/// The task that reports the outcome is created only when someone asks for it (<see cref="Done"/>): a fired timer, a
/// child's outcome for its parent or a child's start are never awaited, and a completion source with its task for each
/// was a good part of what a timer's firing allocated.
/// </remarks>
internal abstract class WorkItem
{
    // Null while pending and unobserved; the completion source once observed; otherwise the outcome, when it came first
    // (Succeeded for a null result, a Failure, or a Result holding any other result).
    private static readonly object Succeeded = new();
    private object? _state;

    public Task<object?> Done
    {
        get
        {
            while (true)
            {
                switch (Volatile.Read(ref _state))
                {
                    case TaskCompletionSource<object?> observed:
                        return observed.Task;
                    case Failure failure:
                        return Task.FromException<object?>(failure.Error);
                    case Result result:
                        return Task.FromResult<object?>(result.Value);
                    case { }:
                        return Task.FromResult<object?>(null);
                }

                var completion = new TaskCompletionSource<object?>(TaskCreationOptions.RunContinuationsAsynchronously);
                if (Interlocked.CompareExchange(ref _state, completion, null) is null)
                {
                    return completion.Task;
                }
            }
        }
    }

    public void Complete(object? result = null) => Settle(result is null ? Succeeded : new Result(result), result, null);

    public void Fail(Exception error) => Settle(new Failure(error), null, error);

    private void Settle(object outcome, object? result, Exception? error)
    {
        while (true)
        {
            var state = Volatile.Read(ref _state);
            if (state is TaskCompletionSource<object?> observed)
            {
                if (error is null)
                {
                    observed.TrySetResult(result);
                }
                else
                {
                    observed.TrySetException(error);
                }

                return;
            }

            if (state is not null || Interlocked.CompareExchange(ref _state, outcome, null) is null)
            {
                return; // settled already (the first outcome wins, as with TrySet), or settled now
            }
        }
    }

    private sealed class Result(object value)
    {
        public object Value { get; } = value;
    }

    private sealed class Failure(Exception error)
    {
        public Exception Error { get; } = error;
    }
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
