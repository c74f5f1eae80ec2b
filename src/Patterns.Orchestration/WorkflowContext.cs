using System.Diagnostics.CodeAnalysis;
using Patterns.Orchestration.Engine;
using Patterns.Orchestration.History;

namespace Patterns.Orchestration;

/// <summary>
/// What a workflow may do: call activities, start timers and child workflows, wait for signals and conditions, answer
/// queries and updates, and read deterministic time, ids and random numbers. Every call is recorded in (or, on replay,
/// checked against) the instance's history.
/// </summary>
/// <remarks>Call it only from the workflow's own code, never after <c>ConfigureAwait(false)</c> or from another thread.</remarks>
public sealed class WorkflowContext
{
    private readonly WorkflowExecutor _executor;

    internal WorkflowContext(WorkflowExecutor executor) => _executor = executor;

    /// <summary>Gets the instance id.</summary>
    public string InstanceId => _executor.InstanceId;

    /// <summary>Gets the run number: 1, plus one per continue-as-new.</summary>
    public int Run => _executor.Run;

    /// <summary>Gets the workflow type's registered name.</summary>
    public string WorkflowType => _executor.Definition.Name;

    /// <summary>Gets the current time: the time the current workflow task started, the same on every replay.</summary>
    public DateTimeOffset UtcNow => _executor.Now;

    /// <summary>Gets a value indicating whether the code is being replayed from history (use it to skip logging, never to change decisions).</summary>
    public bool IsReplaying => _executor.IsReplaying;

    /// <summary>Gets the token cancelled when a client cancels the instance; activities, timers and waits use it by default.</summary>
    public CancellationToken CancellationToken => _executor.CancellationToken;

    /// <summary>Gets a random number generator seeded from the instance, so replay draws the same numbers.</summary>
    public Random Random => _executor.Random;

    /// <summary>Gets the number of events in this run's history so far.</summary>
    public int HistoryLength => _executor.HistoryLength;

    /// <summary>Gets a value indicating whether the history is long enough that the workflow should call <see cref="ContinueAsNew"/>.</summary>
    public bool IsContinueAsNewSuggested => _executor.IsContinueAsNewSuggested;

    /// <summary>Gets the parent instance's id for a child workflow, or null.</summary>
    public string? ParentInstanceId => _executor.ParentId;

    /// <summary>Creates an id that is the same on every replay.</summary>
    /// <returns>A version-4-layout GUID derived from the instance.</returns>
    public Guid NewGuid()
    {
        _executor.EnsureOnScheduler(nameof(NewGuid));
        return _executor.NewGuid();
    }

    /// <summary>Schedules an activity on the activity workers and waits for its result.</summary>
    /// <typeparam name="TResult">The result type.</typeparam>
    /// <param name="name">The activity's registered name.</param>
    /// <param name="input">Its input, or null.</param>
    /// <param name="options">Timeouts and retries; <see cref="ActivityOptions"/> defaults when null.</param>
    /// <returns>The activity's result.</returns>
    /// <exception cref="ActivityFailureException">The activity failed after its last attempt.</exception>
    public Task<TResult> CallActivityAsync<TResult>(string name, object? input = null, ActivityOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        _executor.EnsureOnScheduler(nameof(CallActivityAsync));
        var payload = _executor.Serialize(input, typeof(object));
        var raw = _executor.ScheduleActivity(name, payload, ActivitySettings.From(options), options?.CancellationToken ?? CancellationToken);
        return Typed<TResult>(raw);
    }

    /// <summary>Schedules an activity that returns nothing and waits for it.</summary>
    /// <param name="name">The activity's registered name.</param>
    /// <param name="input">Its input, or null.</param>
    /// <param name="options">Timeouts and retries.</param>
    /// <returns>A task that completes when the activity has.</returns>
    /// <exception cref="ActivityFailureException">The activity failed after its last attempt.</exception>
    public Task CallActivityAsync(string name, object? input = null, ActivityOptions? options = null) =>
        CallActivityAsync<object?>(name, input, options);

    /// <summary>
    /// Runs a short function inline, in the workflow task, and records its result: replay returns the recorded result
    /// instead of running it again. Use it for quick, local work (a lookup, a computation) that needs no queue round trip.
    /// </summary>
    /// <typeparam name="TResult">The result type.</typeparam>
    /// <param name="name">A name for the history (checked on replay).</param>
    /// <param name="body">The function; it runs off the workflow's scheduler and may do I/O.</param>
    /// <returns>The function's result.</returns>
    /// <exception cref="ActivityFailureException">The function threw.</exception>
    public Task<TResult> CallLocalActivityAsync<TResult>(string name, Func<CancellationToken, Task<TResult>> body)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(body);
        _executor.EnsureOnScheduler(nameof(CallLocalActivityAsync));
        var executor = _executor;
        return Typed<TResult>(_executor.RunLocal(name, async ct => executor.Serialize(await body(ct).ConfigureAwait(false), typeof(TResult))));
    }

    /// <summary>Starts a child workflow and waits for its result.</summary>
    /// <typeparam name="TResult">The child's result type.</typeparam>
    /// <param name="workflowType">The child workflow's registered name.</param>
    /// <param name="input">Its input.</param>
    /// <param name="instanceId">The child's instance id; derived from this instance and the call's position when null.</param>
    /// <returns>The child's result.</returns>
    /// <exception cref="ChildWorkflowFailureException">The child failed, was cancelled or terminated.</exception>
    public Task<TResult> CallChildWorkflowAsync<TResult>(string workflowType, object? input = null, string? instanceId = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(workflowType);
        _executor.EnsureOnScheduler(nameof(CallChildWorkflowAsync));
        var childId = instanceId ?? $"{InstanceId}/child-{_executor.PeekNextSequence()}";
        return Typed<TResult>(_executor.StartChild(workflowType, childId, _executor.Serialize(input, typeof(object)), CancellationToken));
    }

    /// <summary>Waits for a durable timer: it survives restarts and fires once, at <see cref="UtcNow"/> plus <paramref name="delay"/>.</summary>
    /// <param name="delay">How long to wait.</param>
    /// <param name="cancellationToken">Stops waiting (the timer stays in the history).</param>
    /// <returns>A task that completes when the timer fires.</returns>
    public Task DelayAsync(TimeSpan delay, CancellationToken cancellationToken = default)
    {
        _executor.EnsureOnScheduler(nameof(DelayAsync));
        if (delay <= TimeSpan.Zero)
        {
            return Task.CompletedTask;
        }

        var raw = _executor.StartTimer(delay, cancellationToken.CanBeCanceled ? cancellationToken : CancellationToken);
        return Typed<object?>(raw);
    }

    /// <summary>Waits for the next signal with this name (signals that arrived earlier are buffered, in order).</summary>
    /// <typeparam name="T">The signal's payload type.</typeparam>
    /// <param name="name">The signal's name.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>The signal's payload.</returns>
    public Task<T> WaitForSignalAsync<T>(string name, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        _executor.EnsureOnScheduler(nameof(WaitForSignalAsync));
        return Typed<T>(_executor.WaitForSignal(name, cancellationToken.CanBeCanceled ? cancellationToken : CancellationToken));
    }

    /// <summary>Waits for the next signal with this name, or a durable timeout.</summary>
    /// <typeparam name="T">The signal's payload type.</typeparam>
    /// <param name="name">The signal's name.</param>
    /// <param name="timeout">How long to wait; the timeout is a durable timer.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>The signal's payload.</returns>
    /// <exception cref="TimeoutException">No such signal arrived within <paramref name="timeout"/>.</exception>
    public async Task<T> WaitForSignalAsync<T>(string name, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        _executor.EnsureOnScheduler(nameof(WaitForSignalAsync));
        var token = cancellationToken.CanBeCanceled ? cancellationToken : CancellationToken;
        var signal = _executor.WaitForSignal(name, token);
        if (signal.IsCompleted)
        {
            return _executor.Deserialize<T>(await signal.ConfigureAwait(true));
        }

        var timer = _executor.StartTimer(timeout, token);
        var first = await Task.WhenAny(signal, timer).ConfigureAwait(true);
        if (first == signal)
        {
            return _executor.Deserialize<T>(await signal.ConfigureAwait(true));
        }

        await first.ConfigureAwait(true); // cancellation surfaces here
        _executor.AbandonSignalWait(signal);
        throw new TimeoutException($"Workflow instance '{InstanceId}' waited {timeout} for signal '{name}', which did not arrive.");
    }

    /// <summary>
    /// Waits for a message from a pub/sub topic or queue that the host correlates to this instance
    /// (<c>OrchestrationBuilder.CorrelateMessage</c>), with an optional durable timeout.
    /// </summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="timeout">How long to wait, or null to wait until cancelled.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>The message.</returns>
    /// <exception cref="TimeoutException">No message arrived within <paramref name="timeout"/>.</exception>
    public Task<TMessage> WaitForMessageAsync<TMessage>(TimeSpan? timeout = null, CancellationToken cancellationToken = default) =>
        timeout is { } limit
            ? WaitForSignalAsync<TMessage>(MessageSignals.NameOf(typeof(TMessage)), limit, cancellationToken)
            : WaitForSignalAsync<TMessage>(MessageSignals.NameOf(typeof(TMessage)), cancellationToken);

    /// <summary>Waits until <paramref name="condition"/> holds; it is re-checked after every event the workflow handles.</summary>
    /// <param name="condition">A condition over the workflow's own state (no I/O).</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>A task that completes when the condition holds.</returns>
    public Task WaitConditionAsync(Func<bool> condition, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(condition);
        _executor.EnsureOnScheduler(nameof(WaitConditionAsync));
        return Typed<object?>(_executor.WaitCondition(condition, cancellationToken.CanBeCanceled ? cancellationToken : CancellationToken));
    }

    /// <summary>Registers a query: a read of the workflow's state that clients run with <see cref="IWorkflowClient.QueryAsync{TResult}"/>.</summary>
    /// <typeparam name="TResult">The query's result type.</typeparam>
    /// <param name="name">The query's name.</param>
    /// <param name="handler">Reads the state; it must not change it or call workflow operations.</param>
    public void SetQueryHandler<TResult>(string name, Func<TResult> handler)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(handler);
        _executor.SetQuery(name, () => (handler(), typeof(TResult)));
    }

    /// <summary>
    /// Registers an update: a request that changes the workflow's state and returns a result once the workflow has handled
    /// it (<see cref="IWorkflowClient.UpdateAsync{TArgument, TResult}"/>). The handler runs as workflow code and may await operations.
    /// </summary>
    /// <typeparam name="TArgument">The argument type.</typeparam>
    /// <typeparam name="TResult">The result type.</typeparam>
    /// <param name="name">The update's name.</param>
    /// <param name="handler">Handles it.</param>
    public void SetUpdateHandler<TArgument, TResult>(string name, Func<TArgument, Task<TResult>> handler)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(handler);
        _executor.SetUpdate(name, typeof(TArgument), async argument =>
        {
            var result = await handler(argument is null ? default! : (TArgument)argument).ConfigureAwait(true);
            return (result, typeof(TResult));
        });
    }

    /// <summary>Sets a status that clients read with <see cref="IWorkflowClient.DescribeAsync"/> and <see cref="IWorkflowClient.ListAsync"/>.</summary>
    /// <param name="status">The status, or null to clear it.</param>
    public void SetCustomStatus(object? status)
    {
        _executor.EnsureOnScheduler(nameof(SetCustomStatus));
        _executor.SetCustomStatus(_executor.Serialize(status, typeof(object)));
    }

    /// <summary>
    /// Asks whether this run takes the new code path of a change named <paramref name="patchId"/>: true for new runs (the
    /// choice is recorded), and on replay true only where the history recorded it. Keep the old path in the else branch
    /// until no running instance needs it, then switch to <see cref="DeprecatePatch"/>.
    /// </summary>
    /// <param name="patchId">The change's id.</param>
    /// <returns>Whether to run the new code.</returns>
    public bool Patched(string patchId)
    {
        ArgumentException.ThrowIfNullOrEmpty(patchId);
        _executor.EnsureOnScheduler(nameof(Patched));
        return _executor.Patched(patchId, deprecated: false);
    }

    /// <summary>Marks a patch whose old code path is gone: histories with or without its marker both replay.</summary>
    /// <param name="patchId">The change's id.</param>
    public void DeprecatePatch(string patchId)
    {
        ArgumentException.ThrowIfNullOrEmpty(patchId);
        _executor.EnsureOnScheduler(nameof(DeprecatePatch));
        _executor.Patched(patchId, deprecated: true);
    }

    /// <summary>Ends this run and starts a new one of the same workflow with <paramref name="input"/> and an empty history.</summary>
    /// <param name="input">The new run's input.</param>
    [DoesNotReturn]
    public void ContinueAsNew(object? input)
    {
        _executor.EnsureOnScheduler(nameof(ContinueAsNew));
        throw new ContinueAsNewException(_executor.Serialize(input, typeof(object)));
    }

    private Task<T> Typed<T>(Task raw)
    {
        // Completed by a task queued on the workflow's scheduler: an await that keeps the context then resumes inline on
        // the scheduler, while one with ConfigureAwait(false) is sent to the thread pool, so it leaves the scheduler
        // visibly (and is caught) instead of continuing inline by chance. A static continuation with the completion as its
        // state: a closure and a delegate for each wait lived as long as the wait (every armed timer).
        var typed = new TypedCompletion<T>(_executor);
        raw.ContinueWith(TypedCompletion<T>.Continuation, typed, CancellationToken.None, TaskContinuationOptions.None, _executor.Scheduler);
        return typed.Task;
    }

    /// <summary>A wait's typed outcome, with the executor that reads its payload.</summary>
    private sealed class TypedCompletion<T>(WorkflowExecutor executor) : TaskCompletionSource<T>
    {
        public static readonly Action<Task, object?> Continuation = static (t, state) => ((TypedCompletion<T>)state!).SetFrom(t);

        private void SetFrom(Task t)
        {
            if (t.IsCanceled)
            {
                TrySetCanceled();
            }
            else if (t.Exception is { } error)
            {
                TrySetException(error.InnerException ?? error);
            }
            else
            {
                try
                {
                    TrySetResult(t is Task<byte[]?> withPayload ? executor.Deserialize<T>(withPayload.Result) : default!);
                }
                catch (Exception ex)
                {
                    TrySetException(ex);
                }
            }
        }
    }
}
