using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Messaging;
using Patterns.Orchestration.Activities;
using Patterns.Orchestration.Engine;
using Patterns.Orchestration.History;
using Patterns.Outbox;
using Patterns.Storage;

namespace Patterns.Orchestration.Runtime;

internal sealed partial class WorkflowRuntime
{
    private const string SignalInbox = "orchestration.signals";

    private async Task CommitAsync(WorkflowExecutor executor, List<HistoryEvent> events, bool isNew, InstanceRecord? record, List<(WorkItem Item, string MessageId)>? claimed, List<int>? retried)
    {
        var now = _time.GetUtcNow();
        var id = executor.InstanceId;
        var serialized = new SerializedEvent[events.Count];
        for (var i = 0; i < serialized.Length; i++)
        {
            serialized[i] = new SerializedEvent(Guid.NewGuid(), EventTypeOf(events[i].Kind), JsonSerializer.SerializeToUtf8Bytes(events[i], OrchestrationJson.Default.HistoryEvent), now);
        }

        var stream = executor.Stream;
        var after = isNew ? 0 : executor.Version;
        var work = Fence(new UnitOfWork(), id).Append(stream, isNew ? ExpectedVersion.NoStream : ExpectedVersion.Exact(after), serialized);
        foreach (var e in events)
        {
            switch (e.Kind)
            {
                case HistoryEventKind.ActivityScheduled when !DirectDispatch:
                    var task = new ActivityTask(id, executor.Run, e.Seq, e.Name!, e.Payload, e.Options) { Incarnation = record?.Incarnation ?? 0 };
                    work.Enqueue(OutboxCodec.ToOutboxMessage(Options.ActivityQueue, OutboxMessageKind.Send, _bus.CreateEnvelope(task, new MessageOptions { PartitionKey = id }), task, _serializer));
                    break;
                case HistoryEventKind.TimerStarted:
                    var timer = new TimerRecord { InstanceId = id, Run = executor.Run, Seq = e.Seq, DueTicks = e.At };
                    work.Upsert(TimerRecord.Collection, TimerRecord.Key(id, executor.Run, e.Seq), JsonSerializer.SerializeToUtf8Bytes(timer, OrchestrationJson.Default.TimerRecord));
                    break;
                case HistoryEventKind.TimerFired:
                    work.Delete(TimerRecord.Collection, TimerRecord.Key(id, executor.Run, e.Seq));
                    break;
            }
        }

        // Looked at only when there are any: "?? []" made an empty list for every workflow task.
        if (retried is not null)
        {
            foreach (var seq in retried)
            {
                work.Delete(AttemptRecord.Collection, TimerRecord.Key(id, executor.Run, seq));
            }
        }

        if (claimed is not null)
        {
            foreach (var (_, messageId) in claimed)
            {
                work.ClaimInbox(SignalInbox, $"{id}|{messageId}");
            }
        }

        InstanceRecord? updated = null;
        if (record is not null && (isNew || executor.Final is not null || executor.CustomStatusChanged || record.Status == WorkflowStatus.Faulted))
        {
            updated = record.Clone();
            updated.CustomStatus = executor.CustomStatus;
            updated.Status = WorkflowStatus.Running;
            updated.Error = null;
            updated.ErrorType = null;
            switch (executor.Final)
            {
                case { Kind: HistoryEventKind.Completed } completed:
                    updated.Status = WorkflowStatus.Completed;
                    updated.Result = completed.Payload;
                    updated.ClosedAt = now;
                    break;
                case { Kind: HistoryEventKind.Failed } failed:
                    updated.Status = WorkflowStatus.Failed;
                    updated.Error = failed.Error;
                    updated.ErrorType = failed.ErrorType;
                    updated.ClosedAt = now;
                    break;
                case { Kind: HistoryEventKind.Canceled }:
                    updated.Status = WorkflowStatus.Canceled;
                    updated.ClosedAt = now;
                    break;
                case { Kind: HistoryEventKind.ContinuedAsNew } next:
                    updated.Run = executor.Run + 1;
                    updated.NextInput = next.Payload ?? [];
                    updated.CustomStatus = null;
                    break;
            }

            work.Upsert(InstanceRecord.Collection, id, Encode(updated));
        }

        // The group commit's error handling is here rather than in a method of its own: one state machine less for every
        // workflow task (see LandedDespiteErrorAsync).
        try
        {
            await _group.CommitAsync(work, _stopping.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (serialized.Length > 0 && ex is not (LeaseLostException or OperationCanceledException) && !_stopping.IsCancellationRequested)
        {
            if (!await LandedDespiteErrorAsync(ex, id, stream, after, serialized).ConfigureAwait(false))
            {
                throw;
            }
        }

        if (updated is not null)
        {
            executor.Record = updated;
        }
        else
        {
            executor.Record ??= record;
        }

        executor.CustomStatusChanged = false;
    }

    /// <summary>
    /// Tells whether a workflow task's unit, whose group commit failed, was committed all the same (the connection lost after
    /// the commit; a grouped commit that landed and then failed, whose units, committed again one by one, each conflict with
    /// themselves): its first event is looked for in the stream, and a unit that is there counts as committed, so that what
    /// it scheduled is sent, armed or started once (<see cref="AfterCommit"/>), instead of the instance reloading from a
    /// history whose new activities, timers and children nothing would act on until a restart. A unit that is not there
    /// keeps its error.
    /// </summary>
    private async ValueTask<bool> LandedDespiteErrorAsync(Exception error, string instanceId, string stream, long after, SerializedEvent[] events)
    {
        if (await FindAppendAsync(stream, after, events[0].EventId, events.Length, _stopping.Token).ConfigureAwait(false) is not { } found)
        {
            return false;
        }

        OrchestrationLog.CommitLandedDespiteError(_logger, instanceId, error);
        OwnCommitted(new UnitOfWorkResult([new AppendResult(stream, found.Last.Version, found.First.Position, found.Last.Position)], 0));
        return true;
    }

    /// <summary>
    /// Whether a unit of work whose commit the store reported as failed is in the store all the same: its first append at
    /// an exact version is looked for (a unit is all or nothing, so one append tells). False when it is not there, when
    /// the unit has no such append, and when the look fails.
    /// </summary>
    private async ValueTask<bool> LandedAsync(UnitOfWork work, CancellationToken cancellationToken) =>
        work.Appends.FirstOrDefault(static a => a.Events.Count > 0 && a.ExpectedVersion.IsExact) is { } append
        && await FindAppendAsync(append.StreamId, append.ExpectedVersion.Value, append.Events[0].EventId, 1, cancellationToken).ConfigureAwait(false) is not null;

    /// <summary>
    /// Looks for an append in its stream: up to <paramref name="count"/> events after version <paramref name="after"/>.
    /// Returns the first and last of them when the first is the append's own (<paramref name="firstEventId"/>); null when it
    /// is not there, and when the read fails (not known either way).
    /// </summary>
    private async ValueTask<(StoredEvent First, StoredEvent Last)?> FindAppendAsync(string stream, long after, Guid firstEventId, int count, CancellationToken cancellationToken)
    {
        StoredEvent? first = null;
        StoredEvent? last = null;
        try
        {
            await foreach (var stored in _storage.ReadStreamAsync(stream, ReadDirection.Forward, after + 1, count, cancellationToken).ConfigureAwait(false))
            {
                first ??= stored;
                last = stored;
            }
        }
        catch (Exception) when (!cancellationToken.IsCancellationRequested)
        {
            return null;
        }

        return first is not null && first.EventId == firstEventId ? (first, last!) : null;
    }

    private void AfterCommit(InstanceSlot slot, WorkflowExecutor executor, List<HistoryEvent> events)
    {
        var id = executor.InstanceId;
        foreach (var e in events)
        {
            switch (e.Kind)
            {
                case HistoryEventKind.ActivityScheduled when DirectDispatch:
                    Dispatch(new ActivityTask(id, executor.Run, e.Seq, e.Name!, e.Payload, e.Options) { Incarnation = IncarnationOf(executor) });
                    break;
                case HistoryEventKind.TimerStarted:
                    Timers.Schedule(new TimerRecord { InstanceId = id, Run = executor.Run, Seq = e.Seq, DueTicks = e.At });
                    break;
                case HistoryEventKind.ChildStarted:
                    EnqueueAll(e.Id!, new StartItem(e.Name!, e.Payload, id, e.Seq));
                    break;
                case HistoryEventKind.UpdateCompleted when _updateWaiters.TryRemove(e.Id!, out var waiter):
                    waiter.TrySetResult(e);
                    break;
            }
        }

        if (executor.TakeAbandonedActivities() is { } abandoned)
        {
            foreach (var seq in abandoned)
            {
                CancelActivities(id, IncarnationOf(executor), executor.Run, seq);
            }
        }

        if (executor.Final is not { } final)
        {
            return;
        }

        if (executor.HasPendingActivities)
        {
            CancelActivities(id, IncarnationOf(executor), executor.Run, null); // the run ended without waiting for them
        }

        slot.Executor = null;
        if (final.Kind == HistoryEventKind.ContinuedAsNew)
        {
            EnqueueAll(id, new ResumeItem());
            return;
        }

        if (executor.Record is { } record)
        {
            NotifyClosed(record);
        }

        NotifyParent(executor.ParentId, executor.ParentSeq, id, final);
    }

    private void NotifyParent(string? parentId, int parentSeq, string childId, HistoryEvent final)
    {
        if (parentId is null)
        {
            return;
        }

        var outcome = final.Kind == HistoryEventKind.Completed
            ? new HistoryEvent { Kind = HistoryEventKind.ChildCompleted, Seq = parentSeq, Payload = final.Payload, Id = childId }
            : new HistoryEvent { Kind = HistoryEventKind.ChildFailed, Seq = parentSeq, Id = childId, Error = final.Error ?? $"the child ended {final.Kind}", ErrorType = final.ErrorType };
        EnqueueAll(parentId, new EventItem(outcome));
    }

    private static long IncarnationOf(WorkflowExecutor executor) => executor.Record?.Incarnation ?? 0;

    /// <summary>Cancels activity attempts, running or still queued: at once in this process, and through the cancellation topic in the others.</summary>
    private void CancelActivities(string instanceId, long incarnation, int run, int? seq)
    {
        (_worker ??= _services.GetRequiredService<ActivityWorker>()).Cancel(instanceId, incarnation, run, seq);
        if (!DirectDispatch)
        {
            // If it cannot be sent, the attempt runs on until its own timeout; its result is ignored.
            Observe(_bus.PublishAsync(Options.CancellationTopic, new ActivityCancellation(instanceId, run, seq) { Incarnation = incarnation }, _stopping.Token), instanceId, "cancellation");
        }
    }

    private void Dispatch(ActivityTask task)
    {
        // If it cannot be sent, the instance still waits for it: a restart (or ResumeAsync) re-sends pending activities.
        Observe(_bus.SendAsync(Options.ActivityQueue, task, new MessageOptions { PartitionKey = task.InstanceId }, _stopping.Token), task.InstanceId, task.Activity);
    }

    private void Observe(ValueTask sending, string instanceId, string what)
    {
        if (!sending.IsCompletedSuccessfully)
        {
            _ = ObserveAsync(sending, instanceId, what);
        }
    }

    private async Task ObserveAsync(ValueTask sending, string instanceId, string what)
    {
        try
        {
            await sending.ConfigureAwait(false);
        }
        catch (Exception ex) when (!_stopping.IsCancellationRequested)
        {
            OrchestrationLog.DispatchFailed(_logger, instanceId, what, ex);
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void NotifyClosed(InstanceRecord record)
    {
        // A full fence between clearing the slot's executor (before this call) and the look at the waiters: a client that
        // registered a waiter and then saw the executor still running skipped its read of the record (WaitForEndAsync).
        Interlocked.MemoryBarrier();
        if (_closeWaiters.TryGetValue(record.Id, out var waiters))
        {
            lock (waiters)
            {
                // Removed under the list's lock, so a waiter is never added to a list that is no longer in the map.
                _closeWaiters.TryRemove(new KeyValuePair<string, List<TaskCompletionSource<InstanceRecord>>>(record.Id, waiters));
                foreach (var waiter in waiters)
                {
                    waiter.TrySetResult(record);
                }

                waiters.Clear();
            }
        }
    }

    // Every kind's name is a constant: a name built for each event would be one more string per event, kept for ever by an
    // in-memory store with the event.
    internal static string EventTypeOf(HistoryEventKind kind) => kind switch
    {
        HistoryEventKind.Started => "wf.Started",
        HistoryEventKind.ActivityCompleted => "wf.ActivityCompleted",
        HistoryEventKind.ActivityFailed => "wf.ActivityFailed",
        HistoryEventKind.TimerFired => "wf.TimerFired",
        HistoryEventKind.SignalReceived => "wf.SignalReceived",
        HistoryEventKind.ChildCompleted => "wf.ChildCompleted",
        HistoryEventKind.ChildFailed => "wf.ChildFailed",
        HistoryEventKind.UpdateRequested => "wf.UpdateRequested",
        HistoryEventKind.CancelRequested => "wf.CancelRequested",
        HistoryEventKind.Terminated => "wf.Terminated",
        HistoryEventKind.ActivityScheduled => "wf.ActivityScheduled",
        HistoryEventKind.TimerStarted => "wf.TimerStarted",
        HistoryEventKind.LocalActivityCompleted => "wf.LocalActivityCompleted",
        HistoryEventKind.ChildStarted => "wf.ChildStarted",
        HistoryEventKind.PatchMarker => "wf.PatchMarker",
        HistoryEventKind.UpdateCompleted => "wf.UpdateCompleted",
        HistoryEventKind.Completed => "wf.Completed",
        HistoryEventKind.Failed => "wf.Failed",
        HistoryEventKind.Canceled => "wf.Canceled",
        HistoryEventKind.ContinuedAsNew => "wf.ContinuedAsNew",
        _ => "wf." + kind,
    };
}
