using Patterns.Orchestration.History;

namespace Patterns.Orchestration;

/// <summary>An activity task: travels on the activity queue from the workflow to a worker.</summary>
/// <param name="InstanceId">The workflow instance.</param>
/// <param name="Run">The instance's run.</param>
/// <param name="Seq">The activity's sequence number in the run.</param>
/// <param name="Activity">The activity's name.</param>
/// <param name="Input">The serialized input, or null.</param>
/// <param name="Settings">Timeouts and retries, or null for the defaults.</param>
public sealed record ActivityTask(string InstanceId, int Run, int Seq, string Activity, byte[]? Input, ActivitySettings? Settings)
{
    /// <summary>Gets whether the task was sent again after a restart (the worker then reads the attempt it had reached).</summary>
    public bool Resent { get; init; }

    /// <summary>Gets the instance's incarnation: tells it from an earlier instance with the same id that was purged.</summary>
    public long Incarnation { get; init; }
}

/// <summary>An activity's outcome: travels on the result queue from a worker back to the workflow.</summary>
/// <param name="InstanceId">The workflow instance.</param>
/// <param name="Run">The instance's run.</param>
/// <param name="Seq">The activity's sequence number in the run.</param>
/// <param name="Result">The serialized result, or null.</param>
/// <param name="Error">The failure's message, or null when it succeeded.</param>
/// <param name="ErrorType">The failure's exception type name, or null.</param>
public sealed record ActivityResult(string InstanceId, int Run, int Seq, byte[]? Result, string? Error, string? ErrorType)
{
    /// <summary>Gets whether the activity was retried (its attempt record is then removed with the result's commit).</summary>
    public bool Retried { get; init; }
}

/// <summary>Tells every worker to cancel the running attempt of an activity its workflow stopped waiting for (published on <see cref="OrchestrationOptions.CancellationTopic"/>).</summary>
/// <param name="InstanceId">The workflow instance.</param>
/// <param name="Run">The instance's run.</param>
/// <param name="Seq">The activity's sequence number, or null for every activity of the run (it ended).</param>
public sealed record ActivityCancellation(string InstanceId, int Run, int? Seq)
{
    /// <summary>Gets the instance's incarnation (see <see cref="ActivityTask.Incarnation"/>).</summary>
    public long Incarnation { get; init; }
}
