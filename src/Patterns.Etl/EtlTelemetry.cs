using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;

namespace Patterns.Etl;

/// <summary>The names of the ETL package's <see cref="Meter"/> and <see cref="ActivitySource"/>.</summary>
public static class EtlDiagnostics
{
    /// <summary>The meter's name: <c>Patterns.Etl</c>.</summary>
    public const string MeterName = "Patterns.Etl";

    /// <summary>The activity source's name: <c>Patterns.Etl</c>.</summary>
    public const string ActivitySourceName = "Patterns.Etl";
}

/// <summary>The package's meter and instruments; each measurement is tagged with the job.</summary>
internal static class EtlTelemetry
{
    private static readonly string Version = typeof(EtlTelemetry).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    public static readonly ActivitySource Source = new(EtlDiagnostics.ActivitySourceName, Version);

    public static readonly Meter Meter = new(EtlDiagnostics.MeterName, Version);

    public static readonly Counter<long> RowsRead = Meter.CreateCounter<long>("patterns.etl.rows.read", "{row}", "Rows read from sources.");

    public static readonly Counter<long> RowsLoaded = Meter.CreateCounter<long>("patterns.etl.rows.loaded", "{row}", "Rows handed to sinks and committed.");

    public static readonly Counter<long> RowsChanged = Meter.CreateCounter<long>("patterns.etl.rows.changed", "{row}", "Rows inserted, updated or deleted in targets (tag patterns.etl.change).");

    public static readonly Counter<long> RowsQuarantined = Meter.CreateCounter<long>("patterns.etl.rows.quarantined", "{row}", "Rows set aside as malformed or invalid.");

    public static readonly Counter<long> StageRows = Meter.CreateCounter<long>("patterns.etl.stage.rows", "{row}", "Rows each stage handed on (tag patterns.etl.stage: source, stage n (kind), sink), added as each batch is loaded.");

    public static readonly Histogram<double> BatchDuration = Meter.CreateHistogram<double>("patterns.etl.batch.duration", "s", "Time to load and commit one batch.");

    public static readonly Histogram<double> RunDuration = Meter.CreateHistogram<double>("patterns.etl.run.duration", "s", "Time a run took.");

    public const string JobTag = "patterns.etl.job";

    public const string ChangeTag = "patterns.etl.change";

    public const string StatusTag = "patterns.etl.status";

    public const string StageTag = "patterns.etl.stage";

    public static TagList Tags(string job) => new() { { JobTag, job } };
}

internal static partial class EtlLog
{
    [LoggerMessage(1, LogLevel.Information, "ETL job '{Job}' partition '{Partition}' run {RunId} started, resuming at offset {Offset}.")]
    public static partial void Started(ILogger logger, string job, string partition, string runId, long offset);

    [LoggerMessage(2, LogLevel.Information, "ETL job '{Job}' partition '{Partition}' run {RunId} {Status}: {Read} read, {Inserted} inserted, {Updated} updated, {Deleted} deleted, {Quarantined} quarantined in {Duration}.")]
    public static partial void Finished(ILogger logger, string job, string partition, string runId, EtlRunStatus status, long read, long inserted, long updated, long deleted, long quarantined, TimeSpan duration);

    [LoggerMessage(3, LogLevel.Error, "ETL job '{Job}' partition '{Partition}' run {RunId} failed after {Read} rows read; the next run resumes at the last committed batch.")]
    public static partial void Failed(ILogger logger, Exception exception, string job, string partition, string runId, long read);

    [LoggerMessage(4, LogLevel.Warning, "ETL job '{Job}' run {RunId} quarantined a row at line {Line} of {Source} in stage {Stage}: {Error}")]
    public static partial void Quarantined(ILogger logger, string job, string runId, long line, string source, string stage, string error);

    [LoggerMessage(5, LogLevel.Information, "ETL job '{Job}' partition '{Partition}' was loaded to its end by an earlier run; nothing to do (set Restart to load it again).")]
    public static partial void AlreadyCompleted(ILogger logger, string job, string partition);

    [LoggerMessage(6, LogLevel.Error, "ETL job '{Job}' failed in its scheduled run.")]
    public static partial void ScheduledRunFailed(ILogger logger, Exception exception, string job);

    [LoggerMessage(7, LogLevel.Information, "ETL job '{Job}' handed {Count} messages of {Source} back to the transport: no committed batch covered them; they will be delivered again.")]
    public static partial void HandedBack(ILogger logger, string job, int count, string source);

    [LoggerMessage(8, LogLevel.Information, "ETL job '{Job}' acknowledged {Count} messages of {Source} without loading them: a committed batch already recorded them (delivered again after a crash).")]
    public static partial void SkippedConsumed(ILogger logger, string job, int count, string source);

    [LoggerMessage(9, LogLevel.Warning, "ETL job '{Job}' could not delete its spill files at {Path}; a later spill removes the folder once no run holds it.")]
    public static partial void SpillCleanupFailed(ILogger logger, Exception exception, string job, string path);

    [LoggerMessage(10, LogLevel.Warning, "ETL job '{Job}' could not release a resource of its stages when the run ended.")]
    public static partial void DisposeFailed(ILogger logger, Exception exception, string job);

    [LoggerMessage(11, LogLevel.Warning, "ETL job '{Job}' failed on an outage no message caused (a dimension or build side that cannot be read, a stage past its budget), failing since {Since:o}; {Consequence}, and the next run tries again.")]
    public static partial void OutageRun(ILogger logger, Exception exception, string job, DateTimeOffset since, string consequence);

    [LoggerMessage(12, LogLevel.Error, "ETL job '{Job}' stopped: its runs have failed on an outage no message caused since {Since:o}, longer than MaxOutageDuration ({Limit}). It runs again only on demand (IEtlJobs.RunAsync), and its schedule resumes once such a run succeeds; {Consequence}.")]
    public static partial void OutageLimitExceeded(ILogger logger, Exception exception, string job, DateTimeOffset since, TimeSpan limit, string consequence);

    [LoggerMessage(13, LogLevel.Information, "ETL job '{Job}' partition '{Partition}' run {RunId} failed on an outage no message caused after {Read} rows read; the next run resumes at the last committed batch.")]
    public static partial void FailedOnOutage(ILogger logger, Exception exception, string job, string partition, string runId, long read);
}
