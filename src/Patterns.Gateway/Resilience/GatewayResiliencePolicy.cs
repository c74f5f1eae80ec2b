using System.ComponentModel.DataAnnotations;
using Patterns.Resilience;

namespace Patterns.Gateway;

/// <summary>
/// A named resilience policy that routes refer to with the <see cref="GatewayMetadata.ResiliencePolicy"/> route metadata key.
/// Defined in code with <see cref="GatewayBuilder.AddResiliencePolicy"/> and in configuration under
/// <c>ResiliencePolicies:{name}</c> of the gateway's section; when both define a name, the configuration's values apply
/// first and the code's delegate after them (as with <c>Configure</c> on named options).
/// </summary>
/// <remarks>
/// <para>The strategies are Patterns' own (<see cref="HandlerResilienceOptions"/>, the same options a handler's
/// resilience uses) on Polly: a concurrency limit (outermost, shared by every route that names the policy), the timeout
/// of the whole request, retries, then per destination a circuit breaker and the timeout of one attempt.</para>
/// <para>The gateway decides what is retried and what opens a circuit, so the <c>ShouldHandle</c> predicates of
/// <see cref="HandlerResilienceOptions.Retry"/> and <see cref="HandlerResilienceOptions.CircuitBreaker"/> are not used:
/// a 5xx answer, a timeout or a transport error is a failure; only idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT,
/// DELETE) are retried, each retry on another destination, under the retry budget. Of the retry options, the gateway
/// uses <c>MaxRetryAttempts</c> (0 to 10), <c>Delay</c>, <c>BackoffType</c>, <c>UseJitter</c> and <c>MaxDelay</c>; of
/// the breaker's, <c>FailureRatio</c>, <c>MinimumThroughput</c>, <c>SamplingDuration</c> and <c>BreakDuration</c>.</para>
/// <para>A route's policy replaces the resilience keys of its cluster's metadata (timeouts, retries, hedging, breaker);
/// weights, the routing key and outlier detection stay the cluster's.</para>
/// </remarks>
public sealed class GatewayResiliencePolicy : HandlerResilienceOptions
{
    /// <summary>Gets or sets the timeout of the whole request, every retry included; past it the client gets 504 with a problem details body.</summary>
    /// <value>Default <see langword="null"/>: no timeout.</value>
    public TimeSpan? Timeout { get; set; }

    /// <summary>Gets or sets the retries in flight allowed as a percentage of the active requests of the cluster.</summary>
    /// <value>Default 20.</value>
    [Range(0, 100)]
    public double RetryBudgetPercent { get; set; } = 20;

    /// <summary>Gets or sets the retries in flight always allowed, whatever the budget.</summary>
    /// <value>Default 3.</value>
    [Range(0, int.MaxValue)]
    public int RetryMinConcurrency { get; set; } = 3;

    /// <summary>Gets or sets the largest request body buffered so that a request with a body can be retried; larger bodies are sent once.</summary>
    /// <value>Default 65536 bytes.</value>
    [Range(0, int.MaxValue)]
    public int MaxBufferedBodyBytes { get; set; } = 64 * 1024;
}
