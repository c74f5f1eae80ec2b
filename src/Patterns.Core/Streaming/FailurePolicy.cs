using Polly;
using Polly.Retry;

namespace Patterns.Streaming;

/// <summary>What a stage does with an element whose user code threw.</summary>
public enum FailureAction
{
    /// <summary>The pipeline stops and completes with the exception. The default.</summary>
    Stop,

    /// <summary>The element is skipped and recorded, with its exception, in the pipeline's dead-letter output.</summary>
    Resume,

    /// <summary>The element is retried through a Polly pipeline; when the retries are exhausted, <see cref="FailurePolicy.WhenExhausted"/> applies.</summary>
    Retry,
}

/// <summary>How one stage of a stream pipeline handles failures of its user code. No stage fails silently.</summary>
/// <remarks>Give a policy per stage (the <c>onError</c> argument of each operator), or a default for the pipeline in <see cref="StreamOptions.DefaultFailurePolicy"/>.</remarks>
public sealed class FailurePolicy
{
    private FailurePolicy(FailureAction action, RetryStrategyOptions? retry, ResiliencePipeline? pipeline, FailurePolicy? whenExhausted)
    {
        Action = action;
        RetryOptions = retry;
        Pipeline = pipeline;
        WhenExhausted = whenExhausted;
    }

    /// <summary>Gets the policy that stops the pipeline with the exception.</summary>
    public static FailurePolicy Stop { get; } = new(FailureAction.Stop, null, null, null);

    /// <summary>Gets the policy that skips the element and records it in the dead-letter output.</summary>
    public static FailurePolicy Resume { get; } = new(FailureAction.Resume, null, null, null);

    /// <summary>Gets what the policy does.</summary>
    public FailureAction Action { get; }

    /// <summary>Gets the retry options (<see cref="FailureAction.Retry"/> built from options).</summary>
    public RetryStrategyOptions? RetryOptions { get; }

    /// <summary>Gets the resilience pipeline (<see cref="FailureAction.Retry"/> given a pipeline).</summary>
    public ResiliencePipeline? Pipeline { get; }

    /// <summary>Gets what happens when the retries are exhausted (<see cref="FailureAction.Retry"/> only).</summary>
    /// <value><see cref="Resume"/> unless given.</value>
    public FailurePolicy? WhenExhausted { get; }

    /// <summary>Retries the element with a Polly retry strategy, whose delays run on the pipeline's <see cref="TimeProvider"/>.</summary>
    /// <param name="retry">The retry strategy.</param>
    /// <param name="whenExhausted"><see cref="Resume"/> (the default) or <see cref="Stop"/>.</param>
    /// <returns>The policy.</returns>
    public static FailurePolicy Retry(RetryStrategyOptions retry, FailurePolicy? whenExhausted = null)
    {
        ArgumentNullException.ThrowIfNull(retry);
        return new(FailureAction.Retry, retry, null, CheckExhausted(whenExhausted));
    }

    /// <summary>Retries the element through a resilience pipeline built by the caller.</summary>
    /// <param name="pipeline">The pipeline.</param>
    /// <param name="whenExhausted"><see cref="Resume"/> (the default) or <see cref="Stop"/>.</param>
    /// <returns>The policy.</returns>
    public static FailurePolicy Retry(ResiliencePipeline pipeline, FailurePolicy? whenExhausted = null)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        return new(FailureAction.Retry, null, pipeline, CheckExhausted(whenExhausted));
    }

    /// <inheritdoc />
    public override string ToString() => Action.ToString();

    private static FailurePolicy CheckExhausted(FailurePolicy? whenExhausted) =>
        whenExhausted is { Action: FailureAction.Retry }
            ? throw new ArgumentException("What happens after the retries must be Resume or Stop, not another Retry.", nameof(whenExhausted))
            : whenExhausted ?? Resume;
}
