using System.Collections.Concurrent;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Patterns.Hosting;
using Patterns.Orchestration.Engine;
using Patterns.Orchestration.History;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.Orchestration.Runtime;

/// <summary>
/// The engine: one mailbox per instance, processed one workflow task at a time; each task's events, activity tasks, timer
/// index and instance summary commit in one unit of work, appended at the expected version (the instance lock).
/// </summary>
internal sealed partial class WorkflowRuntime : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, InstanceSlot> _slots = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, List<TaskCompletionSource<InstanceRecord>>> _closeWaiters = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, TaskCompletionSource<HistoryEvent>> _updateWaiters = new(StringComparer.Ordinal);
    private readonly Dictionary<string, WorkflowDefinition> _workflows;
    private readonly IServiceProvider _services;
    private readonly IEventStorage _storage;
    private readonly IUnitOfWorkStorage _units;
    private readonly CommitGroup _group;
    private readonly IDocumentStorage _documents;
    private readonly DocumentReader _records;

    /// <summary>Whether the store lives in this process (in memory), so no other process runs its instances.</summary>
    private readonly bool _singleProcess;
    private readonly IMessageSerializer _serializer;
    private readonly MessageBus _bus;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // Slots whose mailbox has items, waiting for one of the places (the lock), and how many places are taken.
    private readonly Queue<InstanceSlot> _ready = new();
    private readonly Action<bool> _localActivitiesRunning;
    private int _processing;
    private Activities.ActivityWorker? _worker;

    public WorkflowRuntime(
        IServiceProvider services,
        OrchestrationOptions options,
        IEnumerable<WorkflowDefinition> workflows,
        IEventStorage storage,
        IUnitOfWorkStorage units,
        IDocumentStorage documents,
        IMessageSerializer serializer,
        MessageBus bus,
        TimeProvider time,
        ILogger logger,
        ILeaseStore? leases = null)
    {
        _services = services;
        Options = options;
        _workflows = workflows.ToDictionary(static w => w.Name, StringComparer.Ordinal);
        _storage = storage;
        _units = units;
        _group = new CommitGroup(units, 512, OwnCommitted, LandedAsync);
        _documents = documents;
        _records = new DocumentReader(documents, InstanceRecord.Collection, maxInFlight: 4, _stopping.Token);
        _serializer = serializer;
        _bus = bus;
        _time = time;
        _logger = logger;
        Timers = new TimerService(time, DeliverTimer);
        _localActivitiesRunning = LocalActivitiesRunning;
        DirectDispatch = bus.Transport.IsInProcess;
        NodeId = options.NodeId ?? $"{Environment.MachineName}/{Environment.ProcessId}/{Guid.NewGuid().ToString("N")[..8]}";
        _singleProcess = storage is Patterns.EventSourcing.InMemory.InMemoryEventStorage;
        if (options.ExclusiveOwnership && leases is not null && !_singleProcess)
        {
            _leaseStore = leases;
            _leases = new Lease?[options.Partitions];
        }
    }

    public OrchestrationOptions Options { get; }

    /// <summary>Raised when an instance that ended or went idle leaves this process's instance map (tests wait on it instead of sleeping).</summary>
    public event Action<string>? SlotRemoved;

    /// <summary>Raised after each committed workflow task with its events (tests wait on it instead of sleeping).</summary>
    public event Action<string, IReadOnlyList<HistoryEvent>>? Committed;

    /// <summary>Raised when a timer whose workflow task failed is armed again (tests wait on it instead of sleeping).</summary>
    public event Action<TimerRecord>? TimerRetried;

    public TimerService Timers { get; }

    /// <summary>Gets the commit group that merges workflow tasks' units of work (tests watch it).</summary>
    public CommitGroup Group => _group;

    private int _replays;

    /// <summary>Gets how many times an instance was loaded by replaying its history (the cold path).</summary>
    public int Replays => Volatile.Read(ref _replays);

    private int _released;

    /// <summary>Gets how many ended runs' executors let go of their last task's objects (<see cref="WorkflowExecutor.Release"/>; tests watch it).</summary>
    public int ReleasedExecutors => Volatile.Read(ref _released);

    /// <summary>Gets whether activity tasks go straight to an in-process transport after the commit (an outbox adds nothing there: both are lost with the process, and recovery re-sends them).</summary>
    public bool DirectDispatch { get; }

    public IEventStorage Storage => _storage;

    public IDocumentStorage Documents => _documents;

    public IMessageSerializer Serializer => _serializer;

    /// <summary>Gets how many instances are in this process's map (cached, queued or being processed; for benchmarks).</summary>
    public int Slots => _slots.Count;

    public int CachedInstances => _slots.Count(static s => s.Value.Executor is not null);

    public WorkflowDefinition? FindWorkflow(string name) => _workflows.GetValueOrDefault(name);

    public string StreamOf(string instanceId, int run) =>
        run <= 1 ? Options.StreamPrefix + instanceId : $"{Options.StreamPrefix}{instanceId}~{run}";

    /// <summary>Queues an item on an instance's mailbox and returns a task for its outcome.</summary>
    public Task<object?> Enqueue(string instanceId, WorkItem item)
    {
        EnqueueAll(instanceId, [item]);
        return item.Done;
    }

    /// <summary>
    /// Queues items on an instance's mailbox at once: they are handled in one batch (one workflow task), in this order. Items
    /// whose outcome nobody waits for (a fired timer, a child's outcome or start) go this way rather than through
    /// <see cref="Enqueue"/>, whose task would be created for nothing.
    /// </summary>
    public void EnqueueAll(string instanceId, params ReadOnlySpan<WorkItem> items)
    {
        while (true)
        {
            var slot = _slots.GetOrAdd(instanceId, static (id, runtime) => new InstanceSlot(id, runtime), this);
            switch (slot.Add(items))
            {
                case InstanceSlot.AddResult.Start:
                    Schedule(slot);
                    return;
                case InstanceSlot.AddResult.Queued:
                    return;
                default:
                    // Evicted while idle: it leaves the map (if the eviction has not taken it out yet), and a new slot replays the instance.
                    _slots.TryRemove(new KeyValuePair<string, InstanceSlot>(instanceId, slot));
                    break;
            }
        }
    }

    /// <summary>Gets a task that completes once <see cref="StopAsync"/> has run (tests wait for it).</summary>
    internal Task Stopped => _stopped.Task;

    public async Task StopAsync()
    {
        try
        {
            (_worker ??= _services.GetRequiredService<Activities.ActivityWorker>()).Stop();
            Timers.Dispose();
            await _stopping.CancelAsync().ConfigureAwait(false);
            await StopOwnershipAsync().ConfigureAwait(false);
        }
        finally
        {
            _stopped.TrySetResult();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        Timers.Dispose();
        _stopping.Dispose();
    }

    /// <summary>
    /// Runs a slot's workflow tasks when fewer than <see cref="OrchestrationOptions.MaxConcurrentWorkflowTasks"/> slots are
    /// processed; otherwise the slot waits its turn, holding only its mailbox. 100,000 workflows started at once then hold
    /// about that many executors, histories and units of work at a time, instead of all of them: each used to load, run
    /// and queue its commit before the first committed task got back from behind them in the thread pool's queue.
    /// </summary>
    private void Schedule(InstanceSlot slot)
    {
        lock (_ready)
        {
            if (_processing >= Options.MaxConcurrentWorkflowTasks)
            {
                _ready.Enqueue(slot);
                return;
            }

            _processing++;
        }

        Run(slot);
    }

    /// <summary>Gets how many instances with work wait for a place (<see cref="OrchestrationOptions.MaxConcurrentWorkflowTasks"/>; tests watch it).</summary>
    public int WaitingForPlace
    {
        get
        {
            lock (_ready)
            {
                return _ready.Count;
            }
        }
    }

    /// <summary>
    /// Hands a finished slot's place to the slot that waited longest, or frees it. A place taken beyond the limit (by a
    /// task whose local activities ended, see <see cref="LocalActivitiesRunning"/>) is freed, not handed over.
    /// </summary>
    private void ReleasePlace()
    {
        InstanceSlot? next;
        lock (_ready)
        {
            if (_processing > Options.MaxConcurrentWorkflowTasks || !_ready.TryDequeue(out next))
            {
                _processing--;
                return;
            }
        }

        Run(next);
    }

    /// <summary>
    /// A workflow task gives its place up while its local activities run, and takes one back after them even beyond the
    /// limit (it holds live state that must commit): a local activity body may wait for another instance (start it and
    /// wait for its result, signal it), which might otherwise wait for a place that only that body's end would free.
    /// </summary>
    private void LocalActivitiesRunning(bool running)
    {
        if (running)
        {
            ReleasePlace();
            return;
        }

        lock (_ready)
        {
            _processing++;
        }
    }

    // The slot is the work item: a state object for each workflow task was one more allocation for every timer's firing.
    private static void Run(InstanceSlot slot) => ThreadPool.UnsafeQueueUserWorkItem(slot, preferLocal: false);

    /// <summary>
    /// Puts a slot with more work behind the slots that wait for a place, and hands its place to the one that waited
    /// longest (or frees it, if it was one taken beyond the limit): an instance whose mailbox keeps refilling would
    /// otherwise keep its place for as long as its requests keep coming, while the others wait. False when none waits.
    /// </summary>
    private bool YieldPlace(InstanceSlot slot)
    {
        InstanceSlot? next = null;
        lock (_ready)
        {
            if (_ready.Count == 0)
            {
                return false;
            }

            _ready.Enqueue(slot);
            if (_processing > Options.MaxConcurrentWorkflowTasks)
            {
                _processing--;
            }
            else
            {
                next = _ready.Dequeue();
            }
        }

        if (next is not null)
        {
            Run(next);
        }

        return true;
    }

    /// <summary>Runs a slot's workflow tasks until its mailbox is empty (the slot's work item, see <see cref="Run"/>).</summary>
    internal async Task ProcessAsync(InstanceSlot slot)
    {
        var yielded = false;
        try
        {
            while (slot.Take() is { } batch)
            {
                try
                {
                    await HandleBatchAsync(slot, batch).ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    slot.Executor = null;
                    OrchestrationLog.WorkflowTaskFailed(_logger, slot.InstanceId, ex);
                    foreach (var item in batch)
                    {
                        item.Fail(ex);
                    }

                    if (!_stopping.IsCancellationRequested)
                    {
                        RetryTimers(slot.InstanceId, batch);
                    }
                }

                if (slot.HasItems && YieldPlace(slot))
                {
                    yielded = true; // its next batch runs when its turn comes, with the place it is handed then
                    return;
                }
            }

            if (slot.Executor is null or { Final: not null } && slot.TryRetireIdle())
            {
                // Retired first, so that an item that took the slot from the map just before it left goes to a new slot
                // instead of being processed here, beside that new slot (two executors for one instance).
                _slots.TryRemove(new KeyValuePair<string, InstanceSlot>(slot.InstanceId, slot));
                SlotRemoved?.Invoke(slot.InstanceId);
            }
            else if (slot.Executor is { IsEvictable: true })
            {
                NoteIdle(slot);
            }
        }
        finally
        {
            if (!yielded)
            {
                ReleasePlace();
            }
        }
    }

    private async Task HandleBatchAsync(InstanceSlot slot, List<WorkItem> batch)
    {
        var pending = batch;
        for (var attempt = 0; ; attempt++)
        {
            if (!Owns(slot.InstanceId))
            {
                await HandleElsewhereAsync(slot, pending).ConfigureAwait(false);
                return;
            }

            var executor = slot.Executor;
            if (executor?.Scheduler.Escape is not null || pending.Exists(static i => i is EscapeItem))
            {
                if (executor?.Scheduler.Escape is { } escape)
                {
                    await FaultAsync(slot, new WorkflowDeterminismException(slot.InstanceId, escape), pending).ConfigureAwait(false);
                    return;
                }

                pending.RemoveAll(static i => i is EscapeItem && i.Done.IsCompleted is false && Complete(i));
            }

            if (pending.Find(static i => i is TerminateItem) is TerminateItem terminate)
            {
                await TerminateAsync(slot, terminate.Reason).ConfigureAwait(false);
                foreach (var item in pending)
                {
                    item.Complete();
                }

                return;
            }

            InstanceRecord? record = null;
            var loaded = false;
            if (executor is null)
            {
                loaded = true;
                try
                {
                    (executor, record) = await LoadAsync(slot).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is NonDeterminismException or WorkflowDeterminismException)
                {
                    await FaultAsync(slot, ex, pending).ConfigureAwait(false);
                    return;
                }
            }

            List<HistoryEvent> incoming = [];
            var isNew = false;
            if (executor is null)
            {
                var start = pending.Find(static i => i is StartItem) as StartItem
                    ?? (record is { NextInput: not null, ClosedAt: null } next ? new StartItem(next.Type, next.NextInput.Length == 0 ? null : next.NextInput, next.ParentId, next.ParentSeq) : null);
                if (start is null)
                {
                    await RemoveStaleTimersAsync(slot.InstanceId, pending).ConfigureAwait(false);
                    foreach (var item in pending)
                    {
                        if (item is EventItem { Event.Kind: HistoryEventKind.ActivityCompleted or HistoryEventKind.ActivityFailed or HistoryEventKind.TimerFired or HistoryEventKind.ChildCompleted or HistoryEventKind.ChildFailed })
                        {
                            item.Complete(); // for an instance that was purged: nothing to do
                        }
                        else
                        {
                            item.Fail(new WorkflowNotFoundException(slot.InstanceId));
                        }
                    }

                    return;
                }

                var definition = FindWorkflow(start.WorkflowType)
                    ?? throw new InvalidOperationException($"No workflow named '{start.WorkflowType}' is registered; add it with AddOrchestration(o => o.AddWorkflow<...>()).");
                var run = record?.Run ?? 1;
                executor = CreateExecutor(definition, slot, run);
                incoming.Add(new HistoryEvent { Kind = HistoryEventKind.Started, Name = definition.Name, Payload = start.Input, Id = start.ParentId, Seq = start.ParentSeq });
                record ??= new InstanceRecord
                {
                    Id = slot.InstanceId, Type = definition.Name, CreatedAt = _time.GetUtcNow(), ParentId = start.ParentId, ParentSeq = start.ParentSeq, Incarnation = Random.Shared.NextInt64(1, long.MaxValue),
                };
                record.Run = run;
                record.NextInput = null;
                isNew = true;
            }

            slot.Executor = executor;
            if (loaded && !isNew && attempt == 0 && executor.Final is null)
            {
                // Loaded from the store (the cold path): what it waits for may have been lost with a previous process.
                // A run that has ended waits for nothing: re-sending its pending activities would run them again (a
                // terminated instance's cancelled activity ran twice when its result brought the instance back in).
                await RedispatchAsync(executor).ConfigureAwait(false);
            }

            List<(WorkItem Item, string MessageId)>? claimed = null;
            List<int>? retried = null;
            List<WorkItem>? stale = null;
            foreach (var item in pending)
            {
                if (item is EventItem { Event: var e } eventItem)
                {
                    if (executor.Final is { } ended && e.Kind is HistoryEventKind.SignalReceived or HistoryEventKind.UpdateRequested or HistoryEventKind.CancelRequested)
                    {
                        item.Complete(ended); // refused: the run had ended before it arrived
                    }
                    else if (executor.Final is null && Accepts(executor, eventItem))
                    {
                        incoming.Add(e);
                        if (e is { Kind: HistoryEventKind.SignalReceived, Id: { } messageId })
                        {
                            (claimed ??= []).Add((item, messageId));
                        }
                        else if (eventItem.Retried)
                        {
                            (retried ??= []).Add(e.Seq);
                        }
                    }
                    else if (e.Kind == HistoryEventKind.TimerFired)
                    {
                        (stale ??= []).Add(item);
                    }
                }
            }

            if (stale is not null)
            {
                await RemoveStaleTimersAsync(slot.InstanceId, stale).ConfigureAwait(false);
            }

            if (incoming.Count == 0)
            {
                Answer(executor, pending);
                return;
            }

            List<HistoryEvent> events;
            try
            {
                events = await executor.RunTaskAsync(incoming, _time.GetUtcNow(), _stopping.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is NonDeterminismException or WorkflowDeterminismException)
            {
                if (isNew && record is not null)
                {
                    // Nothing of the run is recorded; the summary keeps its input so that a resume starts it again.
                    record.NextInput = incoming[0].Payload ?? [];
                    record.Status = WorkflowStatus.Faulted;
                    await _units.CommitAsync(new UnitOfWork().Upsert(InstanceRecord.Collection, record.Id, Encode(record)), _stopping.Token).ConfigureAwait(false);
                }

                await FaultAsync(slot, ex, pending).ConfigureAwait(false);
                return;
            }

            try
            {
                record ??= executor.Record ?? (isNew ? null : await ReadRecordAsync(slot.InstanceId).ConfigureAwait(false));
                await CommitAsync(executor, events, isNew, record, claimed, retried).ConfigureAwait(false);
            }
            catch (LeaseLostException)
            {
                // Another process owns the instance now: what this task did is dropped and the requests go to the owner.
                slot.Executor = null;
                await HandleElsewhereAsync(slot, pending).ConfigureAwait(false);
                return;
            }
            catch (Exception ex) when (ex is WrongExpectedVersionException or DuplicateMessageException && attempt < Options.MaxConflictRetries)
            {
                // Another writer appended first (or a correlated message was a copy): reload from the store and try again.
                slot.Executor = null;
                if (ex is DuplicateMessageException duplicate)
                {
                    RemoveDuplicate(pending, claimed ?? [], duplicate.MessageId);
                }

                if (isNew && ex is WrongExpectedVersionException)
                {
                    // Start is idempotent: the instance exists already.
                    pending.RemoveAll(static i => i is StartItem && Complete(i));
                }

                continue;
            }

            executor.Committed(events.Count);
            AfterCommit(slot, executor, events);
            Committed?.Invoke(slot.InstanceId, events);
            Answer(executor, pending);
            if (executor.Final is not null && !ReferenceEquals(slot.Executor, executor))
            {
                executor.Release(); // the run ended and the slot dropped it: nothing reads it again
                Interlocked.Increment(ref _released);
            }

            return;
        }
    }

    // A method of its own: a lambda here that captured the batch's claims would make every workflow task allocate their
    // closure up front (they are declared at the top of each attempt), duplicate or not.
    private static void RemoveDuplicate(List<WorkItem> pending, List<(WorkItem Item, string MessageId)> claimed, string messageId) =>
        pending.RemoveAll(i => claimed.Any(c => c.Item == i && c.MessageId == messageId) && Complete(i));

    private static bool Complete(WorkItem item)
    {
        item.Complete();
        return true;
    }

    private static bool Accepts(WorkflowExecutor executor, EventItem item)
    {
        var e = item.Event;
        if (item.Run != 0 && item.Run != executor.Run)
        {
            return false; // for an earlier run
        }

        return e.Kind switch
        {
            HistoryEventKind.ActivityCompleted or HistoryEventKind.ActivityFailed or HistoryEventKind.TimerFired
                or HistoryEventKind.ChildCompleted or HistoryEventKind.ChildFailed => executor.IsPending(e.Seq),
            HistoryEventKind.SignalReceived => e.Id is null || !executor.HasSeen(e.Id),
            HistoryEventKind.UpdateRequested => e.Id is null || !executor.HasSeenUpdate(e.Id),
            _ => true,
        };
    }

    private void Answer(WorkflowExecutor executor, List<WorkItem> items)
    {
        foreach (var item in items)
        {
            switch (item)
            {
                case QueryItem query:
                    try
                    {
                        var (value, type) = executor.Query(query.Name);
                        query.Complete(executor.Serialize(value, type));
                    }
                    catch (Exception ex)
                    {
                        query.Fail(ex);
                    }

                    break;
                default:
                    item.Complete();
                    break;
            }
        }
    }

    private WorkflowExecutor CreateExecutor(WorkflowDefinition definition, InstanceSlot slot, int run) =>
        new(definition, _services, _serializer, slot.InstanceId, run, Options.ContinueAsNewSuggestedAfter, () => Enqueue(slot.InstanceId, new EscapeItem()))
        {
            Stream = StreamOf(slot.InstanceId, run),
            LocalActivitiesRunning = _localActivitiesRunning,
        };

    private async Task FaultAsync(InstanceSlot slot, Exception error, List<WorkItem> items)
    {
        slot.Executor = null;
        OrchestrationLog.WorkflowFaulted(_logger, slot.InstanceId, error);
        if (await ReadRecordAsync(slot.InstanceId).ConfigureAwait(false) is { } record && record.Status is WorkflowStatus.Running or WorkflowStatus.Faulted)
        {
            record.Status = WorkflowStatus.Faulted;
            record.Error = error.Message;
            record.ErrorType = error.GetType().FullName;
            await _units.CommitAsync(new UnitOfWork().Upsert(InstanceRecord.Collection, record.Id, Encode(record)), _stopping.Token).ConfigureAwait(false);
            NotifyClosed(record);
        }

        foreach (var item in items)
        {
            if (item is StartItem)
            {
                item.Complete(); // the instance exists, faulted: its status says why
            }
            else
            {
                item.Fail(error);
            }
        }
    }

    internal async ValueTask<InstanceRecord?> ReadRecordAsync(string instanceId)
    {
        var bytes = await _records.ReadAsync(instanceId).ConfigureAwait(false);
        return bytes is null ? null : JsonSerializer.Deserialize(bytes, OrchestrationJson.Default.InstanceRecord);
    }

    internal static ReadOnlyMemory<byte> Encode(InstanceRecord record) => JsonSerializer.SerializeToUtf8Bytes(record, OrchestrationJson.Default.InstanceRecord);

    internal static HistoryEvent Decode(StoredEvent stored) =>
        JsonSerializer.Deserialize(stored.Data.Span, OrchestrationJson.Default.HistoryEvent)
        ?? throw new FormatException($"Event {stored.Version} of stream '{stored.StreamId}' is not a workflow history event.");
}
