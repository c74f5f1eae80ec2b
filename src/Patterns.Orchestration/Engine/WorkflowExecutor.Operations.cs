using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Engine;

internal sealed partial class WorkflowExecutor
{
    /// <summary>Fails the calling code unless it runs on this instance's scheduler.</summary>
    public void EnsureOnScheduler(string operation)
    {
        if (!_scheduler.IsCurrent)
        {
            var problem = $"ctx.{operation} was called outside the workflow's scheduler (after ConfigureAwait(false), inside Task.Run, or from another thread)";
            _scheduler.ReportEscape(problem);
            throw new WorkflowDeterminismException(InstanceId, problem);
        }
    }

    public Task<byte[]?> ScheduleActivity(string name, byte[]? input, ActivitySettings? settings, CancellationToken cancellationToken)
    {
        var seq = ++_sequence;
        var command = Emit(new HistoryEvent { Kind = HistoryEventKind.ActivityScheduled, Task = TaskNumber, Seq = seq, Name = name, Payload = input, Options = settings });
        return Wait(command, cancellationToken);
    }

    public Task<byte[]?> StartTimer(TimeSpan delay, CancellationToken cancellationToken)
    {
        var seq = ++_sequence;
        var due = Now + delay;
        var command = Emit(new HistoryEvent { Kind = HistoryEventKind.TimerStarted, Task = TaskNumber, Seq = seq, At = due.UtcTicks });
        return Wait(command, cancellationToken);
    }

    public Task<byte[]?> StartChild(string workflowType, string childId, byte[]? input, CancellationToken cancellationToken)
    {
        var seq = ++_sequence;
        var command = Emit(new HistoryEvent { Kind = HistoryEventKind.ChildStarted, Task = TaskNumber, Seq = seq, Name = workflowType, Id = childId, Payload = input });
        return Wait(command, cancellationToken);
    }

    public int PeekNextSequence() => _sequence + 1;

    public Task<byte[]?> RunLocal(string name, Func<CancellationToken, Task<byte[]?>> body)
    {
        var seq = ++_sequence;
        var command = Emit(new HistoryEvent { Kind = HistoryEventKind.LocalActivityCompleted, Task = TaskNumber, Seq = seq, Name = name });
        var completion = new TaskCompletionSource<byte[]?>();
        // When replaying, the recorded event (with its result) stands in for running it again; it still resolves when the
        // live task resolved it, once the code waits, so that the code runs in the same order as it did live.
        (_operations ??= [])[seq] = new Operation(command, completion) { Owner = this };
        (_locals ??= []).Add(new LocalActivity(command, body));
        return completion.Task;
    }

    public Task<byte[]?> WaitForSignal(string name, CancellationToken cancellationToken)
    {
        if (_signals is not null && _signals.TryGetValue(name, out var buffered) && buffered.TryDequeue(out var payload))
        {
            return Task.FromResult(payload);
        }

        var waiter = new SignalWaiter(name, new TaskCompletionSource<byte[]?>()) { Owner = this };
        (_signalWaiters ??= []).Add(waiter);
        if (cancellationToken.CanBeCanceled)
        {
            // Removed once the signal arrives: a workflow that waits for signals in a loop would pile them up on its token.
            waiter.Registration = cancellationToken.Register(
                static (state, token) =>
                {
                    var waiting = (SignalWaiter)state!;
                    if (waiting.Owner._signalWaiters?.Remove(waiting) == true)
                    {
                        waiting.Completion.TrySetCanceled(token);
                    }
                },
                waiter);
        }

        return waiter.Completion.Task;
    }

    /// <summary>Stops waiting for a signal (its timeout fired); a signal arriving later is buffered for the next wait.</summary>
    public void AbandonSignalWait(Task<byte[]?> wait)
    {
        var index = _signalWaiters?.FindIndex(w => w.Completion.Task == wait) ?? -1;
        if (index >= 0)
        {
            _signalWaiters![index].Registration.Unregister();
            _signalWaiters!.RemoveAt(index);
        }
    }

    public Task WaitCondition(Func<bool> condition, CancellationToken cancellationToken)
    {
        if (condition())
        {
            return Task.CompletedTask;
        }

        var done = new TaskCompletionSource();
        var entry = (condition, done);
        (_conditions ??= []).Add(entry);
        if (cancellationToken.CanBeCanceled)
        {
            cancellationToken.Register(() =>
            {
                if (_conditions?.Remove(entry) == true)
                {
                    done.TrySetCanceled(cancellationToken);
                }
            });
        }

        return done.Task;
    }

    public void SetQuery(string name, Func<(object? Value, Type Type)> handler) => (_queries ??= new(StringComparer.Ordinal))[name] = handler;

    public void SetUpdate(string name, Type argumentType, Func<object?, Task<(object? Value, Type Type)>> handler) => (_updates ??= new(StringComparer.Ordinal))[name] = (argumentType, handler);

    public void SetCustomStatus(byte[]? status)
    {
        if (status is null ? CustomStatus is not null : CustomStatus is null || !status.AsSpan().SequenceEqual(CustomStatus))
        {
            CustomStatus = status;
            CustomStatusChanged = true;
        }
    }

    public bool Patched(string patchId, bool deprecated)
    {
        if (_patches is not null && _patches.TryGetValue(patchId, out var decided))
        {
            return decided;
        }

        bool result;
        if (IsReplaying)
        {
            // A recorded marker here means the run took the new path; no marker means it ran the old code.
            result = _expectedPosition < _expected!.Count && _expected[_expectedPosition].Event is { Kind: HistoryEventKind.PatchMarker } marker && marker.Name == patchId;
            if (result)
            {
                _expectedPosition++;
            }
            else if (deprecated)
            {
                result = true;
            }
        }
        else
        {
            result = true;
            if (!deprecated)
            {
                _commands.Add(new HistoryEvent { Kind = HistoryEventKind.PatchMarker, Task = TaskNumber, Name = patchId });
            }
        }

        (_patches ??= new(StringComparer.Ordinal))[patchId] = result;
        return result;
    }

    public Guid NewGuid()
    {
        Span<byte> bytes = stackalloc byte[16];
        BitConverter.TryWriteBytes(bytes, SplitMix(ref _guidState));
        BitConverter.TryWriteBytes(bytes[8..], SplitMix(ref _guidState));
        bytes[7] = (byte)((bytes[7] & 0x0F) | 0x40); // version 4 layout
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80);
        return new Guid(bytes);
    }

    private static ulong SplitMix(ref ulong state)
    {
        var z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private Task<byte[]?> Wait(HistoryEvent command, CancellationToken cancellationToken)
    {
        var completion = new TaskCompletionSource<byte[]?>();
        var operation = new Operation(command, completion) { Owner = this };
        (_operations ??= [])[command.Seq] = operation;
        if (cancellationToken.CanBeCanceled)
        {
            if (cancellationToken.IsCancellationRequested)
            {
                Abandon(command);
                completion.TrySetCanceled(cancellationToken);
            }
            else
            {
                // A static callback with the operation as its state: a closure and a delegate per wait would live as long
                // as the wait (every armed timer, every running activity), for a cancellation that rarely comes. Callbacks
                // still run in registration order (last first), as before.
                operation.Registration = cancellationToken.Register(
                    static (state, token) =>
                    {
                        var waiting = (Operation)state!;
                        if (waiting.Owner.Abandon(waiting.Command))
                        {
                            waiting.Completion.TrySetCanceled(token);
                        }
                    },
                    operation);
            }
        }

        return completion.Task;
    }

    /// <summary>Stops waiting for an operation; an activity's worker is then told to cancel its running attempt.</summary>
    private bool Abandon(HistoryEvent command)
    {
        if (_operations?.Remove(command.Seq) != true)
        {
            return false;
        }

        if (command.Kind == HistoryEventKind.ActivityScheduled)
        {
            (_abandoned ??= []).Add(command.Seq);
        }

        return true;
    }

    /// <summary>Takes the sequence numbers of activities the code stopped waiting for since the last call.</summary>
    public List<int>? TakeAbandonedActivities()
    {
        var abandoned = _abandoned;
        _abandoned = null;
        return abandoned;
    }

    /// <summary>Records a command, or, while replaying, checks it against the next recorded one and returns that.</summary>
    private HistoryEvent Emit(HistoryEvent command)
    {
        if (_expected is null)
        {
            _commands.Add(command);
            return command;
        }

        if (_mismatch is not null)
        {
            throw _mismatch;
        }

        if (_expectedPosition >= _expected.Count)
        {
            throw _mismatch = new NonDeterminismException(InstanceId, _taskEnd, null, command.ToString());
        }

        var (recorded, index) = _expected[_expectedPosition];
        if (!Matches(recorded, command))
        {
            throw _mismatch = new NonDeterminismException(InstanceId, index, recorded, command.ToString() + Difference(recorded, command));
        }

        _expectedPosition++;
        return recorded;
    }

    private static bool Matches(HistoryEvent recorded, HistoryEvent command) =>
        recorded.Kind == command.Kind
        && recorded.Seq == command.Seq
        && string.Equals(recorded.Name, command.Name, StringComparison.Ordinal)
        && command.Kind switch
        {
            HistoryEventKind.ActivityScheduled => SameBytes(recorded.Payload, command.Payload),
            HistoryEventKind.ChildStarted => SameBytes(recorded.Payload, command.Payload) && recorded.Id == command.Id,
            HistoryEventKind.TimerStarted => recorded.At == command.At,
            HistoryEventKind.UpdateCompleted => recorded.Id == command.Id,
            _ => true,
        };

    private static string Difference(HistoryEvent recorded, HistoryEvent command) =>
        recorded.Kind == command.Kind && recorded.Name == command.Name && recorded.Seq == command.Seq ? " with a different input" : string.Empty;

    private static bool SameBytes(byte[]? a, byte[]? b) => a is null ? b is null : b is not null && a.AsSpan().SequenceEqual(b);

    private void DeliverSignal(string name, byte[]? payload)
    {
        var index = _signalWaiters?.FindIndex(w => w.Name == name) ?? -1;
        if (index >= 0)
        {
            var waiter = _signalWaiters![index];
            _signalWaiters!.RemoveAt(index);
            waiter.Registration.Unregister();
            waiter.Completion.TrySetResult(payload);
            return;
        }

        _signals ??= new(StringComparer.Ordinal);
        if (!_signals.TryGetValue(name, out var queue))
        {
            _signals[name] = queue = new Queue<byte[]?>();
        }

        queue.Enqueue(payload);
    }

    private bool HasUpdateHandler(string name) => _updates?.ContainsKey(name) == true;

    /// <summary>The rejection an earlier version of the engine recorded at once for an update that came before its handler.</summary>
    private string LegacyNoHandler(string name) => $"Workflow '{_definition.Name}' has no update handler '{name}'.";

    /// <summary>
    /// While replaying a history that an earlier version of the engine recorded, tells whether it rejected this update at once
    /// (it did not hold updates that came before their handler): the replay then does the same, so that history still replays.
    /// </summary>
    private bool RejectedAsRecorded(HistoryEvent request) =>
        _expected is { } expected && _expectedPosition < expected.Count
        && expected[_expectedPosition].Event is { Kind: HistoryEventKind.UpdateCompleted } recorded
        && recorded.Id == request.Id && recorded.Error == LegacyNoHandler(request.Name!);

    /// <summary>
    /// Before the run's end is recorded: fails the updates still held (their handler was never registered) and those whose
    /// handler had not finished, so that no client waits for an update that will never complete.
    /// </summary>
    private void FailUnfinishedUpdates(HistoryEventKind end)
    {
        // Looked at only when there are any: "?? []" made an empty list for every run's end.
        if (_held is { } held)
        {
            foreach (var request in held)
            {
                if (request.Kind == HistoryEventKind.UpdateRequested)
                {
                    Emit(UpdateFailure(request, $"Workflow instance '{InstanceId}' ended ({end}) before update '{request.Name}' completed."));
                }
            }
        }

        _held = null;
        if (_openUpdates is not { Count: > 0 } open)
        {
            return;
        }

        foreach (var request in open)
        {
            var failure = UpdateFailure(request, $"Workflow instance '{InstanceId}' ended ({end}) before update '{request.Name}' completed.");
            if (!IsReplaying || (_expectedPosition < _expected!.Count && _expected[_expectedPosition].Event is { Kind: HistoryEventKind.UpdateCompleted } recorded && recorded.Id == request.Id))
            {
                Emit(failure); // histories recorded before this failure existed do not have it; they replay without it
            }
        }

        _openUpdates = null;
    }

    private HistoryEvent UpdateFailure(HistoryEvent request, string error) => new()
    {
        Kind = HistoryEventKind.UpdateCompleted, Task = TaskNumber, Name = request.Name, Id = request.Id, Error = error, ErrorType = typeof(InvalidOperationException).FullName,
    };

    private void StartUpdate(HistoryEvent request)
    {
        var updateId = request.Id!;
        if (_updates is null || !_updates.TryGetValue(request.Name!, out var update))
        {
            var error = RejectedAsRecorded(request)
                ? LegacyNoHandler(request.Name!)
                : $"Workflow '{_definition.Name}' has no update handler '{request.Name}' (none was registered by the time the workflow waited); register it with ctx.SetUpdateHandler.";
            Emit(new HistoryEvent
            {
                Kind = HistoryEventKind.UpdateCompleted, Task = TaskNumber, Name = request.Name, Id = updateId,
                Error = error, ErrorType = typeof(KeyNotFoundException).FullName,
            });
            return;
        }

        Task<(object? Value, Type Type)> handled;
        try
        {
            handled = update.Handler(Deserialize(request.Payload, update.ArgumentType));
        }
        catch (Exception ex)
        {
            handled = Task.FromException<(object?, Type)>(ex);
        }

        (_openUpdates ??= []).Add(request);
        handled.ContinueWith(
            t =>
            {
                if (_mismatch is not null || Final is not null || _openUpdates?.Remove(request) != true)
                {
                    return;
                }

                var error = t.Exception?.InnerException ?? (t.IsCanceled ? new OperationCanceledException() : null);
                Emit(new HistoryEvent
                {
                    Kind = HistoryEventKind.UpdateCompleted, Task = TaskNumber, Name = request.Name, Id = updateId,
                    Payload = error is null ? Serialize(t.Result.Value, t.Result.Type) : null,
                    Error = error?.Message, ErrorType = error?.GetType().FullName,
                });
            },
            CancellationToken.None,
            TaskContinuationOptions.None,
            _scheduler);
    }

    private async Task RunLocalActivitiesAsync(List<LocalActivity> locals, CancellationToken cancellationToken)
    {
        LocalActivitiesRunning?.Invoke(true);
        try
        {
            foreach (var local in locals)
            {
                try
                {
                    local.Command.Payload = await local.Body(cancellationToken).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
                {
                    local.Command.Error = ex.Message;
                    local.Command.ErrorType = ex.GetType().FullName;
                }
            }
        }
        finally
        {
            LocalActivitiesRunning?.Invoke(false);
        }
    }
}
