using System.Globalization;
using System.Text.Json.Serialization;

namespace Patterns.Orchestration.History;

/// <summary>The kinds of events in a workflow instance's history.</summary>
/// <remarks>
/// Incoming events record what happened to the instance (it started, an activity completed, a timer fired, a signal
/// arrived); commands record what the workflow code decided (schedule an activity, start a timer). Replay feeds the
/// incoming events back to the code and checks that it makes the same commands, in the same order.
/// </remarks>
public enum HistoryEventKind
{
    /// <summary>The run started (incoming): the workflow type and its input.</summary>
    Started = 1,

    /// <summary>An activity returned (incoming).</summary>
    ActivityCompleted = 2,

    /// <summary>An activity failed after its last attempt (incoming).</summary>
    ActivityFailed = 3,

    /// <summary>A durable timer fired (incoming).</summary>
    TimerFired = 4,

    /// <summary>A signal or correlated message arrived (incoming).</summary>
    SignalReceived = 5,

    /// <summary>An update was requested (incoming).</summary>
    UpdateRequested = 6,

    /// <summary>A child workflow completed (incoming).</summary>
    ChildCompleted = 7,

    /// <summary>A child workflow failed (incoming).</summary>
    ChildFailed = 8,

    /// <summary>Cancellation was requested (incoming).</summary>
    CancelRequested = 9,

    /// <summary>The instance was terminated without running its code (incoming, final).</summary>
    Terminated = 10,

    /// <summary>The workflow scheduled an activity (command).</summary>
    ActivityScheduled = 20,

    /// <summary>The workflow started a durable timer (command).</summary>
    TimerStarted = 21,

    /// <summary>A local activity ran inline and returned or failed (command; its result is recorded with it).</summary>
    LocalActivityCompleted = 22,

    /// <summary>The workflow started a child workflow (command).</summary>
    ChildStarted = 23,

    /// <summary>The workflow took a patched code path (command).</summary>
    PatchMarker = 24,

    /// <summary>An update handler finished (command).</summary>
    UpdateCompleted = 25,

    /// <summary>The workflow returned a result (command, final).</summary>
    Completed = 30,

    /// <summary>The workflow threw (command, final).</summary>
    Failed = 31,

    /// <summary>The workflow ended because it was cancelled (command, final).</summary>
    Canceled = 32,

    /// <summary>The workflow continued as a new run (command, final for this run).</summary>
    ContinuedAsNew = 33,
}

/// <summary>One event of a workflow instance's history, as stored in its event stream.</summary>
public sealed class HistoryEvent
{
    private int _task;

    /// <summary>Gets the kind.</summary>
    [JsonPropertyName("k")]
    public HistoryEventKind Kind { get; init; }

    /// <summary>Gets the workflow task the event belongs to: the events a single run of the workflow code received and produced.</summary>
    [JsonPropertyName("t")]
    public int Task { get => _task; init => _task = value; }

    /// <summary>Gets the operation's sequence number within the run (activities, timers, local activities, children), or 0.</summary>
    [JsonPropertyName("s")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public int Seq { get; init; }

    /// <summary>Gets the name: activity, signal, update or workflow type, or patch id.</summary>
    [JsonPropertyName("n")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Name { get; init; }

    /// <summary>Gets the serialized input or result, or null.</summary>
    [JsonPropertyName("p")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public byte[]? Payload { get; set; }

    /// <summary>Gets the failure's message, for failed events.</summary>
    [JsonPropertyName("e")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Error { get; set; }

    /// <summary>Gets the failure's exception type name, for failed events.</summary>
    [JsonPropertyName("et")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? ErrorType { get; set; }

    /// <summary>Gets an id: an update id, a child instance id, the parent instance id of a started run, or a message id.</summary>
    [JsonPropertyName("i")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Id { get; init; }

    /// <summary>Gets a time in UTC ticks: a timer's due time, or, on a task's first event, the task's deterministic clock.</summary>
    [JsonPropertyName("at")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long At { get; set; }

    /// <summary>Gets how a scheduled activity runs: timeouts and retries (not compared on replay).</summary>
    [JsonPropertyName("o")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ActivitySettings? Options { get; init; }

    /// <summary>Gets whether the event records something that happened to the instance rather than a decision of its code.</summary>
    [JsonIgnore]
    public bool IsIncoming => Kind < HistoryEventKind.ActivityScheduled;

    /// <summary>Gets whether the event ends the run.</summary>
    [JsonIgnore]
    public bool IsFinal => Kind >= HistoryEventKind.Completed || Kind == HistoryEventKind.Terminated;

    /// <summary>Records the workflow task an incoming event was delivered to (the event was made for that delivery).</summary>
    internal void Stamp(int task) => _task = task;

    /// <inheritdoc />
    public override string ToString()
    {
        var text = Kind.ToString();
        if (Name is not null)
        {
            text += $" '{Name}'";
        }

        if (Seq != 0)
        {
            text += string.Create(CultureInfo.InvariantCulture, $" #{Seq}");
        }

        if (Kind == HistoryEventKind.TimerStarted)
        {
            text += $" due {new DateTimeOffset(At, TimeSpan.Zero):O}";
        }

        return text;
    }
}

/// <summary>JSON for the history, the instance index and the timer index, without reflection.</summary>
[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(HistoryEvent))]
[JsonSerializable(typeof(InstanceRecord))]
[JsonSerializable(typeof(TimerRecord))]
[JsonSerializable(typeof(AttemptRecord))]
[JsonSerializable(typeof(HandedOffItem))]
[JsonSerializable(typeof(List<HistoryEvent>))]
internal sealed partial class OrchestrationJson : JsonSerializerContext;
