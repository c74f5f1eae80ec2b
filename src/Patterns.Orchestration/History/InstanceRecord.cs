using System.Text.Json.Serialization;

namespace Patterns.Orchestration.History;

/// <summary>
/// The instance index document: one per instance, written in the same unit of work as the history it summarizes. Fields
/// that are null (and a parent sequence of 0) are left out of the JSON and read back as null (0): an in-memory store keeps
/// every record, each fired timer, completion or custom status writes a new one, and the young collections copy every
/// byte of it (the empty fields were about 110 of a running instance's 240 bytes).
/// </summary>
internal sealed class InstanceRecord
{
    public const string Collection = "orchestration-instances";

    [JsonPropertyName("id")]
    public required string Id { get; init; }

    [JsonPropertyName("type")]
    public required string Type { get; set; }

    [JsonPropertyName("run")]
    public int Run { get; set; } = 1;

    [JsonPropertyName("status")]
    public WorkflowStatus Status { get; set; }

    [JsonPropertyName("created")]
    public DateTimeOffset CreatedAt { get; set; }

    /// <summary>Gets a random number drawn when the instance is created: tells its activity tasks and cancellations from those of an earlier instance with the same id (purged since).</summary>
    [JsonPropertyName("inc")]
    public long Incarnation { get; set; }

    [JsonPropertyName("closed")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public DateTimeOffset? ClosedAt { get; set; }

    [JsonPropertyName("custom")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public byte[]? CustomStatus { get; set; }

    [JsonPropertyName("result")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public byte[]? Result { get; set; }

    [JsonPropertyName("error")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Error { get; set; }

    [JsonPropertyName("errorType")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? ErrorType { get; set; }

    [JsonPropertyName("parent")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? ParentId { get; set; }

    [JsonPropertyName("parentSeq")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public int ParentSeq { get; set; }

    /// <summary>The input of a run that was continued-as-new but not started yet (a crash in between is recovered from it).</summary>
    [JsonPropertyName("next")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public byte[]? NextInput { get; set; }

    public WorkflowInstanceInfo ToInfo() => new(Id, Type, Run, Status, CreatedAt, ClosedAt, Error) { CustomStatusPayload = CustomStatus };

    public InstanceRecord Clone() => (InstanceRecord)MemberwiseClone();
}

/// <summary>A pending durable timer, in the due-time index; removed when it fires.</summary>
internal sealed class TimerRecord
{
    public const string Collection = "orchestration-timers";

    [JsonPropertyName("id")]
    public required string InstanceId { get; init; }

    [JsonPropertyName("run")]
    public int Run { get; init; }

    [JsonPropertyName("seq")]
    public int Seq { get; init; }

    [JsonPropertyName("due")]
    public long DueTicks { get; init; }

    /// <summary>Gets how many times its firing failed in this process (kept in memory only: it sets the retry's delay).</summary>
    [JsonIgnore]
    public int FailedFirings { get; init; }

    public static string Key(string instanceId, int run, int seq) => $"{instanceId}|{run}|{seq}";
}

/// <summary>An activity's attempt number once it is retried: read when its task is delivered again after a crash, so retries keep counting.</summary>
internal sealed class AttemptRecord
{
    public const string Collection = "orchestration-attempts";

    /// <summary>Gets the attempt to run next (the one a crash interrupted runs again under its own number).</summary>
    [JsonPropertyName("a")]
    public int Attempt { get; init; }

    /// <summary>Gets when that attempt may start (the end of the retry's backoff), in UTC ticks.</summary>
    [JsonPropertyName("nb")]
    public long NotBeforeTicks { get; init; }
}

/// <summary>A request for an instance that another process owns, handed over through the store (its partition's mailbox).</summary>
internal sealed class HandedOffItem
{
    public const string CollectionPrefix = "orchestration-mailbox-";

    [JsonPropertyName("id")]
    public required string InstanceId { get; init; }

    /// <summary>Gets what it is: <c>s</c>tart, <c>e</c>vent, <c>t</c>erminate or <c>r</c>esume.</summary>
    [JsonPropertyName("k")]
    public required string Kind { get; init; }

    [JsonPropertyName("w")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? WorkflowType { get; init; }

    [JsonPropertyName("in")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public byte[]? Input { get; init; }

    [JsonPropertyName("pi")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? ParentId { get; init; }

    [JsonPropertyName("ps")]
    public int ParentSeq { get; init; }

    [JsonPropertyName("ev")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public HistoryEvent? Event { get; init; }

    [JsonPropertyName("run")]
    public int Run { get; init; }

    [JsonPropertyName("rt")]
    public bool Retried { get; init; }

    [JsonPropertyName("why")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Reason { get; init; }
}
