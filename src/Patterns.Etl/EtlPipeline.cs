using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Patterns.Batching;
using Patterns.Streaming;

namespace Patterns.Etl;

/// <summary>A runnable ETL pipeline: a flow ending in a sink. Each run is independent; with a bookmarking sink, a run resumes where the last one committed.</summary>
public abstract class EtlPipeline
{
    private protected EtlPipeline(string name) => Name = name;

    /// <summary>Gets the job's name: with the partition, the key of its bookmark.</summary>
    public string Name { get; }

    /// <summary>Runs the pipeline once: reads the source from its bookmark, loads it in batches, and returns what changed.</summary>
    /// <param name="options">The run's options (partition, batch size, error budget, progress).</param>
    /// <param name="cancellationToken">Stops the run gracefully: reading stops, what was read is loaded and committed, and the result says <see cref="EtlRunStatus.Stopped"/>.</param>
    /// <returns>The run's result.</returns>
    /// <exception cref="EtlErrorBudgetExceededException">More rows were quarantined than the budget allows; batches committed before stay committed.</exception>
    public abstract Task<EtlRunResult> RunAsync(EtlRunOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Runs several partitions (dates, key ranges, files), at most <paramref name="maxConcurrency"/> at once, each with
    /// its own bookmark: a backfill. Partitions already loaded to their end change nothing.
    /// </summary>
    /// <param name="partitions">The partitions.</param>
    /// <param name="maxConcurrency">The most partitions running at once.</param>
    /// <param name="configure">Sets each partition's other options (the partition itself is set for you).</param>
    /// <param name="cancellationToken">Stops every run gracefully.</param>
    /// <returns>The results, in the order of <paramref name="partitions"/>.</returns>
    public async Task<IReadOnlyList<EtlRunResult>> RunPartitionsAsync(IEnumerable<string> partitions, int maxConcurrency = 2, Action<string, EtlRunOptions>? configure = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(partitions);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxConcurrency, 1);
        var list = partitions.ToList();
        var results = new EtlRunResult[list.Count];
        using var gate = new SemaphoreSlim(maxConcurrency);
        var runs = list.Select(async (partition, index) =>
        {
            await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                var options = new EtlRunOptions();
                configure?.Invoke(partition, options);
                options.Partition = partition;
                results[index] = await RunAsync(options, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                gate.Release();
            }
        }).ToList();
        await Task.WhenAll(runs).ConfigureAwait(false);
        return results;
    }
}

/// <summary>A runnable ETL pipeline over records of type <typeparamref name="T"/>.</summary>
/// <typeparam name="T">The type of the records the sink receives.</typeparam>
/// <remarks>
/// <para>
/// A run is a stream pipeline (<see cref="DataStream"/>) whose sink adds each row to a <see cref="Batcher{T}"/>. The
/// batcher seals a batch every <see cref="EtlRunOptions.BatchSize"/> rows and hands it to the sink writer on its own
/// task, so the next batch is read and transformed while the previous one loads; it holds at most
/// <c>BatchSize × (MaxPendingBatches + 1)</c> rows, and when it is full the stream waits, which holds back the source.
/// </para>
/// <para>
/// Just before the row that seals a batch goes in, the run takes the source's bookmark (every stage runs on the
/// stream's task, one row at a time, so that position covers every row of the batch and nothing after it) and the
/// rows quarantined since the previous batch, and the writer commits them with the batch.
/// </para>
/// </remarks>
public sealed class EtlPipeline<T> : EtlPipeline
{
    private readonly EtlFlow<T> _flow;
    private readonly EtlSink<T> _sink;
    private readonly Func<T, long>? _rowSize;

    internal EtlPipeline(EtlFlow<T> flow, EtlSink<T> sink, string name, Func<T, long>? rowSize = null)
        : base(name)
    {
        _flow = flow;
        _sink = sink;
        _rowSize = rowSize;
    }

    /// <summary>Measures rows for <see cref="EtlRunOptions.MaxBatchBytes"/>, in place of the sink's measure (<see cref="EtlSink{T}.RowSize"/>).</summary>
    /// <param name="sizeOf">A row's size in bytes (an estimate of the memory it holds).</param>
    /// <returns>The pipeline, measuring rows so.</returns>
    public EtlPipeline<T> WithRowSize(Func<T, long> sizeOf)
    {
        ArgumentNullException.ThrowIfNull(sizeOf);
        return new EtlPipeline<T>(_flow, _sink, Name, sizeOf);
    }

    /// <inheritdoc/>
    public override async Task<EtlRunResult> RunAsync(EtlRunOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new EtlRunOptions();
        var rowSize = _rowSize ?? _sink.RowSize;
        var errors = options.Validate();
        if (options.MaxBatchBytes is not null && rowSize is null)
        {
            errors.Add($"EtlRunOptions.MaxBatchBytes is set, but the sink '{_sink.Name}' cannot measure rows: measure them with pipeline.WithRowSize(row => ...).");
        }

        if (errors.Count > 0)
        {
            throw new ArgumentException(string.Join(Environment.NewLine, errors), nameof(options));
        }

        var time = options.TimeProvider ?? TimeProvider.System;
        var logger = options.LoggerFactory?.CreateLogger("Patterns.Etl." + Name) ?? (ILogger)NullLogger.Instance;
        var runId = Guid.CreateVersion7(time.GetUtcNow()).ToString("N");
        var run = new EtlRun(Name, runId, _flow.SourceName, options, logger, time) { StageCounts = new EtlStageCounts(_flow.StageLabels) };
        var partition = options.Partition ?? string.Empty;
        var started = time.GetTimestamp();
        using var activity = EtlTelemetry.Source.StartActivity("etl " + Name);
        activity?.SetTag(EtlTelemetry.JobTag, Name);

        var writer = await _sink.OpenAsync(new EtlSinkContext(runId, Name, partition) { Time = time }, cancellationToken).ConfigureAwait(false);
        await using (writer.ConfigureAwait(false))
        {
            var resume = !options.Restart && options.Bookmarks && writer.StoresBookmarks && _flow.Resumable
                ? await writer.ReadBookmarkAsync(cancellationToken).ConfigureAwait(false)
                : null;
            if (resume is { Completed: true } && !_flow.Incremental)
            {
                EtlLog.AlreadyCompleted(logger, Name, partition);
                return new EtlRunResult(runId, Name, partition, EtlRunStatus.AlreadyCompleted, 0, 0, 0, 0, 0, 0, time.GetElapsedTime(started), resume, []);
            }

            if (resume is null)
            {
                await writer.ResetAsync(cancellationToken).ConfigureAwait(false);
            }

            if (writer.StoresConsumed)
            {
                run.ReadConsumed = writer.ReadConsumedAsync;
            }

            run.Resume = resume ?? EtlBookmark.Start;
            EtlLog.Started(logger, Name, partition, runId, run.Resume.Offset);
            using var loader = new Loader(run, writer, _sink.Name, options, _sink.PreferredBatchSize, options.MaxBatchBytes is null ? null : rowSize, started);
            try
            {
                return await loader.RunAsync(_flow, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                // A run that failed on an outage no message caused (a dimension that is down) is no failure of its own: an
                // AddEtl job warns once per such run and logs an error only when the outage outlasts MaxOutageDuration.
                if (EtlOutage.Is(ex))
                {
                    EtlLog.FailedOnOutage(logger, ex, Name, partition, runId, run.RowsRead);
                }
                else
                {
                    EtlLog.Failed(logger, ex, Name, partition, runId, run.RowsRead);
                }

                activity?.SetStatus(ActivityStatusCode.Error, ex.Message);
                throw;
            }
        }
    }

    /// <summary>One run's loading: the stream's sink, the batcher, and the commits that go with each batch.</summary>
    private sealed class Loader : IDisposable
    {
        /// <summary>The stream's buffer when batches are bounded in bytes: few rows, so it adds little to the bound.</summary>
        private const int StreamRowsWithByteBound = 64;

        private readonly EtlRun _run;
        private readonly EtlSinkWriter<T> _writer;
        private readonly string _sinkName;
        private readonly EtlRunOptions _options;
        private int _batchSize;
        private readonly long _started;
        private readonly ConcurrentQueue<EtlCommit> _commits = new();
        private readonly MemoryQuarantine? _memory;
        private readonly EtlQuarantine _quarantine;
        private readonly CancellationTokenSource _stop = new();

        // Byte bounds (MaxBatchBytes): the row measure, the open batch's rows and bytes, and one slot per sealed batch not yet loaded.
        private readonly Func<T, long>? _rowSize;
        private readonly long _maxBatchBytes;
        private readonly SemaphoreSlim? _sealedSlots;
        private bool _sealing;
        private int _inBatch;
        private int _ofSourceRow;
        private long _batchBytes;
        private T[] _rows = [];
        private long _loaded;
        private EtlLoadCounts _counts;
        private Exception? _loadFailure;
        private EtlBookmark? _lastBookmark;
        private bool _dropOpenBatch;

        // Rows made of one source row stay in one batch: a batch that fills on one of them waits, with its commit taken
        // then, until the source moves on (at most _holdLimit rows; beyond it the batch is split inside the source row).
        private EtlCommit? _pending;
        private int _holdLimit;
        private EtlBookmark? _sealedBookmark;
        private long? _failedThrough;

        // A queue source's message that joins an open batch holding earlier messages' rows: its rows wait here until it
        // is done (they then join that batch) or they would fill the batch to its limit (the batch is then committed just
        // before the message, which starts a fresh one), so a message's rows are never split across two commits.
        private List<T>? _messageRows;
        private long _messageBytes;
        private bool _buffering;
        private bool _messageDone;
        private EtlCommit? _messageCommit;

        // The failure of a message too big for a batch of its own, and its position: only that message is blamed.
        private Exception? _oversized;
        private long _oversizedAt;

        // A queue source's rows, each with the position of the message it came from, in the order they went into batches
        // (the stream adds, the loader takes each batch's): a branch of a multicast that fails on one row of a batch blames
        // only that row's message. _messageAt is the position of the message whose rows are held apart.
        private ConcurrentQueue<long>? _origins;
        private long[] _rowOrigins = [];
        private long _messageAt;
        private long? _failedRowAt;
        private string? _failedBranch;

        public Loader(EtlRun run, EtlSinkWriter<T> writer, string sinkName, EtlRunOptions options, int preferredBatchSize, Func<T, long>? rowSize, long started)
        {
            _run = run;
            _writer = writer;
            _sinkName = sinkName;
            _options = options;
            _batchSize = options.BatchSize ?? preferredBatchSize;
            _started = started;
            if (rowSize is not null)
            {
                _rowSize = rowSize;
                _maxBatchBytes = options.MaxBatchBytes!.Value;
                _sealedSlots = new SemaphoreSlim(options.MaxPendingBatches + 1);
            }

            _quarantine = options.Quarantine ?? (_memory = new MemoryQuarantine());
        }

        public async Task<EtlRunResult> RunAsync(EtlFlow<T> flow, CancellationToken cancellationToken)
        {
            Exception? failure = null;
            try
            {
                return await RunCoreAsync(flow, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                failure = ex;
                if (NoMessageCaused(ex) && Blame(ex).From == long.MaxValue)
                {
                    EtlOutage.Mark(ex, queue: _run.MaxUnacknowledged is not null);
                }

                throw;
            }
            finally
            {
                // Spill files go whether the run completed, failed or was cancelled.
                _run.DisposeOwned();

                // A transport source hands back what no commit covers, to be delivered again, and stops its subscription.
                if (_run.Acknowledgements is { } held)
                {
                    try
                    {
                        await held.EndAsync(failure, Blame(failure)).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (failure is not null)
                    {
                        // The run's failure is what the caller sees; stopping the subscription failed too.
                        EtlLog.Failed(_run.Logger, ex, _run.Job, _run.Partition ?? string.Empty, _run.RunId, _run.RowsRead);
                    }
                }
            }
        }

        /// <summary>The messages a failed run blames (a transport source counts a failed delivery against them), and what failed.</summary>
        private EtlBlame Blame(Exception? failure)
        {
            if (failure is null)
            {
                return EtlBlame.Nobody("the run");
            }

            // A message too big for a batch of its own is the only one to blame: the batch before it committed.
            if (_oversized is { } oversized && (ReferenceEquals(failure, oversized) || ReferenceEquals(failure.InnerException, oversized)))
            {
                return EtlBlame.One(_oversizedAt, "the loader (the message's rows do not fit in one batch)");
            }

            // No message is at fault: a batch that records a message id a committed batch already recorded (a copy the check
            // missed), a stage whose build side could not be read, a stage past its memory budget (its keys or groups are
            // every message's, not the last one's).
            if (EtlAlreadyConsumedException.Caused(failure))
            {
                return EtlBlame.Nobody($"the batch loaded by sink '{_sinkName}'");
            }

            var stage = ReferenceEquals(failure, _run.StageError) ? _run.FailedStage : null;
            if (NoMessageCaused(failure))
            {
                // The messages before the one it surfaced on were committed (CommitBeforeFailedMessageAsync), so the next
                // run starts at that message with the stage empty. Only a DistinctBy that fails on the run's first message
                // holds that message's keys alone: it is to blame.
                return failure is EtlMemoryBudgetExceededException { Stage: "DistinctBy" } && !ReferenceEquals(failure, _run.RowlessFailure)
                    && _run.RowInStages && _run.Source.Offset == _run.Resume.Offset + 1
                    ? EtlBlame.One(_run.Source.Offset, stage ?? "a stage")
                    : EtlBlame.Nobody(stage ?? "a stage");
            }

            if (_failedThrough is { } through)
            {
                // A batch failed at the sink. A branch of a multicast that failed in its filter or map names the row: its
                // message is the only one to blame. Otherwise the sink cannot say which row it failed on: every message of
                // the batch (and those before it that no commit covers) is blamed.
                return _failedRowAt is { } row
                    ? EtlBlame.One(row, $"multicast branch '{_failedBranch}' (its Where, Select or SelectMany)")
                    : new EtlBlame(long.MinValue, through, $"the batch loaded by sink '{_sinkName}'");
            }

            // A stage failed on a row (a transform threw; not a commit): every stage runs on the stream's task one source row
            // at a time, so that row came from the message at the source's position, the only one to blame. A queue source
            // refuses the stages that hold rows and let them go later (OrderBy, Aggregate, a spilling DistinctBy or Join),
            // so its rows always track positions; were it not so, or had the source itself failed (the subscription), every
            // message of the open batch up to the source's position would be blamed, as for a failed batch.
            if (_run.RowInStages && _run.PositionsTrackRows)
            {
                return EtlBlame.One(_run.Source.Offset, stage ?? "a stage");
            }

            return new EtlBlame(long.MinValue, _run.Source.Offset, stage ?? "the run");
        }

        /// <summary>
        /// Whether a stage failed for a reason no row caused: its build side could not be read (<see cref="EtlRun.RowlessFailure"/>),
        /// or it passed its memory budget (its keys or groups are every message's of the run, not the last one's).
        /// </summary>
        private bool NoMessageCaused(Exception failure) =>
            _failedThrough is null && (ReferenceEquals(failure, _run.RowlessFailure) || failure is EtlMemoryBudgetExceededException);

        private async Task<EtlRunResult> RunCoreAsync(EtlFlow<T> flow, CancellationToken cancellationToken)
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stop.Token);
            var streamOptions = new StreamOptions { Name = "etl-" + _run.Job, TimeProvider = _run.Time, LoggerFactory = _options.LoggerFactory, BufferCapacity = Math.Min(_batchSize, _rowSize is null ? 10_000 : StreamRowsWithByteBound) };
            Exception? streamFailure = null;
            DataStream<T>? stream = null;
            try
            {
                stream = flow.Build(_run, streamOptions);
            }
            catch (Exception ex)
            {
                streamFailure = ex;
            }

            if (_run.MaxUnacknowledged is not null && !_writer.CommitsEachBatch)
            {
                // The source is read but never started: nothing is taken from the queue.
                stream = null;
                streamFailure ??= new InvalidOperationException(
                    $"ETL job '{_run.Job}' reads {_run.SourceName}, whose messages are acknowledged once the batch that includes them is written, but the sink '{_sinkName}' " +
                    "makes its output durable only when the run completes (a file written under a temporary name and moved into place), which a queue run never does: " +
                    "every acknowledged message would be lost with the temporary file. Load the messages into a database table (or another queue) and export that to a file.");
            }

            if (stream is not null && _run.MaxUnacknowledged is not null)
            {
                // What the loader raises on the stream's task is not the last stage's. The tag only names the loader: the
                // loader counts the rows that reach it itself (AddAsync), so a run that blames no message has no stage here.
                stream = EtlStageTag<T>.Tagged(stream, _run, "the loader");
            }

            if (_run.MaxUnacknowledged is { } maxUnacknowledged)
            {
                // A transport source holds each message until the batch that includes it commits: with batches of at most
                // half the messages it may hold, one batch fills while the one before it loads.
                _batchSize = Math.Clamp(maxUnacknowledged / 2, 1, _batchSize);
            }

            // Where positions track rows, the loader ends each batch once the source has moved past the row that filled it
            // (a SelectMany or a Join makes several rows of one): a batch may then hold up to twice BatchSize rows. A queue
            // source's message that would fill it beside earlier messages' rows starts a fresh batch after they commit; one
            // that makes that many rows on its own fails the run rather than be split across two commits.
            var holds = _run.PositionsTrackRows;
            var messageBound = holds && _run.MaxUnacknowledged is not null;
            _origins = messageBound ? new ConcurrentQueue<long>() : null;
            _holdLimit = holds ? 2 * _batchSize : _batchSize;
            _sealedBookmark = _run.Resume;
            var batcher = Batcher.Create<T>(
                HandleAsync,
                new BatchOptions
                {
                    MaxCount = _holdLimit,
                    Capacity = _batchSize * (_options.MaxPendingBatches + (holds ? 2 : 1)),
                    MaxAge = Timeout.InfiniteTimeSpan,
                    Retry = null,

                    // With a byte bound the loader decides where batches end: the row that seals one weighs 1, the others 0.
                    MaxSize = _rowSize is null || holds ? null : 1,
                },
                sizeOf: _rowSize is null || holds ? null : _ => _sealing ? 1 : 0,
                timeProvider: _run.Time,
                logger: _run.Logger,
                name: "etl-" + _run.Job);
            _run.SealOpenBatch = SealOpenBatchAsync;
            _run.SourceRowDone = holds ? SourceRowDone : null;
            try
            {
                if (stream is not null)
                {
                    await stream.To(AddAsync).RunAsync(linked.Token).ConfigureAwait(false);
                    _run.CheckRate(final: !cancellationToken.IsCancellationRequested);
                }
            }
            catch (Exception ex)
            {
                streamFailure = ex;
            }

            if (messageBound && cancellationToken.IsCancellationRequested && streamFailure is null or OperationCanceledException
                && _run.RowInStages && _run.StageError is OperationCanceledException cut && _run.FailedStage != "the loader")
            {
                // The stop cut a message short inside a stage that honours the token (a Lookup's find): its rows did not
                // all reach the loader, so no commit may cover it. No message is at fault: the complete messages before it
                // commit, it and the others go back uncounted, and the run reports the cancellation.
                streamFailure ??= cut;
                _run.FailedWithoutRow(streamFailure);
            }

            if (streamFailure is not null && messageBound && Volatile.Read(ref _loadFailure) is null && NoMessageCaused(streamFailure))
            {
                await CommitBeforeFailedMessageAsync().ConfigureAwait(false);
            }

            var stopped = cancellationToken.IsCancellationRequested || _loadFailure is not null;
            if (streamFailure is null && (_messageDone || _buffering))
            {
                // The last message's rows, held apart from the open batch, join it.
                await JoinMessageRowsAsync().ConfigureAwait(false);
            }

            if (streamFailure is null && _inBatch != 0)
            {
                // The open batch: its commit is the position after the last row read.
                Enqueue(TakeCommit());
            }

            // Sealed batches load with their commits; after a failure the open batch has none: it is dropped, and the
            // next run reads it again from the last bookmark.
            _dropOpenBatch = streamFailure is not null;
            await batcher.CompleteAsync(CancellationToken.None).ConfigureAwait(false);
            if (streamFailure is not null)
            {
                Volatile.Write(ref _loadFailure, _loadFailure ?? streamFailure);
            }

            if (_loadFailure is { } failure)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
            }

            EtlRunStatus status;
            if (stopped)
            {
                // The stream stopped between two rows: what it read is loaded with its bookmark; the next run resumes there.
                await FlushLeftoverAsync(CancellationToken.None).ConfigureAwait(false);
                _run.Acknowledgements?.Acknowledge(_run.Source.Offset);
                status = EtlRunStatus.Stopped;
            }
            else
            {
                var final = new EtlCommit(_options.Bookmarks ? _run.Source.Capture(completed: true) : null, Leftover());
                await StoreQuarantineAsync(final, CancellationToken.None).ConfigureAwait(false);
                _counts += await _writer.CompleteAsync(final, CancellationToken.None).ConfigureAwait(false);
                _lastBookmark = final.Bookmark;
                _run.Acknowledgements?.Acknowledge(_run.Source.Offset);
                status = EtlRunStatus.Completed;
            }

            var duration = _run.Time.GetElapsedTime(_started);
            Report(duration);
            RecordRun(status, duration);
            return new EtlRunResult(
                _run.RunId, _run.Job, _run.Partition ?? string.Empty, status, _run.RowsRead, _loaded, _counts.Inserted, _counts.Updated, _counts.Deleted, _run.Quarantined, duration, _lastBookmark, _memory?.Rows ?? [])
            {
                Branches = (_writer as IEtlBranchCounts)?.Branches ?? [],
            };

            ValueTask AddAsync(T row, CancellationToken ct)
            {
                _run.StageCounts.InSink();
                if (_run.SourceRowDone is not null)
                {
                    return AddHeldAsync(row, ct);
                }

                var seals = ++_inBatch == _batchSize;
                if (_rowSize is not null)
                {
                    _batchBytes += _rowSize(row);
                    seals |= _batchBytes >= _maxBatchBytes;
                    _sealing = seals;
                    if (seals)
                    {
                        return AddSealingAsync(row, _sealedSlots!, ct);
                    }
                }

                if (seals)
                {
                    Seal();
                }

                var adding = batcher.AddAsync(row, ct);
                return adding.IsCompletedSuccessfully ? default : AwaitAddAsync(adding);
            }

            // Bounded in bytes: a batch is sealed once a slot is free, so at most MaxPendingBatches + 1 sealed batches are
            // held. The wait is not cancelled: the loads in flight free the slots, and the row then goes in with its commit.
            async ValueTask AddSealingAsync(T row, SemaphoreSlim slots, CancellationToken ct)
            {
                await slots.WaitAsync(CancellationToken.None).ConfigureAwait(false);
                Seal();
                await batcher.AddAsync(row, ct).ConfigureAwait(false);
            }

            // Positions track rows: a full batch takes its commit (the source's position now, this row's) and goes on taking
            // the rows made of the same source row; SourceRowDone seals it.
            ValueTask AddHeldAsync(T row, CancellationToken ct)
            {
                if (messageBound)
                {
                    if (_messageDone)
                    {
                        return JoinThenAddAsync(row, ct);
                    }

                    if (_ofSourceRow == 0)
                    {
                        // A message's first row: alone in the open batch, its rows go straight in; after earlier messages'
                        // rows, they wait apart until it is known whether they fit beside them.
                        _buffering = _inBatch > 0;
                        _messageAt = _run.Source.Offset;
                    }

                    if (_buffering)
                    {
                        return HoldApartAsync(row);
                    }
                }

                _inBatch++;
                _ofSourceRow++;
                if (_rowSize is not null)
                {
                    _batchBytes += _rowSize(row);
                    if (messageBound && _batchBytes > _maxBatchBytes)
                    {
                        // Alone in its batch (the rows of earlier messages were committed before it), the message's rows pass
                        // MaxBatchBytes: as for one that fills a batch to its limit in rows, nothing of it is committed, and
                        // only it is blamed.
                        throw TooBigInBytes(_batchBytes);
                    }
                }

                if (_inBatch == _holdLimit && _pending is not null && messageBound)
                {
                    // A message is acknowledged, and recorded as consumed, with the commit of its last row: split across two
                    // commits, its first part would be loaded again after a failure between them. Alone in its batch (the
                    // rows of earlier messages were committed before it), it cannot fit in any: it fails the run (the open
                    // batch, with the message's rows, is dropped; nothing of it is committed), and only it is blamed.
                    _oversizedAt = _run.Source.Offset;
                    throw _oversized = new InvalidOperationException(
                        $"ETL job '{_run.Job}' reads {_run.SourceName}: message {_run.MessageId ?? "(no id)"} has made {_ofSourceRow} rows so far, which" +
                        $" fills the batch to its limit of {_holdLimit} rows (twice BatchSize, which is {_batchSize}; maxUnacknowledged is {_run.MaxUnacknowledged}). " +
                        "A message's rows are loaded with one commit, so that it is loaded exactly once: make BatchSize at least the most rows one message makes " +
                        "(and maxUnacknowledged at least twice BatchSize, since a queue source caps BatchSize at half of it), or send smaller messages.");
                }

                if (_inBatch == _holdLimit && _pending is { } full)
                {
                    // One source row made more rows than a batch holds: the batcher ends the batch on this row, inside the
                    // source row, so its commit covers only the rows before it: its messages are acknowledged with the next
                    // batch, and the bookmark stays where it was (a resumed run loads this source row's rows again).
                    _pending = null;
                    Enqueue(_run.PositionsTrackRows ? full with { Position = full.Position - 1, Bookmark = full.Bookmark is null ? null : _sealedBookmark } : full with { Position = null, Bookmark = null });
                    _inBatch = 0;
                    _batchBytes = 0;
                }
                else if (_pending is null && (_inBatch >= _batchSize || (_rowSize is not null && _batchBytes >= _maxBatchBytes)))
                {
                    return _sealedSlots is { } slots ? HoldAsync(row, slots, ct) : HoldCore(row, ct);
                }

                var adding = AddRowAsync(row, _run.Source.Offset, ct);
                return adding.IsCompletedSuccessfully ? default : AwaitAddAsync(adding);
            }

            // A row goes into the open batch: a queue source's with the position of its message. The position goes in first,
            // so that it is there when the batch the row seals is loaded; one whose row a stop kept out stays after every
            // batch's (only the batch it would have ended is loaded after it, and takes only its own rows' positions).
            ValueTask<bool> AddRowAsync(T row, long origin, CancellationToken ct)
            {
                _origins?.Enqueue(origin);
                return batcher.AddAsync(row, ct);
            }

            // Alone in its batch, a queue source's message makes rows of more bytes than MaxBatchBytes: the run fails.
            InvalidOperationException TooBigInBytes(long bytes)
            {
                _oversizedAt = _run.Source.Offset;
                var error = new InvalidOperationException(
                    string.Create(CultureInfo.InvariantCulture, $"ETL job '{_run.Job}' reads {_run.SourceName}: message {_run.MessageId ?? "(no id)"} has made {_ofSourceRow} rows of {bytes:N0} bytes so far, more than MaxBatchBytes ({_maxBatchBytes:N0} bytes; rows measured by the sink or by WithRowSize). ") +
                    "A message's rows are loaded with one commit, so that it is loaded exactly once: make MaxBatchBytes at least the size of the largest message's rows, or send smaller messages.");
                _oversized = error;
                return error;
            }

            async ValueTask HoldAsync(T row, SemaphoreSlim slots, CancellationToken ct)
            {
                await slots.WaitAsync(CancellationToken.None).ConfigureAwait(false);
                await HoldCore(row, ct).ConfigureAwait(false);
            }

            ValueTask HoldCore(T row, CancellationToken ct)
            {
                _pending = Commit(completed: false);
                var adding = AddRowAsync(row, _run.Source.Offset, ct);
                return adding.IsCompletedSuccessfully ? default : AwaitAddAsync(adding);
            }

            // A row of a message that joins earlier messages' rows in the open batch: held apart. Once the rows would fill
            // the batch to its limit, the batch is committed just before the message, whose rows then start a fresh one.
            ValueTask HoldApartAsync(T row)
            {
                _inBatch++;
                _ofSourceRow++;
                (_messageRows ??= []).Add(row);
                if (_rowSize is not null)
                {
                    var size = _rowSize(row);
                    _batchBytes += size;
                    _messageBytes += size;
                }

                // Rows held apart never pass MaxBatchBytes with the earlier messages' rows: the limit holds for a queue source.
                return _inBatch < _holdLimit && (_rowSize is null || _batchBytes <= _maxBatchBytes) ? default : StartFreshBatchAsync();
            }

            async ValueTask StartFreshBatchAsync()
            {
                if (_sealedSlots is { } slots)
                {
                    await slots.WaitAsync(CancellationToken.None).ConfigureAwait(false);
                }

                // The batcher holds only the earlier messages' rows: their commit is the position just before this message,
                // with the rows quarantined before it (this message's stay for its own commit).
                var offset = _run.Source.Offset;
                var before = offset - 1;
                var bookmark = _options.Bookmarks ? _run.Source.Capture(completed: false) with { Offset = before, Line = before } : null;
                Enqueue(new EtlCommit(bookmark, _run.TakeQuarantine(offset)) { Position = before });
                Flush();

                _buffering = false;
                _inBatch = _ofSourceRow;
                _batchBytes = _messageBytes;
                if (_rowSize is not null && _batchBytes > _maxBatchBytes)
                {
                    // Alone, the message's rows still pass MaxBatchBytes: it cannot be loaded in one batch.
                    throw TooBigInBytes(_batchBytes);
                }

                await AddMessageRowsAsync().ConfigureAwait(false);

                // The message is now alone in its batch: held whole, as one that started there is.
                if (_inBatch >= _batchSize || (_rowSize is not null && _batchBytes >= _maxBatchBytes))
                {
                    if (_sealedSlots is { } held)
                    {
                        await held.WaitAsync(CancellationToken.None).ConfigureAwait(false);
                    }

                    _pending = Commit(completed: false);
                }
            }

            async ValueTask JoinThenAddAsync(T row, CancellationToken ct)
            {
                await JoinMessageRowsAsync().ConfigureAwait(false);
                await AddHeldAsync(row, ct).ConfigureAwait(false);
            }

            // Every row made of the source row is in: a full batch is sealed and handed to the loader (not waited for).
            void SourceRowDone()
            {
                _ofSourceRow = 0;
                if (_buffering)
                {
                    // A message held apart is done, and fits beside the earlier ones: its rows join the open batch before
                    // anything else goes in (the next row, a seal, the run's end). A batch it fills is sealed with its
                    // commit, taken now.
                    _buffering = false;
                    _messageDone = true;
                    if (_inBatch >= _batchSize || (_rowSize is not null && _batchBytes >= _maxBatchBytes))
                    {
                        _messageCommit = Commit(completed: false);
                    }

                    return;
                }

                if (_pending is not { } full)
                {
                    return;
                }

                _pending = null;

                // A stage that started holding rows back (a DistinctBy that spills) after the batch took its commit: the
                // source's position then covers rows still held, so the batch goes without a bookmark. Otherwise the rows
                // of this source row quarantined after the batch filled go with it too: the commit covers (and a queue
                // source acknowledges) the source row, so a later commit would be too late if the run died in between.
                Enqueue(_run.PositionsTrackRows ? WithLaterQuarantine(full) : full with { Bookmark = null, Position = null });
                _inBatch = 0;
                _batchBytes = 0;
                Flush();
            }

            // The rows of a message held apart join the open batch; a batch they fill is sealed with the commit the
            // message took when it was done.
            async ValueTask JoinMessageRowsAsync()
            {
                _messageDone = false;
                _buffering = false;
                await AddMessageRowsAsync().ConfigureAwait(false);
                if (_messageCommit is { } commit)
                {
                    _messageCommit = null;
                    if (_sealedSlots is { } slots)
                    {
                        await slots.WaitAsync(CancellationToken.None).ConfigureAwait(false);
                    }

                    Enqueue(commit);
                    _inBatch = 0;
                    _batchBytes = 0;
                    Flush();
                }
            }

            // Not cancelled: the batch never ends on these rows (it holds fewer than its limit), and the loads in flight
            // make room for them.
            async ValueTask AddMessageRowsAsync()
            {
                if (_messageRows is { Count: > 0 } rows)
                {
                    foreach (var row in rows)
                    {
                        await AddRowAsync(row, _messageAt, CancellationToken.None).ConfigureAwait(false);
                    }

                    rows.Clear();
                }

                _messageBytes = 0;
            }

            // A stage failed for a reason no message caused, on a message's row: the rows of the messages before it (complete,
            // and past every stage) are committed, just before it, as when a message starts a fresh batch. Without this, a
            // run that takes many messages at once would fail with them all every time (a DistinctBy past its budget at
            // the same message of each run), and none would ever be acknowledged. The failed message's own rows, when they
            // are in the open batch with nothing before them, are dropped with it.
            async ValueTask CommitBeforeFailedMessageAsync()
            {
                if (_messageDone)
                {
                    await JoinMessageRowsAsync().ConfigureAwait(false);
                }

                if (!_buffering && _ofSourceRow > 0)
                {
                    return;
                }

                var earlier = _buffering ? _inBatch - _ofSourceRow : _inBatch;
                _messageRows?.Clear();
                _buffering = false;
                if (earlier <= 0)
                {
                    return;
                }

                if (_sealedSlots is { } slots)
                {
                    await slots.WaitAsync(CancellationToken.None).ConfigureAwait(false);
                }

                var offset = _run.Source.Offset;
                var before = offset - 1;
                var bookmark = _options.Bookmarks ? _run.Source.Capture(completed: false) with { Offset = before, Line = before } : null;
                Enqueue(new EtlCommit(bookmark, _run.TakeQuarantine(offset)) { Position = before });
                _inBatch = 0;
                _batchBytes = 0;
                _messageBytes = 0;
                await batcher.FlushAsync(CancellationToken.None).ConfigureAwait(false);
            }

            // The open batch is handed to the loader (not waited for).
            void Flush()
            {
                var handed = batcher.FlushAsync(CancellationToken.None);
                if (!handed.IsCompleted)
                {
                    _ = handed.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                }
            }

            // Called by a transport source between rows when it is idle, or holds many rows that no batch covers: the open
            // batch is sealed and loaded now, so that its messages are acknowledged and the transport delivers more.
            async ValueTask SealOpenBatchAsync()
            {
                if (_messageDone)
                {
                    await JoinMessageRowsAsync().ConfigureAwait(false);
                }

                EtlCommit? empty = null;
                if (_inBatch > 0)
                {
                    if (_sealedSlots is { } slots && _pending is null)
                    {
                        await slots.WaitAsync(CancellationToken.None).ConfigureAwait(false);
                    }

                    Seal();
                }
                else
                {
                    empty = WithConsumed(Commit(completed: false));
                    _run.SealedPosition = empty.Position ?? _run.SealedPosition;
                }

                await batcher.FlushAsync(CancellationToken.None).ConfigureAwait(false);
                if (empty is null || Volatile.Read(ref _loadFailure) is not null)
                {
                    return;
                }

                // No row to load: those since the last batch were filtered out or quarantined, or the batch before ended on
                // the last row of a source row it split (a file source's; a queue source never splits a message). The quarantined
                // rows and the messages' ids are stored (by a sink that stores them, with the bookmark, in one transaction)
                // before the messages are acknowledged: an id acknowledged but not recorded would be loaded again if the
                // transport delivered its message again.
                await StoreQuarantineAsync(empty, CancellationToken.None).ConfigureAwait(false);
                if ((empty.Quarantined.Count > 0 && _writer.StoresQuarantine) || empty.Consumed.Count > 0)
                {
                    await _writer.WriteAsync(ReadOnlyMemory<T>.Empty, empty, CancellationToken.None).ConfigureAwait(false);
                    _lastBookmark = empty.Bookmark ?? _lastBookmark;
                }

                if (empty.Position is { } position)
                {
                    _run.Acknowledgements?.Acknowledge(position);
                }

                Report(_run.Time.GetElapsedTime(_started));
            }

            // This row seals a batch: its commit goes in first, so the handler finds it.
            void Seal()
            {
                Enqueue(TakeCommit());
                _inBatch = 0;
                _batchBytes = 0;
            }

            static async ValueTask AwaitAddAsync(ValueTask<bool> adding) => await adding.ConfigureAwait(false);
        }

        private EtlCommit Commit(bool completed)
        {
            long? position = _run.PositionsTrackRows ? _run.Source.Offset : null;
            return new(_run.PositionsTrackRows && _options.Bookmarks ? _run.Source.Capture(completed) : null, _run.TakeQuarantine()) { Position = position };
        }

        /// <summary>The open batch's commit now, with the rows quarantined before a commit it held since it filled.</summary>
        private EtlCommit TakeCommit()
        {
            var commit = Commit(completed: false);
            if (_pending is { } held)
            {
                _pending = null;
                if (held.Quarantined.Count > 0)
                {
                    commit = commit with { Quarantined = [.. held.Quarantined, .. commit.Quarantined] };
                }
            }

            return commit;
        }

        /// <summary>A held commit with the rows quarantined since it was taken (all of the source row it covers, on the stream's task).</summary>
        private EtlCommit WithLaterQuarantine(EtlCommit held)
        {
            var later = _run.TakeQuarantine();
            return later.Count == 0 ? held : held with { Quarantined = [.. held.Quarantined, .. later] };
        }

        /// <summary>
        /// The commit with the ids of the messages it covers, recorded with it by a sink that stores them (stream task):
        /// taken once the commit's position is final, so a message whose rows span two batches goes with the second.
        /// </summary>
        private EtlCommit WithConsumed(EtlCommit commit)
        {
            if (commit.Position is not { } through || _run.Acknowledgements is not { } source)
            {
                return commit;
            }

            var ids = source.TakeConsumed(through, out var positions);
            return commit with { Consumed = ids, ConsumedAt = positions };
        }

        /// <summary>A sealed batch's commit goes in before the batch, so the handler finds it (stream task).</summary>
        private void Enqueue(EtlCommit commit)
        {
            commit = WithConsumed(commit);
            _commits.Enqueue(commit);
            if (commit.Position is { } position)
            {
                _run.SealedPosition = position;
            }

            if (commit.Bookmark is { } bookmark)
            {
                _sealedBookmark = bookmark;
            }
        }

        /// <summary>Commits (taken on the stream's task) that no batch carried, merged with the rows quarantined since.</summary>
        private List<QuarantinedRow> Leftover()
        {
            var rows = new List<QuarantinedRow>();
            while (_commits.TryDequeue(out var commit))
            {
                rows.AddRange(commit.Quarantined);
            }

            rows.AddRange(_run.TakeQuarantine());
            return rows;
        }

        private async ValueTask FlushLeftoverAsync(CancellationToken cancellationToken)
        {
            var leftover = Leftover();
            if (leftover.Count == 0)
            {
                return;
            }

            var commit = new EtlCommit(_lastBookmark, leftover);
            await StoreQuarantineAsync(commit, cancellationToken).ConfigureAwait(false);
            if (_writer.StoresQuarantine)
            {
                await _writer.WriteAsync(ReadOnlyMemory<T>.Empty, commit, cancellationToken).ConfigureAwait(false);
            }
        }

        private async ValueTask HandleAsync(Batch<T> batch, CancellationToken cancellationToken)
        {
            try
            {
                await LoadAsync(batch, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _sealedSlots?.Release();
            }
        }

        private async ValueTask LoadAsync(Batch<T> batch, CancellationToken cancellationToken)
        {
            if (Volatile.Read(ref _loadFailure) is not null)
            {
                return;
            }

            if (!_commits.TryDequeue(out var commit))
            {
                if (_dropOpenBatch)
                {
                    return;
                }

                Volatile.Write(ref _loadFailure, new InvalidOperationException($"ETL job '{_run.Job}': a batch of {batch.Count} rows has no commit (bookmark); it was not loaded. This is a bug."));
                await _stop.CancelAsync().ConfigureAwait(false);
                return;
            }

            var count = batch.Count;
            if (_rows.Length < count)
            {
                _rows = new T[count];
            }

            batch.Items.CopyTo(_rows);
            if (_origins is { } origins)
            {
                if (_rowOrigins.Length < count)
                {
                    _rowOrigins = new long[count];
                }

                for (var i = 0; i < count; i++)
                {
                    _rowOrigins[i] = origins.TryDequeue(out var origin) ? origin : long.MinValue;
                }
            }

            if (_origins is not null && commit.Consumed.Count > 0)
            {
                // Which message each row came from: a multicast branch that already recorded a message skips its rows.
                commit = commit with { RowOrigins = _rowOrigins.AsMemory(0, count) };
            }

            var began = _run.Time.GetTimestamp();
            try
            {
                await StoreQuarantineAsync(commit, cancellationToken).ConfigureAwait(false);
                var counts = await _writer.WriteAsync(_rows.AsMemory(0, count), commit, cancellationToken).ConfigureAwait(false);
                _counts += counts;
                _loaded += count;
                if (commit.Bookmark is not null)
                {
                    _lastBookmark = commit.Bookmark;
                }

                if (commit.Position is { } position)
                {
                    // The batch is durable: the messages it covers (loaded, filtered out or quarantined) are acknowledged.
                    _run.Acknowledgements?.Acknowledge(position);
                }

                var tags = _run.Tags;
                EtlTelemetry.RowsLoaded.Add(count, tags);
                EtlTelemetry.BatchDuration.Record(_run.Time.GetElapsedTime(began).TotalSeconds, tags);
                Record(counts, tags);
                Report(_run.Time.GetElapsedTime(_started));
            }
            catch (Exception ex)
            {
                _failedThrough = commit.Position;
                if (ex is EtlBranchException { Row: { } row, Branch: var branch } && _origins is not null && row < count && _rowOrigins[row] != long.MinValue)
                {
                    // A branch's filter or map failed on one row of the batch: its message is known.
                    _failedRowAt = _rowOrigins[row];
                    _failedBranch = branch;
                }

                Volatile.Write(ref _loadFailure, ex);
                await _stop.CancelAsync().ConfigureAwait(false);
            }
            finally
            {
                Array.Clear(_rows, 0, count);
            }
        }

        public void Dispose()
        {
            _stop.Dispose();
            _sealedSlots?.Dispose();
        }

        private ValueTask StoreQuarantineAsync(EtlCommit commit, CancellationToken cancellationToken) =>
            commit.Quarantined.Count > 0 && !_writer.StoresQuarantine ? _quarantine.WriteAsync(commit.Quarantined, cancellationToken) : default;

        private void Report(TimeSpan elapsed)
        {
            _run.StageCounts.Record(_loaded, _run.Tags);
            if (_options.Progress is not { } progress)
            {
                return;
            }

            var source = _run.Source;
            var read = _run.RowsRead;
            var rate = elapsed.TotalSeconds > 0 ? read / elapsed.TotalSeconds : 0;
            TimeSpan? eta = null;
            if (source?.Length is { } length && length > 0 && source.BytesRead > 0)
            {
                var bytesPerSecond = source.BytesRead / Math.Max(elapsed.TotalSeconds, 1e-3);
                eta = TimeSpan.FromSeconds(Math.Max(0, length - source.BytesRead) / bytesPerSecond);
            }

            progress.Report(new EtlProgress(_run.RunId, _run.Job, read, _loaded, _run.Quarantined, source?.BytesRead ?? 0, source?.Length, elapsed, rate, eta)
            {
                Stages = _run.StageCounts.Snapshot(read, _loaded),
            });
        }

        private static void Record(EtlLoadCounts counts, TagList tags)
        {
            Change(counts.Inserted, "inserted", tags);
            Change(counts.Updated, "updated", tags);
            Change(counts.Deleted, "deleted", tags);

            static void Change(long count, string change, TagList tags)
            {
                if (count > 0)
                {
                    tags.Add(EtlTelemetry.ChangeTag, change);
                    EtlTelemetry.RowsChanged.Add(count, tags);
                }
            }
        }

        private void RecordRun(EtlRunStatus status, TimeSpan duration)
        {
            var tags = _run.Tags;
            tags.Add(EtlTelemetry.StatusTag, status.ToString());
            EtlTelemetry.RunDuration.Record(duration.TotalSeconds, tags);
            EtlLog.Finished(_run.Logger, _run.Job, _run.Partition ?? string.Empty, _run.RunId, status, _run.RowsRead, _counts.Inserted, _counts.Updated, _counts.Deleted, _run.Quarantined, duration);
        }
    }
}
