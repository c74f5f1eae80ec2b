namespace Patterns.Orchestration;

/// <summary>Starts, signals, queries, updates, cancels, terminates, lists and purges workflow instances.</summary>
public interface IWorkflowClient
{
    /// <summary>Starts an instance. Idempotent by instance id: starting an id that exists changes nothing.</summary>
    /// <param name="workflowType">The workflow's registered name (its class name unless given at registration).</param>
    /// <param name="instanceId">The instance id.</param>
    /// <param name="input">The input.</param>
    /// <param name="cancellationToken">Cancels waiting for the start to commit.</param>
    /// <returns>A task that completes when the start is committed (or the instance already existed).</returns>
    /// <exception cref="InvalidOperationException">No workflow has that name.</exception>
    Task StartAsync(string workflowType, string instanceId, object? input = null, CancellationToken cancellationToken = default);

    /// <summary>Sends a signal; it is recorded in the history and delivered to the next <see cref="WorkflowContext.WaitForSignalAsync{T}(string, CancellationToken)"/> with that name.</summary>
    /// <param name="instanceId">The instance.</param>
    /// <param name="name">The signal's name.</param>
    /// <param name="payload">Its payload.</param>
    /// <param name="cancellationToken">Cancels waiting for the signal to commit.</param>
    /// <returns>A task that completes when the signal is recorded.</returns>
    /// <exception cref="WorkflowNotFoundException">The instance does not exist.</exception>
    Task SignalAsync(string instanceId, string name, object? payload = null, CancellationToken cancellationToken = default);

    /// <summary>Runs a query handler against the instance's current state.</summary>
    /// <typeparam name="TResult">The query's result type.</typeparam>
    /// <param name="instanceId">The instance.</param>
    /// <param name="name">The query's name.</param>
    /// <param name="cancellationToken">Cancels waiting.</param>
    /// <returns>The query's result.</returns>
    Task<TResult> QueryAsync<TResult>(string instanceId, string name, CancellationToken cancellationToken = default);

    /// <summary>Sends an update and waits until the workflow has handled it.</summary>
    /// <typeparam name="TArgument">The argument type.</typeparam>
    /// <typeparam name="TResult">The result type.</typeparam>
    /// <param name="instanceId">The instance.</param>
    /// <param name="name">The update's name.</param>
    /// <param name="argument">The argument.</param>
    /// <param name="cancellationToken">Cancels waiting.</param>
    /// <returns>The update handler's result.</returns>
    /// <exception cref="InvalidOperationException">The handler failed, or the instance had ended.</exception>
    Task<TResult> UpdateAsync<TArgument, TResult>(string instanceId, string name, TArgument argument, CancellationToken cancellationToken = default);

    /// <summary>Requests cancellation: <see cref="WorkflowContext.CancellationToken"/> is cancelled, and the code decides how to end (compensations may still run).</summary>
    /// <param name="instanceId">The instance.</param>
    /// <param name="cancellationToken">Cancels waiting.</param>
    /// <returns>A task that completes when the request is recorded.</returns>
    Task CancelAsync(string instanceId, CancellationToken cancellationToken = default);

    /// <summary>Ends the instance at once, without running its code.</summary>
    /// <param name="instanceId">The instance.</param>
    /// <param name="reason">Why, recorded as its error.</param>
    /// <param name="cancellationToken">Cancels waiting.</param>
    /// <returns>A task that completes when the termination is recorded.</returns>
    Task TerminateAsync(string instanceId, string? reason = null, CancellationToken cancellationToken = default);

    /// <summary>Reloads an instance from its history and re-sends what it waits for (for a faulted instance after a code fix).</summary>
    /// <param name="instanceId">The instance.</param>
    /// <param name="cancellationToken">Cancels waiting.</param>
    /// <returns>A task that completes when the instance is loaded.</returns>
    Task ResumeAsync(string instanceId, CancellationToken cancellationToken = default);

    /// <summary>Waits for the instance to end and returns its result.</summary>
    /// <typeparam name="TResult">The result type.</typeparam>
    /// <param name="instanceId">The instance.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>The result.</returns>
    /// <exception cref="WorkflowFailedException">It failed, was cancelled, terminated, or is faulted.</exception>
    Task<TResult> GetResultAsync<TResult>(string instanceId, CancellationToken cancellationToken = default);

    /// <summary>Gets an instance's summary, or null when it does not exist.</summary>
    /// <param name="instanceId">The instance.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The summary, or null.</returns>
    Task<WorkflowInstanceInfo?> DescribeAsync(string instanceId, CancellationToken cancellationToken = default);

    /// <summary>Lists instances, optionally only those with one status.</summary>
    /// <param name="status">The status to select, or null for all.</param>
    /// <param name="cancellationToken">Cancels the listing.</param>
    /// <returns>The instances, in id order.</returns>
    IAsyncEnumerable<WorkflowInstanceInfo> ListAsync(WorkflowStatus? status = null, CancellationToken cancellationToken = default);

    /// <summary>Deletes an ended instance's history (every run) and summary.</summary>
    /// <param name="instanceId">The instance.</param>
    /// <param name="cancellationToken">Cancels the purge.</param>
    /// <returns>Whether an instance was purged.</returns>
    /// <exception cref="InvalidOperationException">The instance is still running.</exception>
    Task<bool> PurgeAsync(string instanceId, CancellationToken cancellationToken = default);

    /// <summary>Reads the history of an instance's current run, for <see cref="WorkflowReplayer"/> (for example, exported to files replayed in CI).</summary>
    /// <param name="instanceId">The instance.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The history.</returns>
    Task<WorkflowHistory> GetHistoryAsync(string instanceId, CancellationToken cancellationToken = default);
}
