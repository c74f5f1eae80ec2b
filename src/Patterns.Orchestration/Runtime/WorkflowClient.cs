using System.Runtime.CompilerServices;
using System.Text.Json;
using Patterns.Orchestration.Engine;
using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Runtime;

/// <summary>The <see cref="IWorkflowClient"/>: every change goes through the instance's mailbox in this process.</summary>
internal sealed class WorkflowClient(WorkflowRuntime runtime) : IWorkflowClient
{
    public Task StartAsync(string workflowType, string instanceId, object? input = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(workflowType);
        ArgumentException.ThrowIfNullOrEmpty(instanceId);
        if (runtime.FindWorkflow(workflowType) is null)
        {
            throw new InvalidOperationException($"No workflow named '{workflowType}' is registered; add it with AddOrchestration(o => o.AddWorkflow<...>()).");
        }

        return runtime.Enqueue(instanceId, new StartItem(workflowType, Serialize(input), null, 0)).WaitAsync(cancellationToken);
    }

    public Task SignalAsync(string instanceId, string name, object? payload = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(instanceId);
        ArgumentException.ThrowIfNullOrEmpty(name);
        return Closed(instanceId, runtime.Enqueue(instanceId, new EventItem(new HistoryEvent { Kind = HistoryEventKind.SignalReceived, Name = name, Payload = Serialize(payload) })), cancellationToken);
    }

    public async Task<TResult> QueryAsync<TResult>(string instanceId, string name, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(instanceId);
        ArgumentException.ThrowIfNullOrEmpty(name);
        var payload = (byte[]?)await runtime.Enqueue(instanceId, new QueryItem(name)).WaitAsync(cancellationToken).ConfigureAwait(false);
        return payload is null ? default! : (TResult)runtime.Serializer.Deserialize(payload, typeof(TResult));
    }

    public async Task<TResult> UpdateAsync<TArgument, TResult>(string instanceId, string name, TArgument argument, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(instanceId);
        ArgumentException.ThrowIfNullOrEmpty(name);
        var updateId = Guid.NewGuid().ToString("N");
        var waiter = runtime.RegisterUpdate(updateId);
        try
        {
            var accepted = await runtime.Enqueue(instanceId, new EventItem(new HistoryEvent { Kind = HistoryEventKind.UpdateRequested, Name = name, Id = updateId, Payload = Serialize(argument) }))
                .WaitAsync(cancellationToken).ConfigureAwait(false);
            if (accepted is HistoryEvent final && !waiter.IsCompleted)
            {
                throw new InvalidOperationException($"Workflow instance '{instanceId}' had ended ({final.Kind}) and did not handle update '{name}'.");
            }

            var completed = accepted == WorkflowRuntime.HandedOff
                ? await runtime.PollForUpdateAsync(instanceId, updateId, waiter, cancellationToken).ConfigureAwait(false)
                : await WaitForUpdateAsync(instanceId, name, updateId, waiter, cancellationToken).ConfigureAwait(false);
            if (completed.Error is not null)
            {
                throw new InvalidOperationException($"Update '{name}' of workflow instance '{instanceId}' failed: {completed.ErrorType}: {completed.Error}");
            }

            return completed.Payload is null ? default! : (TResult)runtime.Serializer.Deserialize(completed.Payload, typeof(TResult));
        }
        finally
        {
            runtime.UnregisterUpdate(updateId);
        }
    }

    /// <summary>
    /// Waits for the update's completion, or for the instance to end first (terminated, say) without completing it: the
    /// caller then gets an error instead of waiting for good.
    /// </summary>
    private async Task<HistoryEvent> WaitForUpdateAsync(string instanceId, string name, string updateId, Task<HistoryEvent> waiter, CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var end = runtime.WaitForEndAsync(instanceId, stop.Token);
        try
        {
            if (await Task.WhenAny(waiter, end).ConfigureAwait(false) == waiter)
            {
                return await waiter.ConfigureAwait(false);
            }

            cancellationToken.ThrowIfCancellationRequested();
            var record = await end.ConfigureAwait(false);
            if (record.ClosedAt is null)
            {
                // Faulted, not ended: a resume may still handle the update.
                return await waiter.WaitAsync(cancellationToken).ConfigureAwait(false);
            }

            // The completion is committed before (or with) the end; its waiter may just not have been told yet.
            var history = await runtime.ReadHistoryAsync(instanceId, record.Run, cancellationToken).ConfigureAwait(false);
            return history.FirstOrDefault(e => e.Kind == HistoryEventKind.UpdateCompleted && e.Id == updateId)
                ?? throw new InvalidOperationException($"Workflow instance '{instanceId}' ended ({record.Status}) before update '{name}' completed.");
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await end.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default).ConfigureAwait(false);
        }
    }

    public Task CancelAsync(string instanceId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(instanceId);
        return runtime.Enqueue(instanceId, new EventItem(new HistoryEvent { Kind = HistoryEventKind.CancelRequested })).WaitAsync(cancellationToken);
    }

    public Task TerminateAsync(string instanceId, string? reason = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(instanceId);
        return runtime.Enqueue(instanceId, new TerminateItem(reason)).WaitAsync(cancellationToken);
    }

    public Task ResumeAsync(string instanceId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(instanceId);
        return runtime.Enqueue(instanceId, new ResumeItem()).WaitAsync(cancellationToken);
    }

    public async Task<TResult> GetResultAsync<TResult>(string instanceId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(instanceId);
        var record = await runtime.WaitForEndAsync(instanceId, cancellationToken).ConfigureAwait(false);
        if (record.Status != WorkflowStatus.Completed)
        {
            throw new WorkflowFailedException(instanceId, record.Status, record.Error);
        }

        return record.Result is null ? default! : (TResult)runtime.Serializer.Deserialize(record.Result, typeof(TResult));
    }

    public async Task<WorkflowInstanceInfo?> DescribeAsync(string instanceId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(instanceId);
        return (await runtime.ReadRecordAsync(instanceId).ConfigureAwait(false))?.ToInfo();
    }

    public async IAsyncEnumerable<WorkflowInstanceInfo> ListAsync(WorkflowStatus? status = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var (_, bytes) in runtime.Documents.ListAsync(InstanceRecord.Collection, cancellationToken).ConfigureAwait(false))
        {
            if (JsonSerializer.Deserialize(bytes, OrchestrationJson.Default.InstanceRecord) is { } record && (status is null || record.Status == status))
            {
                yield return record.ToInfo();
            }
        }
    }

    public async Task<bool> PurgeAsync(string instanceId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(instanceId);
        var record = await runtime.ReadRecordAsync(instanceId).ConfigureAwait(false);
        if (record is null)
        {
            return false;
        }

        if (record.ClosedAt is null)
        {
            throw new InvalidOperationException($"Workflow instance '{instanceId}' is {record.Status}; terminate it before purging it.");
        }

        for (var run = 1; run <= record.Run; run++)
        {
            var stream = runtime.StreamOf(instanceId, run);
            if ((await runtime.Storage.GetStreamStateAsync(stream, cancellationToken).ConfigureAwait(false)).Version > 0)
            {
                await runtime.Storage.DeleteStreamAsync(stream, Storage.ExpectedVersion.Any, Storage.StreamDeleteMode.Hard, cancellationToken).ConfigureAwait(false);
            }
        }

        await runtime.Documents.DeleteAsync(InstanceRecord.Collection, instanceId, cancellationToken).ConfigureAwait(false);
        return true;
    }

    public async Task<WorkflowHistory> GetHistoryAsync(string instanceId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(instanceId);
        var record = await runtime.ReadRecordAsync(instanceId).ConfigureAwait(false) ?? throw new WorkflowNotFoundException(instanceId);
        var events = await runtime.ReadHistoryAsync(instanceId, record.Run, cancellationToken).ConfigureAwait(false);
        return new WorkflowHistory(instanceId, record.Type, record.Run, events);
    }

    private static async Task Closed(string instanceId, Task<object?> accepted, CancellationToken cancellationToken)
    {
        if (await accepted.WaitAsync(cancellationToken).ConfigureAwait(false) is HistoryEvent final)
        {
            throw new WorkflowFailedException(instanceId, final.Kind switch
            {
                HistoryEventKind.Completed => WorkflowStatus.Completed,
                HistoryEventKind.Canceled => WorkflowStatus.Canceled,
                HistoryEventKind.Terminated => WorkflowStatus.Terminated,
                _ => WorkflowStatus.Failed,
            }, "it had ended, so the signal was not delivered");
        }
    }

    private byte[]? Serialize(object? value) => runtime.Serializer.ToPayload(value, typeof(object));
}
