using System.Collections.Concurrent;
using System.Text.Json;
using Patterns.Orchestration.History;
using Patterns.Storage;

namespace Patterns.Orchestration.Runtime;

/// <summary>
/// Single ownership of instances across processes that share a store: instances fall into partitions, each held through a
/// lease (<see cref="LeaseRunner"/>) by one process, which alone runs, dispatches and commits them (its commits are fenced by
/// the lease). A process that takes a partition over resumes its instances from the store; requests for an instance owned
/// elsewhere go to the owner through its partition's mailbox in the store.
/// </summary>
internal sealed partial class WorkflowRuntime
{
    /// <summary>What a request handed to another process completes with.</summary>
    public static readonly object HandedOff = new();

    private readonly ILeaseStore? _leaseStore;
    private readonly Lease?[]? _leases;
    private readonly List<Task> _owners = [];
    private readonly ConcurrentDictionary<string, bool> _draining = new(StringComparer.Ordinal);
    private bool _ownershipStarted;
    private long _handoffSequence;
    private long _handoffTicks;
    private int _liveNodes = 1;
    private long _liveNodesReadAt;
    private Task? _heartbeat;

    /// <summary>Gets the document collection where balancing processes announce themselves (key: node id, value: expiry in UTC ticks).</summary>
    private string NodesCollection => "orchestration-nodes-" + Options.StreamPrefix;

    /// <summary>Raised when this process takes or drops a partition (tests wait on it instead of sleeping).</summary>
    public event Action? OwnershipChanged;

    /// <summary>Gets how many processes that balance partitions were live at the last read (this one included).</summary>
    public int LiveNodes => Volatile.Read(ref _liveNodes);

    /// <summary>Gets how many partitions this process takes at most: all of them, or its share when balancing.</summary>
    private int Share => Options.BalancePartitions ? (Options.Partitions + LiveNodes - 1) / LiveNodes : Options.Partitions;

    /// <summary>Gets this process's owner id for partition leases.</summary>
    public string NodeId { get; }

    /// <summary>Gets whether instances are owned by one process at a time through partition leases.</summary>
    public bool ExclusiveOwnership => _leases is not null;

    /// <summary>Gets the partitions this process owns now.</summary>
    public IReadOnlyList<int> OwnedPartitions => _leases is null ? [] : [.. Enumerable.Range(0, _leases.Length).Where(p => Volatile.Read(ref _leases[p]) is not null)];

    /// <summary>Gets the partition of an instance: a stable hash of its id.</summary>
    public int PartitionOf(string instanceId)
    {
        var hash = 2166136261u;
        foreach (var c in instanceId)
        {
            hash = (hash ^ c) * 16777619u;
        }

        return (int)(hash % (uint)Options.Partitions);
    }

    /// <summary>Gets whether this process owns the instance (always, without exclusive ownership).</summary>
    public bool Owns(string instanceId) => _leases is null || Volatile.Read(ref _leases[PartitionOf(instanceId)]) is not null;

    /// <summary>Takes the partitions that are free (or the first round of trying), then resumes the instances of those it owns.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (_leases is null)
        {
            if (Options.RecoverOnStart)
            {
                await RecoverAsync(static _ => true, cancellationToken).ConfigureAwait(false);
            }

            return;
        }

        await StartWatchAsync(cancellationToken).ConfigureAwait(false);
        if (Options.BalancePartitions)
        {
            await AnnounceAsync(cancellationToken).ConfigureAwait(false);
            _heartbeat = HeartbeatAsync();
        }

        var firstRound = new Task[_leases.Length];
        for (var partition = 0; partition < _leases.Length; partition++)
        {
            var tried = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            firstRound[partition] = tried.Task;
            var p = partition;
            var runner = new LeaseRunner(_leaseStore!, $"orchestration/{Options.StreamPrefix}{p}", NodeId, Options.LeaseDuration, _time);
            _owners.Add(runner.RunAsync(
                (lease, owned) => OwnAsync(p, lease, tried, owned),
                () => tried.TrySetResult(),
                lost => OrchestrationLog.PartitionLost(_logger, p, lost.Owner),
                ex =>
                {
                    OrchestrationLog.OwnershipFailed(_logger, p, ex);
                    tried.TrySetResult();
                },
                _stopping.Token,
                Options.BalancePartitions ? MayTakeAsync : null));
        }

        await Task.WhenAll(firstRound).WaitAsync(cancellationToken).ConfigureAwait(false);
        Volatile.Write(ref _ownershipStarted, true);
        if (Options.RecoverOnStart)
        {
            await RecoverAsync(Owns, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task StopOwnershipAsync()
    {
        if (_heartbeat is not null)
        {
            await _heartbeat.ConfigureAwait(false);
            try
            {
                // Leaves first, so that the others count one process fewer when they take the partitions over.
                await _documents.DeleteAsync(NodesCollection, NodeId, CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                OrchestrationLog.MembershipFailed(_logger, ex); // it expires on its own
            }
        }

        // The runners release their leases as they stop, so another process takes the partitions over at once.
        await Task.WhenAll(_owners).ConfigureAwait(false);
        await StopWatchAsync().ConfigureAwait(false);
    }

    /// <summary>Whether this process may take one more partition: it owns fewer than its share (membership read again when older than <see cref="OrchestrationOptions.HandoffInterval"/>).</summary>
    private async ValueTask<bool> MayTakeAsync(CancellationToken cancellationToken)
    {
        if (_time.GetElapsedTime(Interlocked.Read(ref _liveNodesReadAt)) >= Options.HandoffInterval)
        {
            await CountLiveNodesAsync(cancellationToken).ConfigureAwait(false);
        }

        return OwnedPartitions.Count < Share;
    }

    /// <summary>Whether this process should give <paramref name="partition"/> up: it owns more than its share, and this is one of its highest-numbered.</summary>
    private bool ShouldYield(int partition)
    {
        if (!Options.BalancePartitions)
        {
            return false;
        }

        var owned = OwnedPartitions;
        var index = -1;
        for (var i = 0; i < owned.Count; i++)
        {
            if (owned[i] == partition)
            {
                index = i;
            }
        }

        return index >= Share;
    }

    /// <summary>Writes this process's membership document (live for one <see cref="OrchestrationOptions.LeaseDuration"/>), then counts the live ones.</summary>
    private async Task AnnounceAsync(CancellationToken cancellationToken)
    {
        var expires = new byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(expires, (_time.GetUtcNow() + Options.LeaseDuration).UtcTicks);
        await _documents.UpsertAsync(NodesCollection, NodeId, expires, cancellationToken).ConfigureAwait(false);
        await CountLiveNodesAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task CountLiveNodesAsync(CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow().UtcTicks;
        var live = 0;
        var self = false;
        await foreach (var (node, bytes) in _documents.ListAsync(NodesCollection, cancellationToken).ConfigureAwait(false))
        {
            if (bytes.Length == 8 && System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(bytes) > now)
            {
                live++;
                self |= node == NodeId;
            }
        }

        Volatile.Write(ref _liveNodes, Math.Max(1, self ? live : live + 1));
        Interlocked.Exchange(ref _liveNodesReadAt, _time.GetTimestamp());
    }

    /// <summary>Renews this process's membership every third of <see cref="OrchestrationOptions.LeaseDuration"/> until the engine stops.</summary>
    private async Task HeartbeatAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(Options.LeaseDuration / 3, _time, _stopping.Token).ConfigureAwait(false);
                await AnnounceAsync(_stopping.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                OrchestrationLog.MembershipFailed(_logger, ex);
            }
        }
    }

    private async Task<LeaseRunner.Outcome> OwnAsync(int partition, Lease lease, TaskCompletionSource tried, CancellationToken owned)
    {
        var yielded = false;
        Volatile.Write(ref _leases![partition], lease);
        tried.TrySetResult();
        OwnershipChanged?.Invoke();
        try
        {
            if (Volatile.Read(ref _ownershipStarted))
            {
                // Taken over from a process that stopped or died: resume what it ran.
                await RecoverAsync(id => PartitionOf(id) == partition, owned).ConfigureAwait(false);
            }

            while (true)
            {
                await DrainAsync(partition, owned).ConfigureAwait(false);
                if (ShouldYield(partition))
                {
                    // Another process joined: this one owns more than its share and gives the partition up for it.
                    yielded = true;
                    return LeaseRunner.Outcome.Yield;
                }

                // Requests handed over are drained at once by the watch loop; this read is the fallback for a lost wake-up.
                await Task.Delay(Options.HandoffInterval, _time, owned).ConfigureAwait(false);
            }
        }
        catch (Exception) when (owned.IsCancellationRequested)
        {
            // Stopped, or the lease was lost.
        }
        catch (Exception ex)
        {
            // The store failed while resuming or draining: give the partition up for now and take it again.
            OrchestrationLog.OwnershipFailed(_logger, partition, ex);
        }
        finally
        {
            Volatile.Write(ref _leases[partition], null);
            foreach (var (id, slot) in _slots)
            {
                if (PartitionOf(id) == partition)
                {
                    slot.Executor = null; // another process may change it from now on
                }
            }

            OwnershipChanged?.Invoke();
        }

        return _stopping.IsCancellationRequested ? LeaseRunner.Outcome.Done : yielded ? LeaseRunner.Outcome.Yield : LeaseRunner.Outcome.Lost;
    }

    /// <summary>Makes a commit for an instance conditional on still holding its partition's lease.</summary>
    private UnitOfWork Fence(UnitOfWork work, string instanceId)
    {
        if (_leases is not null)
        {
            var lease = Volatile.Read(ref _leases[PartitionOf(instanceId)])
                ?? throw new LeaseLostException(new Lease($"orchestration/{Options.StreamPrefix}{PartitionOf(instanceId)}", NodeId, 0, DateTimeOffset.MinValue), null);
            work.RequireLease(lease);
        }

        return work;
    }

    /// <summary>Handles the items of an instance another process owns: queries read the stored state, the rest go to the owner.</summary>
    private async Task HandleElsewhereAsync(InstanceSlot slot, List<WorkItem> items)
    {
        slot.Executor = null;
        List<WorkItem>? queries = null;
        foreach (var item in items)
        {
            switch (item)
            {
                case QueryItem:
                    (queries ??= []).Add(item);
                    break;
                case EscapeItem or EventItem { Event.Kind: HistoryEventKind.TimerFired }:
                    item.Complete(); // the owner fires its timers from the due-time index
                    break;
                default:
                    try
                    {
                        await HandOffAsync(slot.InstanceId, item).ConfigureAwait(false);
                        item.Complete(HandedOff);
                    }
                    catch (Exception ex)
                    {
                        item.Fail(ex);
                    }

                    break;
            }
        }

        if (queries is null)
        {
            return;
        }

        var (executor, _) = await LoadAsync(slot).ConfigureAwait(false);
        if (executor is null)
        {
            foreach (var query in queries)
            {
                query.Fail(new WorkflowNotFoundException(slot.InstanceId));
            }

            return;
        }

        Answer(executor, queries);
    }

    /// <summary>
    /// Mailboxes are drained in key order: the time (never going back, even if the clock does) and a counter keep one
    /// instance's requests in the order they were sent (a start before the update that follows it, signals in order), the
    /// GUID keeps keys of processes apart.
    /// </summary>
    internal string MailboxKey(string instanceId)
    {
        var now = _time.GetUtcNow().UtcTicks;
        long last, ticks;
        do
        {
            last = Volatile.Read(ref _handoffTicks);
            ticks = Math.Max(now, last + 1);
        }
        while (Interlocked.CompareExchange(ref _handoffTicks, ticks, last) != last);

        return $"{instanceId}|{ticks:x16}{Interlocked.Increment(ref _handoffSequence):x16}{Guid.NewGuid():N}";
    }

    /// <summary>Writes a request into the mailbox of the instance's partition; drains it at once if this process owns the partition meanwhile.</summary>
    private async Task HandOffAsync(string instanceId, WorkItem item)
    {
        var key = MailboxKey(instanceId);
        var handed = item switch
        {
            StartItem start => new HandedOffItem { InstanceId = instanceId, Kind = "s", WorkflowType = start.WorkflowType, Input = start.Input, ParentId = start.ParentId, ParentSeq = start.ParentSeq },
            EventItem { Event: { Kind: HistoryEventKind.SignalReceived, Id: null } signal } => new HandedOffItem
            {
                // The mailbox key becomes the signal's message id, so draining it twice applies it once.
                InstanceId = instanceId, Kind = "e", Event = new HistoryEvent { Kind = signal.Kind, Name = signal.Name, Payload = signal.Payload, Id = key },
            },
            EventItem e => new HandedOffItem { InstanceId = instanceId, Kind = "e", Event = e.Event, Run = e.Run, Retried = e.Retried },
            TerminateItem terminate => new HandedOffItem { InstanceId = instanceId, Kind = "t", Reason = terminate.Reason },
            _ => new HandedOffItem { InstanceId = instanceId, Kind = "r" },
        };
        var partition = PartitionOf(instanceId);

        // The marker event committed with the request wakes the owner's watch loop (in another process through the store's notifications).
        await _units.CommitAsync(AddToMailbox(new UnitOfWork(), partition, key, EncodeHandedOff(handed)), _stopping.Token).ConfigureAwait(false);
        if (Volatile.Read(ref _leases![partition]) is not null)
        {
            await DrainAsync(partition, _stopping.Token).ConfigureAwait(false);
        }
    }

    /// <summary>Applies the requests other processes handed to this partition's owner; each is removed once its effect is committed.</summary>
    private async Task DrainAsync(int partition, CancellationToken cancellationToken)
    {
        var collection = HandedOffItem.CollectionPrefix + partition;
        await foreach (var (key, bytes) in _documents.ListAsync(collection, cancellationToken).ConfigureAwait(false))
        {
            if (!_draining.TryAdd(key, true))
            {
                continue;
            }

            WorkItem item;
            HandedOffItem? handed;
            try
            {
                handed = JsonSerializer.Deserialize(bytes, OrchestrationJson.Default.HandedOffItem);
            }
            catch (JsonException)
            {
                handed = null;
            }

            item = handed switch
            {
                { Kind: "s" } => new StartItem(handed.WorkflowType!, handed.Input, handed.ParentId, handed.ParentSeq),
                { Kind: "e", Event: { } e } => new EventItem(e) { Run = handed.Run, Retried = handed.Retried },
                { Kind: "t" } => new TerminateItem(handed.Reason),
                { Kind: "r" } => new ResumeItem(),
                _ => new EscapeItem(), // unreadable: dropped (completes at once)
            };
            _ = ApplyHandedOffAsync(collection, key, handed?.InstanceId, item);
        }
    }

    private async Task ApplyHandedOffAsync(string collection, string key, string? instanceId, WorkItem item)
    {
        try
        {
            if (instanceId is not null && item is not EscapeItem)
            {
                try
                {
                    await Enqueue(instanceId, item).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    // Refused (an unknown instance, a faulted one): the sender was told it was handed over; its status says the rest.
                    OrchestrationLog.HandOffRefused(_logger, instanceId, ex);
                }
            }

            await _documents.DeleteAsync(collection, key, _stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Stopping: the request stays in the mailbox for the next owner.
        }
        finally
        {
            _draining.TryRemove(key, out _);
        }
    }

    /// <summary>
    /// Waits for the end of an instance another process runs: the watch loop completes <paramref name="local"/> when the end
    /// is committed; the summary is read every <see cref="OrchestrationOptions.HandoffInterval"/> only in case that wake-up was
    /// lost (or the instance faulted, which records no history event).
    /// </summary>
    private async Task<InstanceRecord> PollForEndAsync(string instanceId, Task<InstanceRecord> local, CancellationToken cancellationToken)
    {
        while (true)
        {
            var tick = Task.Delay(Options.HandoffInterval, _time, cancellationToken);
            if (await Task.WhenAny(local, tick).ConfigureAwait(false) == local)
            {
                return await local.ConfigureAwait(false);
            }

            await tick.ConfigureAwait(false);
            if (Owns(instanceId) && _slots.ContainsKey(instanceId))
            {
                continue; // it runs here: its end is signalled
            }

            var record = await ReadRecordAsync(instanceId).ConfigureAwait(false);
            if (record is null && Owns(instanceId) && !_slots.ContainsKey(instanceId))
            {
                throw new WorkflowNotFoundException(instanceId);
            }

            if (record is not null && (record.ClosedAt is not null || record.Status == WorkflowStatus.Faulted))
            {
                return record;
            }
        }
    }

    /// <summary>
    /// Waits for the end of an update handed to another process: the watch loop completes <paramref name="local"/> when it is
    /// committed; the history is read every <see cref="OrchestrationOptions.HandoffInterval"/> only in case that wake-up was lost.
    /// </summary>
    public async Task<HistoryEvent> PollForUpdateAsync(string instanceId, string updateId, Task<HistoryEvent> local, CancellationToken cancellationToken)
    {
        while (true)
        {
            var tick = Task.Delay(Options.HandoffInterval, _time, cancellationToken);
            if (await Task.WhenAny(local, tick).ConfigureAwait(false) == local)
            {
                return await local.ConfigureAwait(false);
            }

            await tick.ConfigureAwait(false);
            var record = await ReadRecordAsync(instanceId).ConfigureAwait(false) ?? throw new WorkflowNotFoundException(instanceId);
            var history = await ReadHistoryAsync(instanceId, record.Run, cancellationToken).ConfigureAwait(false);
            if (history.FirstOrDefault(e => e.Kind == HistoryEventKind.UpdateCompleted && e.Id == updateId) is { } completed)
            {
                return completed;
            }

            if (record.ClosedAt is not null)
            {
                throw new InvalidOperationException($"Workflow instance '{instanceId}' had ended ({record.Status}) and did not handle the update.");
            }
        }
    }
}
