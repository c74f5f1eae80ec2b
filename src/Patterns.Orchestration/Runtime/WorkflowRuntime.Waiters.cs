using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Runtime;

internal sealed partial class WorkflowRuntime
{
    public Task<HistoryEvent> RegisterUpdate(string updateId)
    {
        var waiter = new TaskCompletionSource<HistoryEvent>(TaskCreationOptions.RunContinuationsAsynchronously);
        _updateWaiters[updateId] = waiter;
        return waiter.Task;
    }

    public void UnregisterUpdate(string updateId) => _updateWaiters.TryRemove(updateId, out _);

    /// <summary>Waits until the instance has ended (or faulted) in this process, or reads that it already has.</summary>
    public async Task<InstanceRecord> WaitForEndAsync(string instanceId, CancellationToken cancellationToken)
    {
        var waiter = new TaskCompletionSource<InstanceRecord>(TaskCreationOptions.RunContinuationsAsynchronously);
        var waiters = _closeWaiters.GetOrAdd(instanceId, static _ => []);
        lock (waiters)
        {
            waiters.Add(waiter);
        }

        // Registered before reading, so an end committed in between is not missed.
        var record = await ReadRecordAsync(instanceId).ConfigureAwait(false);
        if (record is not null && (record.ClosedAt is not null || record.Status == WorkflowStatus.Faulted))
        {
            return record;
        }

        if (ExclusiveOwnership)
        {
            // The instance may run in another process (or move to one): read its summary now and then while it is not owned here.
            return await PollForEndAsync(instanceId, waiter.Task, cancellationToken).ConfigureAwait(false);
        }

        if (record is null && !_slots.ContainsKey(instanceId))
        {
            throw new WorkflowNotFoundException(instanceId);
        }

        return await waiter.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }
}
