using Patterns.Orchestration.History;
using Patterns.Serialization;

namespace Patterns.Orchestration.Engine;

/// <summary>
/// One run of one workflow instance: feeds history events to the code on its <see cref="WorkflowScheduler"/>, collects the
/// commands the code makes and, while replaying, checks each command against the one the history recorded.
/// </summary>
/// <remarks>Not thread-safe: the runtime drives an executor from one workflow task at a time.</remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "The cancellation source has no timer; the executor is dropped with the instance.")]
internal sealed partial class WorkflowExecutor
{
    private readonly WorkflowDefinition _definition;
    private readonly IServiceProvider _services;
    private readonly IMessageSerializer _serializer;
    private readonly WorkflowScheduler _scheduler;
    private readonly CancellationTokenSource _cancel = new();
    private Dictionary<int, Operation>? _operations; // allocated on first use, like the rest below
    // Allocated on first use: a cached instance that waits costs only what it uses (100,000 suspended instances add up).
    private Dictionary<string, Queue<byte[]?>>? _signals;
    private List<SignalWaiter>? _signalWaiters;
    private List<(Func<bool> Condition, TaskCompletionSource Done)>? _conditions;
    private Dictionary<string, Func<(object? Value, Type Type)>>? _queries;
    private Dictionary<string, (Type ArgumentType, Func<object?, Task<(object? Value, Type Type)>> Handler)>? _updates;
    private Dictionary<string, bool>? _patches;
    // Updates (and what came after them in the same task) that arrived before their handler was registered: applied, in
    // order, once the code has run until it waits (an update delivered with the start finds the handlers the body registers).
    private List<HistoryEvent>? _held;
    // Updates whose handler has started and not completed: failed, not left waiting, if the run ends first.
    private List<HistoryEvent>? _openUpdates;
    private HashSet<string>? _seenMessageIds;
    private readonly int _continueAsNewThreshold;
    private List<HistoryEvent> _commands = [];
    private List<LocalActivity>? _locals;
    private List<int>? _abandoned;
    private List<(HistoryEvent Event, long Index)>? _expected;
    private int _expectedPosition;
    private long _taskEnd;
    private WorkflowBase? _workflow;
    private Task<object?>? _main;
    private bool _mainDone;
    private int _sequence;
    private ulong _guidState;
    private Random? _random;
    private NonDeterminismException? _mismatch;

    public WorkflowExecutor(
        WorkflowDefinition definition, IServiceProvider services, IMessageSerializer serializer, string instanceId, int run, int continueAsNewThreshold, Action onEscape)
    {
        _definition = definition;
        _services = services;
        _serializer = serializer;
        _continueAsNewThreshold = continueAsNewThreshold;
        InstanceId = instanceId;
        Run = run;
        _scheduler = new WorkflowScheduler(onEscape);
        Context = new WorkflowContext(this);
        _guidState = Seed(instanceId, run);
    }

    public string InstanceId { get; }

    /// <summary>Gets the run's stream name (built once: a name built again for every commit would be kept by an in-memory store with each event).</summary>
    public required string Stream { get; init; }

    public int Run { get; }

    public WorkflowDefinition Definition => _definition;

    /// <summary>Gets what is told when a live task starts running local activity bodies (true) and when they are done (false): user code that may wait for other instances.</summary>
    public Action<bool>? LocalActivitiesRunning { get; init; }

    public WorkflowContext Context { get; }

    public WorkflowScheduler Scheduler => _scheduler;

    /// <summary>Gets the stream version: how many events of this run are committed (or replayed).</summary>
    public long Version { get; private set; }

    /// <summary>Gets the number of the last workflow task.</summary>
    public int TaskNumber { get; private set; }

    /// <summary>Gets the event that ended the run, or null while it runs.</summary>
    public HistoryEvent? Final { get; private set; }

    public bool IsReplaying => _expected is not null;

    public DateTimeOffset Now { get; private set; }

    public CancellationToken CancellationToken => _cancel.Token;

    public byte[]? CustomStatus { get; private set; }

    public bool CustomStatusChanged { get; set; }

    /// <summary>Gets or sets the instance summary as last committed (or read) by the runtime.</summary>
    public History.InstanceRecord? Record { get; set; }

    public string? ParentId { get; private set; }

    public int ParentSeq { get; private set; }

    public bool IsContinueAsNewSuggested => Version + _commands.Count >= _continueAsNewThreshold;

    public int HistoryLength => (int)Version + _commands.Count;

    public Random Random => _random ??= new Random(unchecked((int)_guidState ^ (int)(_guidState >> 32)));

    /// <summary>Gets whether a signal with this message id was applied already (a redelivered correlated message is applied once).</summary>
    public bool HasSeen(string messageId) => _seenMessageIds?.Contains(messageId) == true;

    /// <summary>Gets whether an update with this id was applied already (a request drained again from a mailbox after a crash runs its handler once).</summary>
    public bool HasSeenUpdate(string updateId) => _seenMessageIds?.Contains(UpdateKey(updateId)) == true;

    private static string UpdateKey(string updateId) => "update:" + updateId;

    /// <summary>Gets whether an activity is scheduled and not yet completed (without allocating: asked after every run's end).</summary>
    public bool HasPendingActivities
    {
        get
        {
            if (_operations is null)
            {
                return false;
            }

            // The dictionary's own enumerator: its Values collection would be allocated once and kept by the dictionary.
            foreach (var (_, operation) in _operations)
            {
                if (operation.Command.Kind == HistoryEventKind.ActivityScheduled)
                {
                    return true;
                }
            }

            return false;
        }
    }

    /// <summary>Gets the activities scheduled and not yet completed (to re-dispatch after a crash).</summary>
    public IEnumerable<HistoryEvent> PendingActivities => (_operations?.Values ?? Enumerable.Empty<Operation>()).Where(static o => o.Command.Kind == HistoryEventKind.ActivityScheduled).Select(static o => o.Command);

    /// <summary>Gets the children started and not yet completed.</summary>
    public IEnumerable<HistoryEvent> PendingChildren => (_operations?.Values ?? Enumerable.Empty<Operation>()).Where(static o => o.Command.Kind == HistoryEventKind.ChildStarted).Select(static o => o.Command);

    /// <summary>
    /// Gets whether the run waits only for what a replay of its history rebuilds (signals, updates not yet arrived,
    /// conditions): no activity, timer or child is outstanding, no update is held or open, nothing is left to send, and the
    /// code has not escaped its scheduler. Such an instance may leave the cache when idle and replay on its next item.
    /// </summary>
    public bool IsEvictable =>
        Final is null && !_mainDone && _operations is not { Count: > 0 } && _locals is null && _held is not { Count: > 0 }
        && _openUpdates is not { Count: > 0 } && _abandoned is null && _scheduler.Escape is null && !CustomStatusChanged;

    /// <summary>Gets whether an operation with this sequence number is still waiting for its result.</summary>
    public bool IsPending(int seq) => _operations?.ContainsKey(seq) == true;

    /// <summary>Replays a run's whole history, checking every recorded command against the code.</summary>
    /// <exception cref="NonDeterminismException">The code does not match the history.</exception>
    /// <exception cref="WorkflowDeterminismException">The code escaped its scheduler.</exception>
    public void Replay(IReadOnlyList<HistoryEvent> history)
    {
        var start = 0;
        while (start < history.Count)
        {
            var task = history[start].Task;
            var end = start;
            while (end < history.Count && history[end].Task == task)
            {
                end++;
            }

            var incoming = new List<HistoryEvent>();
            var expected = new List<(HistoryEvent, long)>();
            for (var i = start; i < end; i++)
            {
                if (history[i].IsIncoming)
                {
                    incoming.Add(history[i]);
                }
                else
                {
                    expected.Add((history[i], Version + i - start));
                }
            }

            _expected = expected;
            _expectedPosition = 0;
            _taskEnd = Version + (end - start);
            try
            {
                TaskNumber = task;
                Now = new DateTimeOffset(history[start].At, TimeSpan.Zero);
                ApplyAndRun(incoming);
                do
                {
                    // Recorded local activities resolve at the points where the live task resolved them (after the code
                    // waited), never inline: a continuation queued by a later event of the task then runs in the same order.
                    while (_locals is { Count: > 0 } locals)
                    {
                        _locals = null;
                        ResolveLocals(locals);
                    }
                }
                while (ApplyHeld());
                if (_mismatch is null && _expectedPosition < expected.Count)
                {
                    var (missing, index) = expected[_expectedPosition];
                    if (missing.IsFinal && _main is { IsCompleted: false })
                    {
                        _mismatch = new NonDeterminismException(InstanceId, index, missing, "the workflow is still waiting");
                    }
                    else
                    {
                        _mismatch = new NonDeterminismException(InstanceId, index, missing, null);
                    }
                }

                ThrowIfFailed();
                foreach (var (recorded, _) in expected)
                {
                    Note(recorded);
                }
            }
            finally
            {
                _expected = null;
            }

            Version += end - start;
            start = end;
        }
    }

    /// <summary>Runs one live workflow task: applies <paramref name="incoming"/>, runs the code until it waits, runs its local activities.</summary>
    /// <returns>The task's events: the incoming ones (<paramref name="incoming"/> itself), then the commands, in order.</returns>
    public async ValueTask<List<HistoryEvent>> RunTaskAsync(List<HistoryEvent> incoming, DateTimeOffset now, CancellationToken cancellationToken)
    {
        TaskNumber++;
        Now = now;
        _commands.Clear();
        incoming[0].At = now.UtcTicks;

        // Stamped in place, as the time above: each incoming event was made for this delivery (a copy of each, and a list
        // for the copies, were a good part of what a timer's firing allocated). A task that fails leaves them stamped with
        // its number; the next attempt stamps them again.
        foreach (var e in incoming)
        {
            e.Stamp(TaskNumber);
        }

        var stamped = incoming;
        ApplyAndRun(stamped);
        do
        {
            while (_locals is { Count: > 0 } locals)
            {
                _locals = null;
                await RunLocalActivitiesAsync(locals, cancellationToken).ConfigureAwait(false);
                ResolveLocals(locals);
            }
        }
        while (ApplyHeld());

        ThrowIfFailed();
        foreach (var command in _commands)
        {
            Note(command);
        }

        stamped.AddRange(_commands);
        return stamped;
    }

    /// <summary>Hands the local activities' results (run now, or recorded when replaying) to the code and runs it until it waits.</summary>
    private void ResolveLocals(List<LocalActivity> locals)
    {
        _scheduler.RunUntilIdle(() =>
        {
            foreach (var local in locals)
            {
                Resolve(local.Command.Seq, local.Command, local.Command.Error is null ? null : local.Command);
            }
        });
        Settle();
    }

    /// <summary>Marks a live task's events as committed.</summary>
    public void Committed(int count)
    {
        Version += count;

        // Not kept while the instance waits (nor their buffer: 100,000 waiting instances add up). The list itself is kept
        // and only its buffer dropped: a waiting instance's list is in the old generation by the time its next task runs,
        // and a new list (or a buffer left in the old one) would be young memory that the old, soon dead, executor keeps
        // alive through every young collection until a full one (see Release).
        _commands.Clear();
        _commands.Capacity = 0;
    }

    /// <summary>
    /// Lets go of what the run's last task left on the executor, once the run has ended and the runtime has dropped it.
    /// </summary>
    /// <remarks>
    /// A waiting instance's executor has reached the old generation by the time its timer fires (or its signal arrives). When
    /// that last task ends the run, the executor is garbage, but young collections do not look at old objects' liveness:
    /// whatever young memory the dead executor still points to (the new instance summary, the final event and its result)
    /// survives them and is copied into the old generation, where it stays until a full collection. With 100,000 timers
    /// firing within seconds this was a large part of what each young collection copied.
    /// </remarks>
    public void Release()
    {
        Record = null;
        Final = null;
        CustomStatus = null;
        _commands.Clear();
        _commands.Capacity = 0;
        _held = null;
        _openUpdates = null;
        _locals = null;
        _abandoned = null;
    }

    /// <summary>Runs a query handler on the workflow's scheduler.</summary>
    /// <exception cref="KeyNotFoundException">No handler has this name.</exception>
    public (object? Value, Type Type) Query(string name)
    {
        if (_queries is null || !_queries.TryGetValue(name, out var handler))
        {
            throw new KeyNotFoundException($"Workflow '{_definition.Name}' (instance '{InstanceId}') has no query handler '{name}'; register it with ctx.SetQueryHandler.");
        }

        (object? Value, Type Type) result = default;
        _scheduler.RunUntilIdle(() => result = handler());
        return result;
    }

    private static ulong Seed(string instanceId, int run)
    {
        var hash = 14695981039346656037UL;
        foreach (var c in instanceId)
        {
            hash = (hash ^ c) * 1099511628211UL;
        }

        return (hash ^ (uint)run) * 1099511628211UL;
    }

    private void ApplyAndRun(List<HistoryEvent> incoming)
    {
        _scheduler.RunUntilIdle(static s => s.Executor.ApplyAll(s.Incoming), (Executor: this, Incoming: incoming));
        Settle();
    }

    private void ApplyAll(List<HistoryEvent> incoming)
    {
        foreach (var e in incoming)
        {
            if (_held is not null || (e.Kind == HistoryEventKind.UpdateRequested && !HasUpdateHandler(e.Name!) && !RejectedAsRecorded(e)))
            {
                // No handler yet (an update that came with the start, before the body registered its handlers): held
                // until the code waits, with everything after it, so the task's events still apply in arrival order.
                (_held ??= []).Add(e);
                continue;
            }

            Apply(e);
        }
    }

    /// <summary>Applies the events held back for a missing update handler, now that the code has run until it waits.</summary>
    /// <returns>Whether there were any.</returns>
    private bool ApplyHeld()
    {
        if (_held is not { } held)
        {
            return false;
        }

        _held = null;
        if (Final is null)
        {
            _scheduler.RunUntilIdle(() =>
            {
                foreach (var e in held)
                {
                    Apply(e); // an update whose handler is still missing is rejected now
                }
            });
            Settle();
        }

        return true;
    }
    /// <summary>Re-evaluates conditions until none becomes true, then records the end of the run if the code returned.</summary>
    private void Settle()
    {
        while (true)
        {
            var fired = false;
            for (var i = 0; i < (_conditions?.Count ?? 0); i++)
            {
                var (condition, done) = _conditions![i];
                bool met;
                try
                {
                    met = RunOnScheduler(condition);
                }
                catch (Exception ex)
                {
                    _conditions!.RemoveAt(i--);
                    _scheduler.RunUntilIdle(() => done.TrySetException(ex));
                    fired = true;
                    continue;
                }

                if (met)
                {
                    _conditions!.RemoveAt(i--);
                    _scheduler.RunUntilIdle(() => done.TrySetResult());
                    fired = true;
                }
            }

            if (!fired)
            {
                break;
            }
        }

        if (_mainDone && Final is null && _mismatch is null && _scheduler.Escape is null)
        {
            var end = EndOf(_main!);
            FailUnfinishedUpdates(end.Kind);
            Final = Emit(end);
        }
        else if (!_mainDone && _main is not null && _locals is not { Count: > 0 } && (_operations?.Count ?? 0) == 0 && (_signalWaiters?.Count ?? 0) == 0 && (_conditions?.Count ?? 0) == 0)
        {
            _scheduler.ReportEscape("the workflow is waiting for a task that is not a workflow operation, or resumed off its scheduler " +
                "(Task.Delay, Task.Run, I/O, a TaskCompletionSource, or ConfigureAwait(false)); await ctx.DelayAsync, activities, signals or " +
                "ctx.WaitConditionAsync, and never use ConfigureAwait(false) in workflow code");
        }
    }

    private bool RunOnScheduler(Func<bool> condition)
    {
        var result = false;
        _scheduler.RunUntilIdle(() => result = condition());
        return result;
    }

    private HistoryEvent EndOf(Task<object?> main)
    {
        if (main.IsCompletedSuccessfully)
        {
            return new HistoryEvent { Kind = HistoryEventKind.Completed, Task = TaskNumber, Payload = Serialize(main.Result, _workflow!.ResultType) };
        }

        var error = main.Exception?.InnerException;
        if (error is ContinueAsNewException next)
        {
            return new HistoryEvent { Kind = HistoryEventKind.ContinuedAsNew, Task = TaskNumber, Payload = next.Input };
        }

        if ((main.IsCanceled || error is OperationCanceledException) && _cancel.IsCancellationRequested)
        {
            return new HistoryEvent { Kind = HistoryEventKind.Canceled, Task = TaskNumber };
        }

        error ??= new OperationCanceledException("The workflow was cancelled by its own code.");
        return new HistoryEvent { Kind = HistoryEventKind.Failed, Task = TaskNumber, Error = error.Message, ErrorType = error.GetType().FullName };
    }

    private void ThrowIfFailed()
    {
        if (_mismatch is { } mismatch)
        {
            throw mismatch;
        }

        if (_scheduler.Escape is { } escape)
        {
            throw new WorkflowDeterminismException(InstanceId, escape);
        }
    }

    private void Note(HistoryEvent command)
    {
        switch (command.Kind)
        {
            case HistoryEventKind.UpdateCompleted:
                break;
            case HistoryEventKind.Completed or HistoryEventKind.Failed or HistoryEventKind.Canceled or HistoryEventKind.ContinuedAsNew:
                Final = command;
                break;
        }
    }

    private void Apply(HistoryEvent e)
    {
        switch (e.Kind)
        {
            case HistoryEventKind.Started:
                ParentId = e.Id;
                ParentSeq = e.Seq;
                Start(e.Payload);
                break;
            case HistoryEventKind.ActivityCompleted or HistoryEventKind.TimerFired or HistoryEventKind.ChildCompleted:
                Resolve(e.Seq, e, null);
                break;
            case HistoryEventKind.ActivityFailed or HistoryEventKind.ChildFailed:
                Resolve(e.Seq, null, e);
                break;
            case HistoryEventKind.SignalReceived:
                if (e.Id is { } messageId)
                {
                    (_seenMessageIds ??= new(StringComparer.Ordinal)).Add(messageId);
                }

                DeliverSignal(e.Name!, e.Payload);
                break;
            case HistoryEventKind.UpdateRequested:
                (_seenMessageIds ??= new(StringComparer.Ordinal)).Add(UpdateKey(e.Id!));
                StartUpdate(e);
                break;
            case HistoryEventKind.CancelRequested:
                _cancel.Cancel();
                break;
            case HistoryEventKind.Terminated:
                Final = e;
                break;
        }
    }

    private void Start(byte[]? payload)
    {
        _workflow = _definition.Create(_services);
        var input = payload is null ? null : _serializer.Deserialize(payload, _workflow.InputType);
        var workflow = _workflow;
        var context = Context;
        _main = Task.Factory.StartNew(() => workflow.ExecuteAsync(context, input), CancellationToken.None, TaskCreationOptions.DenyChildAttach, _scheduler).Unwrap();
        // Observed through the scheduler: a run that ends on another thread (ConfigureAwait(false)) is an escape, never an end.
        _main.ContinueWith(_ => _mainDone = true, CancellationToken.None, TaskContinuationOptions.None, _scheduler);
    }

    private void Resolve(int seq, HistoryEvent? completed, HistoryEvent? failed)
    {
        if (_operations is null || !_operations.Remove(seq, out var operation))
        {
            return; // a timer that fired after its wait ended, or a duplicate
        }

        operation.Registration.Unregister();

        if (failed is not null)
        {
            operation.Completion.TrySetException(failed.Kind == HistoryEventKind.ChildFailed
                ? new ChildWorkflowFailureException(operation.Command.Id!, failed.Error)
                : new ActivityFailureException(operation.Command.Name!, failed.ErrorType, failed.Error));
        }
        else
        {
            operation.Completion.TrySetResult(completed?.Payload);
        }
    }

    internal byte[]? Serialize(object? value, Type type) => _serializer.ToPayload(value, type);

    internal T Deserialize<T>(byte[]? payload) => payload is null ? default! : (T)_serializer.Deserialize(payload, typeof(T));

    internal object? Deserialize(byte[]? payload, Type type) => payload is null ? null : _serializer.Deserialize(payload, type);

    private sealed record Operation(HistoryEvent Command, TaskCompletionSource<byte[]?> Completion)
    {
        /// <summary>Gets the executor that waits (the state of the static cancellation callback).</summary>
        public required WorkflowExecutor Owner { get; init; }

        /// <summary>Gets or sets the registration on the wait's cancellation token, removed once the operation resolves (a long run would pile them up).</summary>
        public CancellationTokenRegistration Registration { get; set; }
    }

    private sealed record SignalWaiter(string Name, TaskCompletionSource<byte[]?> Completion)
    {
        /// <summary>Gets the executor that waits (the state of the static cancellation callback).</summary>
        public required WorkflowExecutor Owner { get; init; }

        /// <summary>Gets or sets the registration on the wait's cancellation token, removed once the signal arrives.</summary>
        public CancellationTokenRegistration Registration { get; set; }
    }

    private sealed record LocalActivity(HistoryEvent Command, Func<CancellationToken, Task<byte[]?>> Body);
}
