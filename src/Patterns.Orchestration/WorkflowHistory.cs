using System.Text.Json;
using Patterns.Orchestration.History;

namespace Patterns.Orchestration;

/// <summary>One run's history, as read from the store: what <see cref="WorkflowReplayer"/> checks new code against.</summary>
/// <param name="InstanceId">The instance.</param>
/// <param name="WorkflowType">The workflow's registered name.</param>
/// <param name="Run">The run.</param>
/// <param name="Events">The events, in order.</param>
public sealed record WorkflowHistory(string InstanceId, string WorkflowType, int Run, IReadOnlyList<HistoryEvent> Events)
{
    /// <summary>Writes the history as JSON (one file per instance, for example, kept with the tests).</summary>
    /// <returns>The JSON.</returns>
    public string ToJson()
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            writer.WriteStartObject();
            writer.WriteString("instanceId", InstanceId);
            writer.WriteString("workflowType", WorkflowType);
            writer.WriteNumber("run", Run);
            writer.WritePropertyName("events");
            JsonSerializer.Serialize(writer, Events as List<HistoryEvent> ?? [.. Events], OrchestrationJson.Default.ListHistoryEvent);
            writer.WriteEndObject();
        }

        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>Reads a history written by <see cref="ToJson"/>.</summary>
    /// <param name="json">The JSON.</param>
    /// <returns>The history.</returns>
    /// <exception cref="FormatException">The JSON is not a workflow history.</exception>
    public static WorkflowHistory FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            using var document = JsonDocument.Parse(json);
            var root = document.RootElement;
            var events = root.GetProperty("events").Deserialize(OrchestrationJson.Default.ListHistoryEvent) ?? [];
            return new WorkflowHistory(root.GetProperty("instanceId").GetString()!, root.GetProperty("workflowType").GetString()!, root.GetProperty("run").GetInt32(), events);
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new FormatException("The text is not a workflow history written by WorkflowHistory.ToJson: " + ex.Message, ex);
        }
    }
}
