namespace Patterns.Orchestration;

/// <summary>The non-generic base of every workflow; derive from <see cref="Workflow{TInput, TResult}"/>.</summary>
public abstract class WorkflowBase
{
    private protected WorkflowBase()
    {
    }

    internal abstract Type InputType { get; }

    internal abstract Type ResultType { get; }

    internal abstract Task<object?> ExecuteAsync(WorkflowContext context, object? input);
}

/// <summary>
/// A code-first durable workflow: an ordinary async method, with loops, try/catch and <c>Task.WhenAll</c>, that the engine
/// runs by deterministic replay of its history.
/// </summary>
/// <typeparam name="TInput">The input type.</typeparam>
/// <typeparam name="TResult">The result type.</typeparam>
/// <remarks>
/// <para>
/// A new object is created (from DI) for each instance and lives as long as the instance is cached; fields hold the
/// workflow's state, which queries read. The code must be deterministic: given the same history it must make the same
/// calls in the same order. Only await the <see cref="WorkflowContext"/>'s operations; read time, ids and random numbers
/// from it; never use <c>Task.Run</c>, <c>Task.Delay</c>, <c>ConfigureAwait(false)</c>, I/O, <c>DateTime.Now</c> or
/// <c>Guid.NewGuid()</c> here (do those in activities). Code that escapes the workflow's scheduler fails the workflow task
/// with a <see cref="WorkflowDeterminismException"/>.
/// </para>
/// </remarks>
public abstract class Workflow<TInput, TResult> : WorkflowBase
{
    internal override Type InputType => typeof(TInput);

    internal override Type ResultType => typeof(TResult);

    /// <summary>Runs the workflow.</summary>
    /// <param name="context">The workflow's context: activities, timers, signals, deterministic time and ids.</param>
    /// <param name="input">The input given at start.</param>
    /// <returns>The result, recorded in the history and returned to <see cref="IWorkflowClient.GetResultAsync{TResult}"/>.</returns>
    public abstract Task<TResult> RunAsync(WorkflowContext context, TInput input);

    internal override async Task<object?> ExecuteAsync(WorkflowContext context, object? input) =>
        await RunAsync(context, input is null ? default! : (TInput)input).ConfigureAwait(true);
}

/// <summary>How an activity is run: its timeouts and retries.</summary>
public sealed record ActivityOptions
{
    /// <summary>Gets the longest one attempt may run; it is then cancelled and counts as failed.</summary>
    /// <value>5 minutes by default.</value>
    public TimeSpan StartToCloseTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Gets the longest an attempt may go without calling <see cref="ActivityContext.Heartbeat"/>; null for no limit.</summary>
    /// <value>Null by default.</value>
    public TimeSpan? HeartbeatTimeout { get; init; }

    /// <summary>Gets the retry policy.</summary>
    /// <value><see cref="RetryPolicy.Default"/> by default: 3 attempts with exponential backoff from 1 second.</value>
    public RetryPolicy Retry { get; init; } = RetryPolicy.Default;

    /// <summary>Gets the token that cancels the call from the workflow's side; null uses <see cref="WorkflowContext.CancellationToken"/>.</summary>
    /// <value>Null by default. Pass <see cref="System.Threading.CancellationToken.None"/> for compensations that must run after cancellation.</value>
    public CancellationToken? CancellationToken { get; init; }

    internal static ActivityOptions Default { get; } = new();
}

/// <summary>How often, and after how long, a failed activity attempt is retried.</summary>
public sealed record RetryPolicy
{
    /// <summary>Gets the default policy: 3 attempts, 1 s first delay, doubling, at most 1 minute apart.</summary>
    public static RetryPolicy Default { get; } = new();

    /// <summary>Gets a policy with a single attempt.</summary>
    public static RetryPolicy None { get; } = new() { MaxAttempts = 1 };

    /// <summary>Gets the number of attempts, the first included.</summary>
    /// <value>3 by default.</value>
    public int MaxAttempts { get; init; } = 3;

    /// <summary>Gets the delay before the second attempt.</summary>
    /// <value>1 second by default.</value>
    public TimeSpan InitialInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Gets the factor the delay grows by after each attempt.</summary>
    /// <value>2 by default.</value>
    public double BackoffCoefficient { get; init; } = 2;

    /// <summary>Gets the longest delay between attempts.</summary>
    /// <value>1 minute by default.</value>
    public TimeSpan MaxInterval { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>Gets full names of exception types that are never retried.</summary>
    /// <value>Empty by default.</value>
    public IReadOnlyList<string> NonRetryableErrorTypes { get; init; } = [];

    /// <summary>Gets the delay after attempt <paramref name="attempt"/> (1-based).</summary>
    /// <param name="attempt">The attempt that failed.</param>
    /// <returns>The delay before the next one.</returns>
    public TimeSpan DelayAfter(int attempt)
    {
        var ticks = InitialInterval.Ticks * Math.Pow(BackoffCoefficient, Math.Max(0, attempt - 1));
        return ticks >= MaxInterval.Ticks ? MaxInterval : TimeSpan.FromTicks((long)ticks);
    }
}
