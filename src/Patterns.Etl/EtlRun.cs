using System.Globalization;
using Microsoft.Extensions.Logging;

namespace Patterns.Etl;

/// <summary>The state of one run shared by its stages: ids, counters, the quarantine rows not yet committed, the error budget.</summary>
internal sealed class EtlRun
{
    private readonly EtlRunOptions _options;
    private List<QuarantinedRow> _pendingQuarantine = [];
    private long _quarantined;
    private List<IDisposable>? _owned;

    public EtlRun(string job, string runId, string sourceName, EtlRunOptions options, ILogger logger, TimeProvider time)
    {
        Job = job;
        RunId = runId;
        SourceName = sourceName;
        Partition = options.Partition;
        _options = options;
        Logger = logger;
        Time = time;
        Tags = EtlTelemetry.Tags(job);
    }

    public string Job { get; }

    public string RunId { get; }

    public string? Partition { get; }

    public string SourceName { get; }

    public ILogger Logger { get; }

    public TimeProvider Time { get; }

    public System.Diagnostics.TagList Tags { get; }

    /// <summary>Gets the rows that reached each stage and those each quarantined, for progress and metrics.</summary>
    public EtlStageCounts StageCounts { get; init; } = new([]);

    /// <summary>Gets the store drivers' error classifiers (<see cref="EtlRunOptions.StorageErrorClassifiers"/>), or an empty list.</summary>
    public IReadOnlyList<Patterns.Storage.IStorageErrorClassifier> StorageErrorClassifiers => _options.StorageErrorClassifiers ?? [];

    /// <summary>Gets or sets a value indicating whether source positions still match rows at the sink: false after a stage that reorders or holds rows (sort, aggregate), so bookmarks are taken only at the end.</summary>
    public bool PositionsTrackRows { get; set; } = true;

    /// <summary>Gets or sets where the source resumes.</summary>
    public EtlBookmark Resume { get; set; } = EtlBookmark.Start;

    /// <summary>Gets the source's context, once the run has opened it.</summary>
    public EtlSourceContext Source { get; set; } = null!;

    /// <summary>Gets or sets the messages a transport source may hold unacknowledged (null for other sources): batches are capped at half of it.</summary>
    public int? MaxUnacknowledged { get; set; }

    /// <summary>Gets or sets the transport source's held acknowledgements, settled as the batches that include them commit.</summary>
    public IEtlAcknowledgements? Acknowledgements { get; set; }

    /// <summary>Gets or sets how a queue source finds the messages the sink already recorded as consumed, or null when the sink records none.</summary>
    public Func<IReadOnlyList<string>, CancellationToken, ValueTask<IReadOnlySet<string>>>? ReadConsumed { get; set; }

    /// <summary>Gets or sets what seals the open batch now (set by the loader; called by a transport source on the stream's task, between rows, when it is idle or holds many rows no batch covers).</summary>
    public Func<ValueTask>? SealOpenBatch { get; set; }

    /// <summary>Gets or sets what the loader does once every row made of the source row at <see cref="EtlSourceContext.Offset"/> has reached it (called on the stream's task): a batch that filled on one of them is sealed then, so that it holds all of them.</summary>
    public Action? SourceRowDone { get; set; }

    /// <summary>Gets or sets a value indicating whether the source row at <see cref="EtlSourceContext.Offset"/> is in the stages (set on the stream's task from the moment the source hands it over until the stream asks for the next): a failure then was raised by a stage (or the loader) on that row, not by the source.</summary>
    public bool RowInStages { get; set; }

    /// <summary>Gets or sets the id of the message a transport source is reading (stream task; null elsewhere), for errors that name it.</summary>
    public string? MessageId { get; set; }

    /// <summary>Gets or sets the source position the last sealed batch's commit covers (stream task).</summary>
    public long SealedPosition { get; set; }

    /// <summary>Gets the stage that raised <see cref="StageError"/>: its kind and its place in the flow (<c>Select (stage 2 of the flow)</c>), for the dead-letter reasons of a transport source.</summary>
    public string? FailedStage { get; private set; }

    /// <summary>Gets the error a stage of the flow raised last (recorded where it was thrown, before it unwinds through the stages above).</summary>
    public Exception? StageError { get; private set; }

    /// <summary>Gets a failure a stage raised that no row caused (its build side could not be read, a memory budget of the stage was passed): no message is blamed for it.</summary>
    public Exception? RowlessFailure { get; private set; }

    /// <summary>Records that <paramref name="stage"/> raised <paramref name="error"/> (an exception filter on the stream's task: the innermost stage sees it first, the stages above see the same error and keep the record).</summary>
    /// <returns>Always false: the error goes on unwinding.</returns>
    public bool StageFailed(string stage, Exception error)
    {
        if (!ReferenceEquals(error, StageError))
        {
            StageError = error;
            FailedStage = stage;
        }

        return false;
    }

    /// <summary>Records that a stage failed for a reason no row caused (see <see cref="RowlessFailure"/>).</summary>
    /// <returns>Always false: the error goes on unwinding.</returns>
    public bool FailedWithoutRow(Exception error)
    {
        RowlessFailure = error;
        return false;
    }

    /// <summary>Disposes <paramref name="resource"/> when the run ends, however it ends (a stage's spill files).</summary>
    public void Own(IDisposable resource) => (_owned ??= []).Add(resource);

    /// <summary>Disposes what the run's stages gave it to dispose.</summary>
    public void DisposeOwned()
    {
        if (_owned is { } owned)
        {
            _owned = null;
            foreach (var resource in owned)
            {
                try
                {
                    resource.Dispose();
                }
                catch (Exception ex)
                {
                    // The run's own outcome (its result or its failure) is what the caller sees; the rest is still released.
                    EtlLog.DisposeFailed(Logger, ex, Job);
                }
            }
        }
    }

    /// <summary>Gets the rows read from the source (driver task writes; others read approximately).</summary>
    public long RowsRead;

    public long Quarantined => Volatile.Read(ref _quarantined);

    /// <summary>Sets a row aside (on the pipeline's task) and checks the error budget.</summary>
    /// <param name="row">The row.</param>
    /// <param name="stage">The stage that set it aside: 0 for the source, n for the flow's stage n.</param>
    public void Quarantine(QuarantinedRow row, int stage = 0)
    {
        row = row with { Raw = QuarantineText.Clip(row.Raw) };
        _pendingQuarantine.Add(row);
        StageCounts.Quarantined(stage);
        var count = Interlocked.Increment(ref _quarantined);
        EtlTelemetry.RowsQuarantined.Add(1, Tags);
        EtlLog.Quarantined(Logger, Job, RunId, row.Line, row.Source, row.Stage, row.Error);
        if (_options.MaxErrors is { } max && count > max)
        {
            throw new EtlErrorBudgetExceededException(
                $"ETL job '{Job}' stopped: {count} rows were quarantined, more than its error budget of {max} (EtlRunOptions.MaxErrors). The last was line {row.Line} of {row.Source}: {row.Error}")
            {
                Quarantined = count,
                Read = RowsRead,
            };
        }

        CheckRate(final: false);
    }

    /// <summary>Checks <see cref="EtlRunOptions.MaxErrorRate"/>; during the run only past the minimum row count.</summary>
    public void CheckRate(bool final)
    {
        if (_options.MaxErrorRate is not { } rate)
        {
            return;
        }

        var read = Math.Max(RowsRead, 1);
        var count = Quarantined;
        if ((final || read >= _options.ErrorRateMinimumRows) && count > rate * read)
        {
            throw new EtlErrorBudgetExceededException(
                string.Create(CultureInfo.InvariantCulture, $"ETL job '{Job}' stopped: {count} of {RowsRead} rows read were quarantined ({(double)count / read:P2}), more than its error budget of {rate:P2} (EtlRunOptions.MaxErrorRate)."))
            {
                Quarantined = count,
                Read = RowsRead,
            };
        }
    }

    /// <summary>Takes the quarantined rows not yet handed to a commit whose source offset is before <paramref name="offset"/>; the others stay (on the pipeline's task).</summary>
    /// <param name="offset">The first source offset whose rows stay.</param>
    /// <returns>The rows taken.</returns>
    public IReadOnlyList<QuarantinedRow> TakeQuarantine(long offset)
    {
        if (_pendingQuarantine.Count == 0)
        {
            return [];
        }

        var taken = _pendingQuarantine.Where(r => r.Offset < offset).ToList();
        _pendingQuarantine = [.. _pendingQuarantine.Where(r => r.Offset >= offset)];
        return taken;
    }

    /// <summary>Takes the quarantined rows not yet handed to a commit (on the pipeline's task).</summary>
    public IReadOnlyList<QuarantinedRow> TakeQuarantine()
    {
        if (_pendingQuarantine.Count == 0)
        {
            return [];
        }

        var rows = _pendingQuarantine;
        _pendingQuarantine = [];
        return rows;
    }
}

/// <summary>
/// Marks the errors a run failed with that no row or message caused (a dimension or build side that cannot be read, a
/// stage past its memory budget): an <c>AddEtl</c> job counts how long its runs keep failing so
/// (<see cref="EtlJobOptions.MaxOutageDuration"/>), and words what happens to the source's data by its kind (a queue's
/// messages stay on the queue; another source is read again from the last committed bookmark).
/// </summary>
internal static class EtlOutage
{
    private static readonly object FromQueueMark = new();
    private static readonly object OtherMark = new();
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Exception, object> Marked = [];

    /// <summary>Marks <paramref name="error"/> as an outage of a run whose source is a queue or subscription (<paramref name="queue"/>) or another source.</summary>
    public static void Mark(Exception error, bool queue) => Marked.AddOrUpdate(error, queue ? FromQueueMark : OtherMark);

    public static bool Is(Exception error) => Marked.TryGetValue(error, out _);

    /// <summary>Whether the run that failed with the outage <paramref name="error"/> read a queue or subscription.</summary>
    public static bool FromQueue(Exception error) => Marked.TryGetValue(error, out var mark) && ReferenceEquals(mark, FromQueueMark);

    /// <summary>What happens to the source's data while the job fails on an outage, worded by the source's kind.</summary>
    public static string Consequence(Exception error) => FromQueue(error)
        ? "its messages stay on the queue (none counts a delivery or is dead-lettered)"
        : "the next run reads its source again from its last committed bookmark";
}
