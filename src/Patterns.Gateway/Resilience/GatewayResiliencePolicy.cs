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

    /// <summary>
    /// Gets or sets the hedging of the policy: a request without a body that has no answer after <see cref="GatewayHedgingOptions.Delay"/>
    /// is also sent to another destination; the first good answer wins and the other attempts are cancelled. Excludes <see cref="HandlerResilienceOptions.Retry"/>.
    /// </summary>
    /// <value>Default <see langword="null"/>: no hedging.</value>
    public GatewayHedgingOptions? Hedging { get; set; }
}

/// <summary>The hedging of a <see cref="GatewayResiliencePolicy"/> (Polly's hedging strategy, with the gateway choosing each hedge's destination).</summary>
/// <remarks>
/// Only a request without a body whose method is in <see cref="Methods"/> is hedged; each hedged attempt goes to an available
/// destination that no other attempt of the request uses. A 5xx answer, a timeout or a transport error makes the next attempt
/// start at once; the first other answer is the response, the attempts still running are cancelled and their answers disposed.
/// </remarks>
public sealed class GatewayHedgingOptions
{
    /// <summary>The methods hedged by default: GET, HEAD and OPTIONS.</summary>
    public static readonly IReadOnlyList<string> DefaultMethods = ["GET", "HEAD", "OPTIONS"];

    /// <summary>Gets or sets the hedged attempts besides the first, from 1 to 10.</summary>
    /// <value>Default 1.</value>
    [Range(1, 10)]
    public int MaxHedgedAttempts { get; set; } = 1;

    /// <summary>Gets or sets how long an attempt runs without an answer before the next one starts; zero starts every attempt at once.</summary>
    /// <value>Default 2 seconds.</value>
    public TimeSpan Delay { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Gets or sets the methods hedged; each must be idempotent (GET, HEAD, OPTIONS, TRACE, PUT or DELETE), as hedging sends a request more than once.</summary>
    /// <value>Default <see cref="DefaultMethods"/>.</value>
    public IList<string> Methods { get; set; } = [.. DefaultMethods];
}
