using System.ComponentModel.DataAnnotations;
using Polly;
using Polly.CircuitBreaker;
using Polly.Retry;

namespace Patterns.Resilience;

/// <summary>
/// How a handler's calls are made resilient, with Polly: concurrency limit (outermost), retry, circuit
/// breaker and a per-attempt timeout (innermost), then anything added by <see cref="ConfigurePipeline"/>.
/// </summary>
/// <remarks>
/// Every delay and timeout reads the host's <see cref="TimeProvider"/>, so tests run on virtual time.
/// Polly validates its own options when the pipeline is built at host start; problems fail the start.
/// </remarks>
public abstract class HandlerResilienceOptions
{
    /// <summary>Gets or sets the retry strategy for a failed attempt; <see langword="null"/> for no in-process retries.</summary>
    /// <value>Consumers: 3 retries, exponential backoff from 200 ms with jitter. Request handlers: <see langword="null"/>.</value>
#pragma warning disable SYSLIB1212 // Polly validates its own options when the pipeline is built.
    public RetryStrategyOptions? Retry { get; set; }

    /// <summary>Gets or sets the circuit breaker; <see langword="null"/> for none.</summary>
    /// <value>Default <see langword="null"/>.</value>
    public CircuitBreakerStrategyOptions? CircuitBreaker { get; set; }
#pragma warning restore SYSLIB1212

    /// <summary>Gets or sets the timeout of one attempt; <see langword="null"/> for none.</summary>
    /// <value>Default <see langword="null"/>.</value>
    public TimeSpan? AttemptTimeout { get; set; }

    /// <summary>Gets or sets how many calls may run the handler at once across all workers; <see langword="null"/> for no limit.</summary>
    /// <value>Default <see langword="null"/>.</value>
    [Range(1, int.MaxValue)]
    public int? MaxConcurrentCalls { get; set; }

    /// <summary>Gets or sets how many calls may wait for a concurrency permit before further calls are rejected.</summary>
    /// <value>
    /// Default 0: reject at once when every permit is taken. A consumer's own workers always wait: at least its
    /// <c>Concurrency</c> calls may queue, so a consumer never rejects (and dead-letters) a message for lack of a permit.
    /// </value>
    [Range(0, int.MaxValue)]
    public int MaxQueuedCalls { get; set; }

    /// <summary>Gets or sets a hook that adds further strategies (innermost) to the pipeline.</summary>
    /// <value>Default <see langword="null"/>.</value>
    public Action<ResiliencePipelineBuilder>? ConfigurePipeline { get; set; }

    /// <summary>Gets a value indicating whether any strategy is configured.</summary>
    internal bool HasStrategies =>
        Retry is not null || CircuitBreaker is not null || AttemptTimeout is not null || MaxConcurrentCalls is not null || ConfigurePipeline is not null;
}
