using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Runtime;

internal sealed partial class WorkflowRuntime
{
    public Task<HistoryEvent> RegisterUpdate(string updateId)
    {
        var waiter = new TaskCompletionSource<HistoryEvent>(TaskCreationOptions.RunContinuationsAsynchronously);
        _updateWaiters[updateId] = waiter;
        WaiterRegistered();
        return waiter.Task;
    }

    public void UnregisterUpdate(string updateId) => _updateWaiters.TryRemove(updateId, out _);

    /// <summary>Raised when a client has read that an instance has not ended yet and waits for its end (tests wait on it instead of sleeping).</summary>
    public event Action<string>? WaitingForEnd;

    /// <summary>Waits until the instance has ended (or faulted) in this process, or reads that it already has.</summary>
    public async Task<InstanceRecord> WaitForEndAsync(string instanceId, CancellationToken cancellationToken)
    {
        var waiter = new TaskCompletionSource<InstanceRecord>(TaskCreationOptions.RunContinuationsAsynchronously);
        var waiters = AddCloseWaiter(instanceId, waiter);
        try
        {
            // Registered before reading, so an end committed in between is not missed. An instance that runs here and has
            // not ended needs no read: its end is committed by this process, which then completes the waiter (the fence
            // orders the registration before the look at the slot, as NotifyClosed's orders clearing it before its look
            // at the waiters). A store read per wait was a round trip per workflow on a durable store. Only where no other
            // process can end it: with exclusive ownership (an end elsewhere is pushed through the store, and polled), or
            // on the in-memory store; without exclusive ownership on a shared store, another process may have ended the
            // instance while this one still holds it running, and nothing would tell this one.
            Interlocked.MemoryBarrier();
            var live = (ExclusiveOwnership || _singleProcess) && _slots.TryGetValue(instanceId, out var slot) && slot.Executor is { Final: null } && Owns(instanceId);
            var record = live ? null : await ReadRecordAsync(instanceId).ConfigureAwait(false);
            if (record is not null && (record.ClosedAt is not null || record.Status == WorkflowStatus.Faulted))
            {
                return record;
            }

            WaitingForEnd?.Invoke(instanceId);
            if (ExclusiveOwnership)
            {
                // The instance may run in another process (or move to one): its end is pushed through the store, and its summary is read now and then in case that wake-up is lost.
                return await PollForEndAsync(instanceId, waiter.Task, cancellationToken).ConfigureAwait(false);
            }

            // An instance seen running here exists even if it has ended and left the map since: its end completes the waiter.
            if (!live && record is null && !_slots.ContainsKey(instanceId))
            {
                throw new WorkflowNotFoundException(instanceId);
            }

            return await waiter.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            lock (waiters)
            {
                // No waiter is left behind: the watch loop reads the ends of instances only while some client waits.
                if (waiters.Remove(waiter) && waiters.Count == 0)
                {
                    _closeWaiters.TryRemove(new KeyValuePair<string, List<TaskCompletionSource<InstanceRecord>>>(instanceId, waiters));
                }
            }
        }
    }

    /// <summary>Adds a waiter to the list of <paramref name="instanceId"/> that is in the map (not one that was just taken out of it).</summary>
    private List<TaskCompletionSource<InstanceRecord>> AddCloseWaiter(string instanceId, TaskCompletionSource<InstanceRecord> waiter)
    {
        while (true)
        {
            var waiters = _closeWaiters.GetOrAdd(instanceId, static _ => []);
            lock (waiters)
            {
                if (_closeWaiters.TryGetValue(instanceId, out var current) && current == waiters)
                {
                    waiters.Add(waiter);
                    WaiterRegistered();
                    return waiters;
                }
            }
        }
    }
}
