using System.Diagnostics.Metrics;

namespace Patterns.Sqlite;

/// <summary>The names to subscribe to when collecting the SQLite store's metrics with OpenTelemetry.</summary>
/// <remarks>
/// <c>AddMeter(SqliteDiagnostics.MeterName)</c>. Instruments: <c>patterns.sqlite.commits</c> (transactions committed by
/// the writer), <c>patterns.sqlite.commit.writes</c> (writes per commit: how well group commit is batching) and
/// <c>patterns.sqlite.commit.duration</c> (seconds from <c>BEGIN</c> to the end of <c>COMMIT</c>, the WAL sync included).
/// Nothing is recorded while nobody listens.
/// </remarks>
public static class SqliteDiagnostics
{
    /// <summary>The name of the package's <see cref="Meter"/>.</summary>
    public const string MeterName = "Patterns.Sqlite";

    internal static readonly Meter Meter = new(MeterName, typeof(SqliteDiagnostics).Assembly.GetName().Version?.ToString());

    internal static readonly Counter<long> Commits = Meter.CreateCounter<long>(
        "patterns.sqlite.commits", "{transaction}", "Transactions committed by the SQLite store's writer.");

    internal static readonly Histogram<int> CommitWrites = Meter.CreateHistogram<int>(
        "patterns.sqlite.commit.writes", "{write}", "Writes (appends, deletes, checkpoints, documents, inbox marks) committed together in one transaction.");

    internal static readonly Histogram<double> CommitDuration = Meter.CreateHistogram<double>(
        "patterns.sqlite.commit.duration", "s", "Time from BEGIN to the end of COMMIT, including the write-ahead log sync.");
}
