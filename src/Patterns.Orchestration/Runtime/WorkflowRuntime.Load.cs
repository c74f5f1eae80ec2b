using System.Text.Json;
using Patterns.Orchestration.Engine;
using Patterns.Orchestration.History;
using Patterns.Storage;

namespace Patterns.Orchestration.Runtime;

internal sealed partial class WorkflowRuntime
{
    /// <summary>Reads an instance's current run and replays it (the cold path).</summary>
    private async Task<(WorkflowExecutor? Executor, InstanceRecord? Record)> LoadAsync(InstanceSlot slot)
    {
        var record = await ReadRecordAsync(slot.InstanceId).ConfigureAwait(false);
        if (record is null)
        {
            return (null, null);
        }

        var history = await ReadHistoryAsync(slot.InstanceId, record.Run, _stopping.Token).ConfigureAwait(false);
        if (history.Count == 0)
        {
            // A run that continued-as-new and was not started yet (the process stopped in between).
            return (null, record);
        }

        var definition = FindWorkflow(record.Type)
            ?? throw new InvalidOperationException($"Instance '{slot.InstanceId}' runs workflow '{record.Type}', which is not registered in this host.");
        var executor = CreateExecutor(definition, slot, record.Run);
        Interlocked.Increment(ref _replays);
        executor.Replay(history);
        executor.CustomStatusChanged = false;
        executor.Record = record;
        return (executor, record);
    }

    public async Task<List<HistoryEvent>> ReadHistoryAsync(string instanceId, int run, CancellationToken cancellationToken)
    {
        var history = new List<HistoryEvent>();
        await foreach (var stored in _storage.ReadStreamAsync(StreamOf(instanceId, run), cancellationToken: cancellationToken).ConfigureAwait(false))
        {
            history.Add(Decode(stored));
        }

        return history;
    }

    /// <summary>Re-sends what a resumed instance waits for: activity tasks an in-process transport lost, and children's outcomes.</summary>
    private async Task RedispatchAsync(WorkflowExecutor executor)
    {
        if (DirectDispatch)
        {
            foreach (var activity in executor.PendingActivities)
            {
                Dispatch(new ActivityTask(executor.InstanceId, executor.Run, activity.Seq, activity.Name!, activity.Payload, activity.Options) { Resent = true, Incarnation = IncarnationOf(executor) });
            }
        }

        // Cancellations the previous process may not have delivered (workers in other processes still run them).
        foreach (var seq in executor.TakeAbandonedActivities() ?? [])
        {
            CancelActivities(executor.InstanceId, IncarnationOf(executor), executor.Run, seq);
        }

        foreach (var child in executor.PendingChildren.ToList())
        {
            var childRecord = await ReadRecordAsync(child.Id!).ConfigureAwait(false);
            if (childRecord is null)
            {
                EnqueueAll(child.Id!, new StartItem(child.Name!, child.Payload, executor.InstanceId, child.Seq));
            }
            else if (childRecord.ClosedAt is not null)
            {
                var final = childRecord.Status == WorkflowStatus.Completed
                    ? new HistoryEvent { Kind = HistoryEventKind.Completed, Payload = childRecord.Result }
                    : new HistoryEvent { Kind = HistoryEventKind.Failed, Error = childRecord.Error ?? $"the child ended {childRecord.Status}" };
                NotifyParent(executor.InstanceId, child.Seq, child.Id!, final);
            }
        }
    }

    private async Task TerminateAsync(InstanceSlot slot, string? reason)
    {
        slot.Executor = null;
        for (var attempt = 0; ; attempt++)
        {
            var record = await ReadRecordAsync(slot.InstanceId).ConfigureAwait(false) ?? throw new WorkflowNotFoundException(slot.InstanceId);
            if (record.ClosedAt is not null)
            {
                return;
            }

            var stream = StreamOf(slot.InstanceId, record.Run);
            var state = await _storage.GetStreamStateAsync(stream, _stopping.Token).ConfigureAwait(false);
            var lastTask = 0;
            await foreach (var last in _storage.ReadStreamAsync(stream, ReadDirection.Backward, maxCount: 1, cancellationToken: _stopping.Token).ConfigureAwait(false))
            {
                lastTask = Decode(last).Task;
            }

            var now = _time.GetUtcNow();
            var terminated = new HistoryEvent { Kind = HistoryEventKind.Terminated, Task = lastTask + 1, Error = reason ?? "terminated by a client", At = now.UtcTicks };
            record.Status = WorkflowStatus.Terminated;
            record.ClosedAt = now;
            record.Error = terminated.Error;
            record.NextInput = null;
            var work = Fence(new UnitOfWork(), slot.InstanceId)
                .Append(stream, ExpectedVersion.Exact(state.Version), [new SerializedEvent(Guid.NewGuid(), EventTypeOf(terminated.Kind), JsonSerializer.SerializeToUtf8Bytes(terminated, OrchestrationJson.Default.HistoryEvent), now)])
                .Upsert(InstanceRecord.Collection, record.Id, Encode(record));
            try
            {
                await _units.CommitAsync(work, _stopping.Token).ConfigureAwait(false);
            }
            catch (WrongExpectedVersionException) when (attempt < Options.MaxConflictRetries)
            {
                continue;
            }

            NotifyClosed(record);
            NotifyParent(record.ParentId, record.ParentSeq, record.Id, terminated);
            CancelActivities(record.Id, record.Incarnation, record.Run, null);
            return;
        }
    }

    private void DeliverTimer(TimerRecord timer)
    {
        if (Owns(timer.InstanceId))
        {
            EnqueueAll(timer.InstanceId, new EventItem(new HistoryEvent { Kind = HistoryEventKind.TimerFired, Seq = timer.Seq }) { Run = timer.Run, Timer = timer });
        }

        // Otherwise the partition's owner fires it, from the due-time index it loaded when it took the partition over.
    }

    /// <summary>
    /// Arms again the timers of a workflow task that failed (the store unreachable, say): their due-time entries are still in
    /// the store, but nothing else would fire them before a restart or a takeover, and the instance would wait for ever. The
    /// delay doubles with each failure, from one second up to a minute. A timer that fires twice is harmless: the second
    /// finds the timer no longer waited for and removes its entry.
    /// </summary>
    private void RetryTimers(string instanceId, List<WorkItem> failed)
    {
        foreach (var item in failed)
        {
            if (item is EventItem { Timer: { } timer })
            {
                var failures = timer.FailedFirings + 1;
                var delay = TimeSpan.FromSeconds(Math.Min(60, 1 << Math.Min(failures - 1, 6)));
                var retry = new TimerRecord
                {
                    InstanceId = timer.InstanceId,
                    Run = timer.Run,
                    Seq = timer.Seq,
                    DueTicks = _time.GetUtcNow().UtcTicks + delay.Ticks,
                    FailedFirings = failures,
                };
                OrchestrationLog.TimerRetried(_logger, instanceId, timer.Seq, delay);
                Timers.Schedule(retry);
                TimerRetried?.Invoke(retry);
            }
        }
    }

    /// <summary>Removes the index entries of timers that fired after their instance ended or stopped waiting for them.</summary>
    private async Task RemoveStaleTimersAsync(string instanceId, IEnumerable<WorkItem> items)
    {
        foreach (var item in items)
        {
            if (item is EventItem { Event.Kind: HistoryEventKind.TimerFired } timer)
            {
                await _documents.DeleteAsync(TimerRecord.Collection, TimerRecord.Key(instanceId, timer.Run, timer.Event.Seq), _stopping.Token).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Loads the due-time index and every running instance that <paramref name="owned"/> accepts (re-dispatching what they wait for): the start of a host, or the takeover of a partition.</summary>
    public async Task RecoverAsync(Func<string, bool> owned, CancellationToken cancellationToken)
    {
        await foreach (var (_, bytes) in _documents.ListAsync(TimerRecord.Collection, cancellationToken).ConfigureAwait(false))
        {
            if (JsonSerializer.Deserialize(bytes, OrchestrationJson.Default.TimerRecord) is { } timer && owned(timer.InstanceId))
            {
                Timers.Schedule(timer);
            }
        }

        await foreach (var (id, bytes) in _documents.ListAsync(InstanceRecord.Collection, cancellationToken).ConfigureAwait(false))
        {
            if (owned(id) && JsonSerializer.Deserialize(bytes, OrchestrationJson.Default.InstanceRecord) is { ClosedAt: null } record && FindWorkflow(record.Type) is not null)
            {
                EnqueueAll(id, new ResumeItem());
            }
        }
    }
}
