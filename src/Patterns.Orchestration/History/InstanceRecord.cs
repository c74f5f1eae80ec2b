using System.Text.Json.Serialization;

namespace Patterns.Orchestration.History;

/// <summary>The instance index document: one per instance, written in the same unit of work as the history it summarizes.</summary>
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

    [JsonPropertyName("closed")]
    public DateTimeOffset? ClosedAt { get; set; }

    [JsonPropertyName("custom")]
    public byte[]? CustomStatus { get; set; }

    [JsonPropertyName("result")]
    public byte[]? Result { get; set; }

    [JsonPropertyName("error")]
    public string? Error { get; set; }

    [JsonPropertyName("errorType")]
    public string? ErrorType { get; set; }

    [JsonPropertyName("parent")]
    public string? ParentId { get; set; }

    [JsonPropertyName("parentSeq")]
    public int ParentSeq { get; set; }

    /// <summary>The input of a run that was continued-as-new but not started yet (a crash in between is recovered from it).</summary>
    [JsonPropertyName("next")]
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

    public static string Key(string instanceId, int run, int seq) => $"{instanceId}|{run}|{seq}";
}
