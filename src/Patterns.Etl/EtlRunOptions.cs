using Microsoft.Extensions.Logging;
using Patterns.Storage;

namespace Patterns.Etl;

/// <summary>Options of one ETL run.</summary>
public sealed class EtlRunOptions
{
    /// <summary>Gets or sets the partition to load (a date, a key range, a file): with the job's name, the key of its bookmark.</summary>
    /// <value>Default <see langword="null"/>: the job's single partition.</value>
    public string? Partition { get; set; }

    /// <summary>Gets or sets the rows per batch: each batch is one load (one COPY, one transaction) and one bookmark.</summary>
    /// <value>Default <see langword="null"/>: the sink's <see cref="EtlSink{T}.PreferredBatchSize"/>.</value>
    public int? BatchSize { get; set; }

    /// <summary>
    /// Gets or sets how many sealed batches may wait while one is being loaded. The pipeline holds at most
    /// <c>BatchSize × (MaxPendingBatches + 1)</c> rows; when that many are held, the source waits.
    /// </summary>
    /// <value>Default 1: one batch fills while the previous one loads.</value>
    public int MaxPendingBatches { get; set; } = 1;

    /// <summary>
    /// Gets or sets the most bytes in a batch, as the sink measures rows (<see cref="EtlSink{T}.RowSize"/>: the schema's
    /// <see cref="EtlSchema{T}.EstimateSize"/> for table and file sinks) or as <see cref="EtlPipeline{T}.WithRowSize"/> says.
    /// A batch is sealed at <see cref="BatchSize"/> rows or at the row that brings it to this many bytes, whichever comes
    /// first, and at most <c>MaxPendingBatches + 1</c> sealed batches are held: the pipeline then holds at most about
    /// <c>(MaxPendingBatches + 2) × MaxBatchBytes</c> in its batches, however large the rows are. From a queue or
    /// subscription (whose message's rows are committed together) a batch never passes it: the open batch is committed
    /// just before a message whose rows would, and a message whose rows alone pass it fails the run and is dead-lettered
    /// after <c>maxDeliveries</c>.
    /// </summary>
    /// <value>Default <see langword="null"/>: batches are bounded in rows only.</value>
    public long? MaxBatchBytes { get; set; }

    /// <summary>Gets or sets a value indicating whether to ignore the bookmark and load the partition from the start (a backfill).</summary>
    /// <value>Default <see langword="false"/>.</value>
    public bool Restart { get; set; }

    /// <summary>
    /// Gets or sets a value indicating whether each batch commits the source's bookmark (when the sink stores bookmarks).
    /// Without bookmarks a run always starts at the beginning of the source: for one-off loads.
    /// </summary>
    /// <value>Default <see langword="true"/>.</value>
    public bool Bookmarks { get; set; } = true;

    /// <summary>Gets or sets the most rows the run may quarantine; one more stops the run with <see cref="EtlErrorBudgetExceededException"/>.</summary>
    /// <value>Default <see langword="null"/>: no count limit.</value>
    public long? MaxErrors { get; set; }

    /// <summary>
    /// Gets or sets the largest share of rows read that may be quarantined (0.01 for 1%). Checked once
    /// <see cref="ErrorRateMinimumRows"/> rows have been read, and at the end of the run.
    /// </summary>
    /// <value>Default <see langword="null"/>: no rate limit.</value>
    public double? MaxErrorRate { get; set; }

    /// <summary>Gets or sets how many rows must have been read before <see cref="MaxErrorRate"/> is checked during the run.</summary>
    /// <value>Default 1000.</value>
    public long ErrorRateMinimumRows { get; set; } = 1000;

    /// <summary>Gets or sets where quarantined rows go when the sink does not store them.</summary>
    /// <value>Default <see langword="null"/>: kept in memory and returned in <see cref="EtlRunResult.QuarantinedRows"/>.</value>
    public EtlQuarantine? Quarantine { get; set; }

    /// <summary>Gets or sets where progress is reported: after each batch and at the end.</summary>
    /// <value>Default <see langword="null"/>.</value>
    public IProgress<EtlProgress>? Progress { get; set; }

    /// <summary>Gets or sets the clock for durations.</summary>
    /// <value>Default <see langword="null"/>: the system clock.</value>
    public TimeProvider? TimeProvider { get; set; }

    /// <summary>Gets or sets where the run logs.</summary>
    /// <value>Default <see langword="null"/>: nowhere (on the host, the host's logging).</value>
    public ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>
    /// Gets or sets the store drivers' error classifiers a <c>Lookup</c> asks whether a failure of its dimension is an
    /// outage (the dimension is down: the message looked up is not to blame) or the row's fault. The first classifier that
    /// knows an error decides (any kind but <see cref="StorageErrorKind.Permanent"/> is an outage); an error none knows
    /// goes to the generic rules (a timeout, a socket or I/O error, a transient <see cref="System.Data.Common.DbException"/>...).
    /// Patterns.Sqlite's <c>SqliteStorageErrorClassifier</c> knows SQLite's busy, locked, I/O and cannot-open codes;
    /// Patterns.Postgres's <c>PostgresStorageErrorClassifier</c> knows PostgreSQL's connection, resource, shutdown and statement-timeout states.
    /// </summary>
    /// <value>
    /// Default <see langword="null"/>: none (on the host, an <c>AddEtl</c> job uses every <see cref="IStorageErrorClassifier"/>
    /// service: <c>UseSqlite</c> and <c>UsePostgres</c> register theirs).
    /// </value>
    public IReadOnlyList<IStorageErrorClassifier>? StorageErrorClassifiers { get; set; }

    /// <summary>A shallow copy: the same quarantine, progress, clock, logging and classifiers.</summary>
    internal EtlRunOptions Clone() => (EtlRunOptions)MemberwiseClone();

    internal List<string> Validate()
    {
        var errors = new List<string>();
        if (BatchSize is < 1 or > 1_000_000)
        {
            errors.Add($"EtlRunOptions.BatchSize must be between 1 and 1,000,000 (was {BatchSize}).");
        }

        if (MaxPendingBatches is < 0 or > 64)
        {
            errors.Add($"EtlRunOptions.MaxPendingBatches must be between 0 and 64 (was {MaxPendingBatches}).");
        }

        if (MaxBatchBytes is < 1)
        {
            errors.Add($"EtlRunOptions.MaxBatchBytes must be at least 1 (was {MaxBatchBytes}).");
        }

        if (MaxErrors is < 0)
        {
            errors.Add($"EtlRunOptions.MaxErrors must not be negative (was {MaxErrors}).");
        }

        if (MaxErrorRate is { } rate && (rate < 0 || rate > 1 || double.IsNaN(rate)))
        {
            errors.Add($"EtlRunOptions.MaxErrorRate must be between 0 and 1 (was {rate}).");
        }

        if (ErrorRateMinimumRows < 0)
        {
            errors.Add($"EtlRunOptions.ErrorRateMinimumRows must not be negative (was {ErrorRateMinimumRows}).");
        }

        if (Partition is { } partition && string.IsNullOrWhiteSpace(partition))
        {
            errors.Add("EtlRunOptions.Partition must not be blank.");
        }

        return errors;
    }
}

/// <summary>How a run ended.</summary>
public enum EtlRunStatus
{
    /// <summary>The source was read to its end and everything was loaded.</summary>
    Completed,

    /// <summary>The run was stopped (its token was cancelled) after committing what it had read; the next run resumes there.</summary>
    Stopped,

    /// <summary>The partition had been loaded to its end by an earlier run: nothing was read and nothing changed.</summary>
    AlreadyCompleted,
}

/// <summary>The result of one run.</summary>
/// <param name="RunId">The run's id.</param>
/// <param name="Job">The job (pipeline) name.</param>
/// <param name="Partition">The partition, or the empty string.</param>
/// <param name="Status">How the run ended.</param>
/// <param name="RowsRead">Rows read from the source (including rows quarantined by the source).</param>
/// <param name="RowsLoaded">Rows handed to the sink.</param>
/// <param name="RowsInserted">Rows inserted in the target.</param>
/// <param name="RowsUpdated">Rows updated in the target (merge; rows whose values did not change are not counted).</param>
/// <param name="RowsDeleted">Rows deleted from the target (full mode, or by delete markers on merge).</param>
/// <param name="RowsQuarantined">Rows set aside.</param>
/// <param name="Duration">The time the run took.</param>
/// <param name="Bookmark">The bookmark after the run, or <see langword="null"/>.</param>
/// <param name="QuarantinedRows">The rows set aside, when they were kept in memory (no quarantine store); otherwise empty.</param>
public sealed record EtlRunResult(
    string RunId,
    string Job,
    string Partition,
    EtlRunStatus Status,
    long RowsRead,
    long RowsLoaded,
    long RowsInserted,
    long RowsUpdated,
    long RowsDeleted,
    long RowsQuarantined,
    TimeSpan Duration,
    EtlBookmark? Bookmark,
    IReadOnlyList<QuarantinedRow> QuarantinedRows)
{
    /// <summary>Gets the rows changed in the target.</summary>
    public long RowsChanged => RowsInserted + RowsUpdated + RowsDeleted;

    /// <summary>Gets what each branch of a multicast did, in the order the branches were given; empty for a single sink.</summary>
    public IReadOnlyList<EtlBranchResult> Branches { get; init; } = [];
}

/// <summary>Progress of a run, reported after each batch.</summary>
/// <param name="RunId">The run's id.</param>
/// <param name="Job">The job name.</param>
/// <param name="RowsRead">Rows read from the source so far.</param>
/// <param name="RowsLoaded">Rows loaded (committed) so far.</param>
/// <param name="RowsQuarantined">Rows set aside so far.</param>
/// <param name="BytesRead">Bytes read from the source so far (files), or 0.</param>
/// <param name="Length">The source's size in bytes when known.</param>
/// <param name="Elapsed">Time since the run started.</param>
/// <param name="RowsPerSecond">Rows read per second so far.</param>
/// <param name="Eta">The estimated time left, when the source's size is known.</param>
public sealed record EtlProgress(
    string RunId,
    string Job,
    long RowsRead,
    long RowsLoaded,
    long RowsQuarantined,
    long BytesRead,
    long? Length,
    TimeSpan Elapsed,
    double RowsPerSecond,
    TimeSpan? Eta)
{
    /// <summary>Gets the share of the source read, from 0 to 1, when its size is known.</summary>
    public double? Fraction => Length is > 0 ? Math.Min(1.0, (double)BytesRead / Length.Value) : null;

    /// <summary>
    /// Gets the rows through each stage so far: the source first, then each stage of the flow in order (as errors name
    /// them: <c>stage 2 (Select)</c>), then the sink. A stage's rows out are the next one's rows in; counts of the stages
    /// before the loader run a little ahead of what is loaded, since rows in flight have passed them.
    /// </summary>
    /// <value>Default empty.</value>
    public IReadOnlyList<EtlStageProgress> Stages { get; init; } = [];
}

/// <summary>The rows through one stage of a run so far (<see cref="EtlProgress.Stages"/>).</summary>
/// <param name="Index">The stage's place: 0 for the source, then 1, 2... for the stages of the flow in order, and the last for the sink.</param>
/// <param name="Stage">The stage: <c>source</c>, the flow's stage as errors name it (<c>stage 1 (Where)</c>, <c>stage 3 (Validate 'amount')</c>), or <c>sink</c>.</param>
/// <param name="RowsIn">The rows that reached it; for the source, the rows read (those it quarantined included).</param>
/// <param name="RowsOut">The rows it handed on; for the sink, the rows loaded (committed).</param>
/// <param name="RowsQuarantined">The rows it set aside (the source: rows it could not read; a <c>Validate</c> stage: rows that failed its rule).</param>
public sealed record EtlStageProgress(int Index, string Stage, long RowsIn, long RowsOut, long RowsQuarantined);

/// <summary>A run quarantined more rows than its error budget allows (<see cref="EtlRunOptions.MaxErrors"/>, <see cref="EtlRunOptions.MaxErrorRate"/>).</summary>
public sealed class EtlErrorBudgetExceededException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="EtlErrorBudgetExceededException"/> class.</summary>
    public EtlErrorBudgetExceededException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="EtlErrorBudgetExceededException"/> class.</summary>
    /// <param name="message">What happened.</param>
    public EtlErrorBudgetExceededException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="EtlErrorBudgetExceededException"/> class.</summary>
    /// <param name="message">What happened.</param>
    /// <param name="innerException">The cause.</param>
    public EtlErrorBudgetExceededException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Gets the rows quarantined when the run stopped.</summary>
    public long Quarantined { get; init; }

    /// <summary>Gets the rows read when the run stopped.</summary>
    public long Read { get; init; }
}

/// <summary>A field of a source row could not be read as its column's type.</summary>
public sealed class EtlFieldException : FormatException
{
    /// <summary>Initializes a new instance of the <see cref="EtlFieldException"/> class.</summary>
    public EtlFieldException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="EtlFieldException"/> class.</summary>
    /// <param name="message">What happened.</param>
    public EtlFieldException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="EtlFieldException"/> class.</summary>
    /// <param name="message">What happened.</param>
    /// <param name="innerException">The cause.</param>
    public EtlFieldException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Gets the column at fault.</summary>
    public string? Column { get; init; }
}
