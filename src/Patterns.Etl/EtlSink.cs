namespace Patterns.Etl;

/// <summary>
/// Where rows go. A sink is a description: each run opens a <see cref="EtlSinkWriter{T}"/> and hands it batches, in
/// order, one at a time. A writer that stores bookmarks commits each batch together with its <see cref="EtlCommit"/>
/// (the bookmark after the batch and the rows quarantined before it) in one transaction: that is what makes a load
/// exactly once.
/// </summary>
/// <typeparam name="T">The record type.</typeparam>
public abstract class EtlSink<T>
{
    /// <summary>Gets the sink's name, for logs and metrics (for example the table).</summary>
    public abstract string Name { get; }

    /// <summary>Gets the rows per batch this sink works best with, used unless <see cref="EtlRunOptions.BatchSize"/> is set.</summary>
    public virtual int PreferredBatchSize => 10_000;

    /// <summary>Gets how the sink measures a row for <see cref="EtlRunOptions.MaxBatchBytes"/> (sinks with a schema use <see cref="EtlSchema{T}.EstimateSize"/>), or <see langword="null"/>.</summary>
    public virtual Func<T, long>? RowSize => null;

    /// <summary>Opens a writer for one run.</summary>
    /// <param name="context">The run.</param>
    /// <param name="cancellationToken">Cancels opening.</param>
    /// <returns>The writer.</returns>
    public abstract ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken);
}

/// <summary>What a sink writer knows of its run.</summary>
/// <param name="RunId">The run's id.</param>
/// <param name="Job">The job (pipeline) name: with <paramref name="Partition"/>, the key of the bookmark.</param>
/// <param name="Partition">The partition, or the empty string.</param>
public sealed record EtlSinkContext(string RunId, string Job, string Partition)
{
    /// <summary>Gets the run's clock (<see cref="EtlRunOptions.TimeProvider"/>), for the times a writer stores.</summary>
    internal TimeProvider Time { get; init; } = TimeProvider.System;
}

/// <summary>What commits with a batch: the source's bookmark after it, and the rows quarantined since the previous commit.</summary>
/// <param name="Bookmark">The bookmark, or <see langword="null"/> when the pipeline cannot resume mid-run (after a sort or an aggregate).</param>
/// <param name="Quarantined">Rows set aside since the previous commit.</param>
public sealed record EtlCommit(EtlBookmark? Bookmark, IReadOnlyList<QuarantinedRow> Quarantined)
{
    /// <summary>Gets the rows the source had handed over when the commit was taken (every one of them is in this batch or an earlier one, or was filtered out or quarantined), or null when positions do not track rows: once the commit is durable, a transport source acknowledges the messages up to it.</summary>
    internal long? Position { get; init; }

    /// <summary>
    /// Gets the ids of the messages a queue or subscription source handed over since the previous commit (empty for
    /// other sources). A writer that <see cref="EtlSinkWriter{T}.StoresConsumed"/> records them in the same transaction as
    /// the batch, so a message delivered again after the commit (a crash before its acknowledgement) is skipped.
    /// </summary>
    public IReadOnlyList<string> Consumed { get; init; } = [];

    /// <summary>Gets the source position of each message in <see cref="Consumed"/>, in the same order.</summary>
    internal IReadOnlyList<long> ConsumedAt { get; init; } = [];

    /// <summary>Gets, for a queue or subscription source's batch, the source position of the message each row came from (valid during the write), or empty.</summary>
    internal ReadOnlyMemory<long> RowOrigins { get; init; }
}

/// <summary>Writes the batches of one run. Called by one task at a time, batches in source order.</summary>
/// <typeparam name="T">The record type.</typeparam>
public abstract class EtlSinkWriter<T> : IAsyncDisposable
{
    /// <summary>Gets a value indicating whether <see cref="WriteAsync"/> commits the bookmark in the same transaction as the rows, so a run can resume exactly.</summary>
    public virtual bool StoresBookmarks => false;

    /// <summary>Gets a value indicating whether the writer stores quarantined rows (with the batch they precede); otherwise they go to <see cref="EtlRunOptions.Quarantine"/>.</summary>
    public virtual bool StoresQuarantine => false;

    /// <summary>
    /// Gets a value indicating whether a batch is durable once <see cref="WriteAsync"/> returns (a database transaction, a
    /// message sent). A writer whose output exists only once <see cref="CompleteAsync"/> ran (a file written under a
    /// temporary name and moved into place) returns <see langword="false"/>: a queue or subscription source, which
    /// acknowledges each message once its batch is written and never completes, refuses it.
    /// </summary>
    public virtual bool CommitsEachBatch => true;

    /// <summary>
    /// Gets a value indicating whether <see cref="WriteAsync"/> records <see cref="EtlCommit.Consumed"/> in the same
    /// transaction as the rows, and <see cref="ReadConsumedAsync"/> finds them: a queue or subscription source then skips
    /// (and acknowledges) a message that a committed batch already covers, so an append sink loads it once.
    /// </summary>
    public virtual bool StoresConsumed => false;

    /// <summary>
    /// Returns which of <paramref name="messageIds"/> this job and partition recorded as consumed (see
    /// <see cref="StoresConsumed"/>). Called by the source's task while a batch may be in <see cref="WriteAsync"/>, so it
    /// must not share the writer's transaction.
    /// </summary>
    /// <param name="messageIds">The ids of messages just delivered.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The ids already recorded.</returns>
    public virtual ValueTask<IReadOnlySet<string>> ReadConsumedAsync(IReadOnlyList<string> messageIds, CancellationToken cancellationToken) =>
        new(new HashSet<string>(StringComparer.Ordinal));

    /// <summary>Reads the bookmark committed for this job and partition by an earlier run.</summary>
    /// <param name="cancellationToken">Cancels reading.</param>
    /// <returns>The bookmark, or <see langword="null"/> when there is none.</returns>
    public virtual ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken) => new(default(EtlBookmark));

    /// <summary>The run starts from the beginning of the source (no bookmark to resume from): forget state of earlier runs (the keys seen by a full load).</summary>
    /// <param name="cancellationToken">Cancels the reset.</param>
    /// <returns>A task that completes when done.</returns>
    public virtual ValueTask ResetAsync(CancellationToken cancellationToken) => default;

    /// <summary>Writes one batch and, when <see cref="StoresBookmarks"/>, its commit, atomically.</summary>
    /// <param name="rows">The rows; valid until the returned task completes.</param>
    /// <param name="commit">The bookmark and quarantined rows that go with the batch.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>The rows changed.</returns>
    public abstract ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> rows, EtlCommit commit, CancellationToken cancellationToken);

    /// <summary>The source is exhausted: finish the load (a full load deletes the rows the source did not have) and commit the final bookmark.</summary>
    /// <param name="commit">The final bookmark (<see cref="EtlBookmark.Completed"/>) and the rows quarantined after the last batch.</param>
    /// <param name="cancellationToken">Cancels completion.</param>
    /// <returns>The rows changed.</returns>
    public abstract ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken);

    /// <summary>Releases the writer's connections and files; a writer that was not completed leaves what it committed.</summary>
    /// <returns>A task that completes when released.</returns>
    public virtual ValueTask DisposeAsync()
    {
        GC.SuppressFinalize(this);
        return default;
    }
}
