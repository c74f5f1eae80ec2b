using Microsoft.Extensions.Logging;

namespace Patterns.Streaming;

internal static partial class StreamingLog
{
    [LoggerMessage(EventId = 3101, Level = LogLevel.Warning, Message = "Stream '{Pipeline}': stage {Stage} skipped an element; it is dead-lettered.")]
    public static partial void DeadLettered(ILogger logger, Exception exception, string pipeline, string stage);

    [LoggerMessage(EventId = 3102, Level = LogLevel.Error, Message = "Stream '{Pipeline}': the dead-letter callback failed for stage {Stage}; the element is recorded only in this log.")]
    public static partial void DeadLetterCallbackFailed(ILogger logger, Exception exception, string pipeline, string stage);

    [LoggerMessage(EventId = 3103, Level = LogLevel.Error, Message = "Stream '{Pipeline}' failed and stops.")]
    public static partial void PipelineFailed(ILogger logger, Exception exception, string pipeline);

    [LoggerMessage(EventId = 3104, Level = LogLevel.Information, Message = "Stream '{Pipeline}' restored {Operators} operator state(s) from its snapshot.")]
    public static partial void Restored(ILogger logger, string pipeline, int operators);

    [LoggerMessage(EventId = 3105, Level = LogLevel.Information, Message = "Stream '{Pipeline}' stopped and saved {Operators} operator state(s).")]
    public static partial void Saved(ILogger logger, string pipeline, int operators);

    [LoggerMessage(EventId = 3106, Level = LogLevel.Debug, Message = "Stream '{Pipeline}': window stage {Stage} received a late event at {Timestamp} (watermark {Watermark}).")]
    public static partial void LateEvent(ILogger logger, string pipeline, string stage, DateTimeOffset timestamp, DateTimeOffset watermark);

    [LoggerMessage(EventId = 3107, Level = LogLevel.Information, Message = "Started {Pipelines} stream pipeline(s).")]
    public static partial void PipelinesStarted(ILogger logger, int pipelines);

    [LoggerMessage(EventId = 3108, Level = LogLevel.Warning, Message = "Stream '{Pipeline}' lost its lease: another process runs it now; this one stands by.")]
    public static partial void LeaseLost(ILogger logger, string pipeline);

    [LoggerMessage(EventId = 3109, Level = LogLevel.Warning, Message = "Stream '{Pipeline}': the store failed while taking or renewing the pipeline's lease.")]
    public static partial void LeaseError(ILogger logger, Exception exception, string pipeline);

    [LoggerMessage(EventId = 3110, Level = LogLevel.Debug, Message = "Stream '{Pipeline}' committed snapshot {Commit}; it acknowledges {Messages} message(s).")]
    public static partial void Committed(ILogger logger, string pipeline, int commit, int messages);

    [LoggerMessage(EventId = 3111, Level = LogLevel.Debug, Message = "Stream '{Pipeline}': message {MessageId} came again, but a committed snapshot includes it (its acknowledgement was lost); it is acknowledged without entering the pipeline.")]
    public static partial void AlreadyIncluded(ILogger logger, string pipeline, Guid messageId);

    [LoggerMessage(EventId = 3112, Level = LogLevel.Warning, Message = "Stream '{Pipeline}': message {MessageId}, which a committed snapshot includes, entered the pipeline again (a copy sent again, not a redelivery); the snapshot that would have counted it twice is not committed, and the run starts again from the last one. The copy comes back as a redelivery and is acknowledged without entering the pipeline.")]
    public static partial void CopyTakenAgain(ILogger logger, string pipeline, string messageId);
}

/// <summary>Names used by stream telemetry.</summary>
internal static class StreamingTelemetry
{
    public const string System = "patterns.stream";

    public static readonly System.Diagnostics.Metrics.Counter<long> LateEvents = Telemetry.PatternsTelemetry.Meter.CreateCounter<long>(
        "patterns.stream.late_events", "{event}", "Events that arrived after their windows closed for good (sent to the late output).");
}
