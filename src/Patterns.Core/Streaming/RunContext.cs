using System.Runtime.ExceptionServices;
using Microsoft.Extensions.Logging;
using Patterns.Telemetry;
using Polly;

namespace Patterns.Streaming;

/// <summary>Everything shared by the stages of one run of a pipeline: time, logging, the dead-letter output, snapshots, failure and stop.</summary>
internal sealed class RunContext : IDisposable
{
    private readonly CancellationTokenSource _abort;
    private readonly Lock _gate = new();
    private readonly List<Task> _auxiliary = [];
    private readonly Dictionary<string, object> _savedState = new(StringComparer.Ordinal);
    private readonly Dictionary<object, object> _shared = [];
    private readonly HashSet<string> _stages = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _stateful = new(StringComparer.Ordinal);
    private readonly List<Action<Storage.UnitOfWork>> _pendingWrites = [];
    private ExceptionDispatchInfo? _failure;
    private bool _endCommitted;

    public RunContext(string name, StreamOptions options, TimeProvider time, ILogger logger, IReadOnlyDictionary<string, object>? restored, CancellationToken stop, CancellationToken abort, TaskCompletionSource? started = null)
    {
        Started = started;
        Name = name;
        Options = options;
        Time = time;
        Logger = logger;
        Restored = restored;
        StopToken = stop;
        _abort = CancellationTokenSource.CreateLinkedTokenSource(abort);
        Tags = PatternsTelemetry.Tags(StreamingTelemetry.System, name);
    }

    public string Name { get; }

    /// <summary>Gets the lease the run holds on the pipeline's name, when the store has leases (on the host); its commits require it.</summary>
    public Storage.Lease? Lease { get; init; }

    /// <summary>Gets the snapshot store of the run, if any.</summary>
    public IStreamSnapshotStore? Store { get; init; }

    /// <summary>Gets a value indicating whether the snapshots go to the store through units of work, so that sink writes can commit with them.</summary>
    public bool DurableStore => Store is StoreStreamSnapshotStore;

    /// <summary>Gets a value indicating whether a transport source holds its acknowledgements until a snapshot that includes the messages commits: the store is durable.</summary>
    public bool HoldsAcknowledgements => DurableStore;

    /// <summary>Completed once the source is attached (a transport source has subscribed), so the host can start after it.</summary>
    public TaskCompletionSource? Started { get; }

    public StreamOptions Options { get; }

    public TimeProvider Time { get; }

    public ILogger Logger { get; }

    public System.Diagnostics.TagList Tags { get; }

    /// <summary>Cancelled when the pipeline should stop reading its source (a graceful stop, with a snapshot).</summary>
    public CancellationToken StopToken { get; }

    /// <summary>Cancelled when the run must end now: a stage failed with <see cref="FailurePolicy.Stop"/>, or the drain deadline passed. User code sees it.</summary>
    public CancellationToken AbortToken => _abort.Token;

    /// <summary>Operator state loaded from the snapshot store, by stage name (with its partition).</summary>
    public IReadOnlyDictionary<string, object>? Restored { get; }

    public Exception? Failure => _failure?.SourceException;

    public IReadOnlyDictionary<string, object> SavedState => _savedState;

    public IReadOnlyList<Task> Auxiliary
    {
        get
        {
            lock (_gate)
            {
                return [.. _auxiliary];
            }
        }
    }

    /// <summary>Records the first fatal failure and aborts every stage.</summary>
    public void Fail(Exception exception)
    {
        lock (_gate)
        {
            if (_failure is not null || (exception is OperationCanceledException && _abort.IsCancellationRequested))
            {
                return;
            }

            _failure = ExceptionDispatchInfo.Capture(exception);
        }

        if (StreamPipeline.IsOwnInboxDuplicate(exception, out var messageId))
        {
            StreamingLog.CopyTakenAgain(Logger, Name, messageId);
        }
        else
        {
            StreamingLog.PipelineFailed(Logger, exception, Name);
        }

        _abort.Cancel();
    }

    public void ThrowIfFailed() => _failure?.Throw();

    /// <summary>Starts a task that belongs to the run (a partition's driver, the merge in front of the sink); the run waits for it.</summary>
    public Task StartAuxiliary(Func<Task> run)
    {
        var task = Task.Run(async () =>
        {
            try
            {
                await run().ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                Fail(ex);
            }
        });
        lock (_gate)
        {
            _auxiliary.Add(task);
        }

        return task;
    }

    /// <summary>One object per key for the whole run (the merge in front of a partitioned sink).</summary>
    public TShared GetOrAddShared<TShared>(object key, Func<TShared> create)
        where TShared : class
    {
        lock (_gate)
        {
            if (!_shared.TryGetValue(key, out var value))
            {
                value = create();
                _shared.Add(key, value);
            }

            return (TShared)value;
        }
    }

    /// <summary>Records a stage of the run; stage names are unique in a pipeline, since they key snapshots and dead letters.</summary>
    public void RegisterStage(string stageId)
    {
        lock (_gate)
        {
            if (!_stages.Add(stageId))
            {
                throw new InvalidOperationException(
                    $"Stream '{Name}' has two stages named '{stageId}'. Stage names key the snapshot and the dead letters, so they are unique in a pipeline: give the stages distinct name: arguments.");
            }
        }
    }

    /// <summary>
    /// The saved state of a stateful stage, or <see langword="null"/> when the run starts without a snapshot. The stage
    /// is recorded, so that <see cref="VerifyRestored"/> can match the snapshot against the pipeline once it is built.
    /// </summary>
    public object? Restore(string stageId, string kind)
    {
        lock (_gate)
        {
            _stateful[stageId] = kind;
        }

        return Restored is not null && Restored.TryGetValue(stageId, out var saved) ? saved : null;
    }

    /// <summary>Fails when the snapshot does not hold exactly the state of the pipeline's stateful stages, naming the stages that do not match.</summary>
    public void VerifyRestored()
    {
        if (Restored is null)
        {
            return;
        }

        List<string> unknown;
        List<string> missing;
        lock (_gate)
        {
            unknown = [.. Restored.Keys.Where(k => !_stateful.ContainsKey(k)).Order(StringComparer.Ordinal)];
            missing = [.. _stateful.Keys.Where(k => !Restored.ContainsKey(k)).Order(StringComparer.Ordinal)];
        }

        if (unknown.Count == 0 && missing.Count == 0)
        {
            return;
        }

        var problems = new List<string>(2);
        if (unknown.Count > 0)
        {
            problems.Add($"the snapshot holds state for {Quote(unknown)}, which the pipeline does not have");
        }

        if (missing.Count > 0)
        {
            problems.Add($"the pipeline's {Quote(missing, s => $"'{s}' ({_stateful[s]})")} has no state in the snapshot");
        }

        throw new StreamSnapshotMismatchException(
            Name,
            unknown.Count > 0 ? unknown[0] : missing[0],
            $"Stream '{Name}' cannot resume from its snapshot: {string.Join(", and ", problems)}. " +
            "A snapshot is restored only into the stages that saved it, matched by stage name (an operator's name: argument, or its kind and position without one) and by partition. " +
            "Give stateful stages names so that they survive changes around them, run the pipeline that saved the snapshot, or delete the snapshot to start empty.");

        static string Quote(List<string> stages, Func<string, string>? format = null) =>
            (stages.Count == 1 ? "stage " : "stages ") + string.Join(", ", stages.Select(s => format?.Invoke(s) ?? $"'{s}'"));
    }

    /// <summary>Gets or sets what takes part in each commit of a snapshot: a transport source that holds acknowledgements until then.</summary>
    public ICheckpointParticipant? Source { get; set; }

    /// <summary>Gets or sets what commits a snapshot (with the sink writes that go with it): set by the pipeline for a run that takes periodic snapshots.</summary>
    public Func<bool, ValueTask>? Committer { get; set; }

    /// <summary>Gets the number of snapshots committed by this run.</summary>
    public int Commits { get; private set; }

    /// <summary>A transactional sink hands over writes to commit with the next snapshot.</summary>
    public void AddPendingWrite(Action<Storage.UnitOfWork> write)
    {
        lock (_gate)
        {
            _pendingWrites.Add(write);
        }
    }

    /// <summary>Takes the writes to commit with the snapshot being taken.</summary>
    public List<Action<Storage.UnitOfWork>> TakePendingWrites()
    {
        lock (_gate)
        {
            var writes = new List<Action<Storage.UnitOfWork>>(_pendingWrites);
            _pendingWrites.Clear();
            return writes;
        }
    }

    /// <summary>
    /// Takes a snapshot between two elements, on the driver's task: the stages save their state and hand over their
    /// writes, then the snapshot commits, and only then is the input it includes acknowledged.
    /// </summary>
    public async ValueTask CheckpointAsync<T>(Stage<T> head)
    {
        if (Committer is not { } commit)
        {
            return;
        }

        await head.OnCheckpointAsync().ConfigureAwait(false);
        await CommitAsync(commit, endOfRun: false).ConfigureAwait(false);
    }

    /// <summary>Commits the state saved at the end of the run (a graceful stop or the end of the input) and acknowledges what it includes; once only.</summary>
    public ValueTask CommitEndAsync() => Committer is { } commit && !_endCommitted ? CommitAsync(commit, endOfRun: true) : default;

    /// <summary>
    /// Gets a value indicating whether a snapshot's commit failed: the run ends for the store's sake (or because a copy it
    /// took is committed already), not because of the messages it held, which go back to the transport uncounted. Set
    /// only by the store's I/O: a snapshot that cannot be built (state that does not serialise) fails like a stage, counted.
    /// </summary>
    public bool CommitFailed { get; set; }

    private async ValueTask CommitAsync(Func<bool, ValueTask> commit, bool endOfRun)
    {
        _endCommitted |= endOfRun;
        var captured = Source?.Capture();
        await commit(endOfRun).ConfigureAwait(false);

        Commits++;
        StreamingLog.Committed(Logger, Name, Commits, (captured as System.Collections.ICollection)?.Count ?? 0);
        Source?.Committed(captured);
    }

    /// <summary>A window stage whose input is exhausted has fired everything: it has no state to save any more.</summary>
    public void RemoveState(string stageId)
    {
        lock (_gate)
        {
            _savedState.Remove(stageId);
        }
    }

    public void SaveState(string stageId, object state)
    {
        lock (_gate)
        {
            _savedState[stageId] = state;
        }
    }

    public ResiliencePipeline? BuildPipeline(FailurePolicy policy)
    {
        if (policy.Action != FailureAction.Retry)
        {
            return null;
        }

        return policy.Pipeline ?? new ResiliencePipelineBuilder { TimeProvider = Time }.AddRetry(policy.RetryOptions!).Build();
    }

    /// <summary>Records an element in the dead-letter output.</summary>
    public async ValueTask DeadLetterAsync(string stage, object? element, Exception exception)
    {
        PatternsTelemetry.DeadLettered.Add(1, Tags);
        var callback = Options.OnDeadLetter;
        if (callback is null)
        {
            StreamingLog.DeadLettered(Logger, exception, Name, stage);
            return;
        }

        try
        {
            await callback(new StreamDeadLetter(Name, stage, element, exception, Time.GetUtcNow()), AbortToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !AbortToken.IsCancellationRequested)
        {
            StreamingLog.DeadLetterCallbackFailed(Logger, ex, Name, stage);
        }
    }

    public void Dispose() => _abort.Dispose();
}

/// <summary>A source that acknowledges its input only once a snapshot that includes it has committed.</summary>
internal interface ICheckpointParticipant
{
    /// <summary>On the driver's task, at the snapshot: what has been taken into the pipeline so far.</summary>
    object? Capture();

    /// <summary>The snapshot that included <paramref name="captured"/> committed: acknowledge it.</summary>
    void Committed(object? captured);
}
