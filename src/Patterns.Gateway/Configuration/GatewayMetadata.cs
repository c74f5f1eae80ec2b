namespace Patterns.Gateway;

/// <summary>
/// The keys that extend YARP's configuration schema. They go in a cluster's or a destination's
/// <c>Metadata</c>, so routes and clusters keep YARP's shape and reload with it.
/// </summary>
/// <remarks>
/// Durations use <see cref="TimeSpan"/> syntax (<c>00:00:05</c>); numbers use the invariant culture.
/// A malformed value fails the configuration load, naming the cluster and the key.
/// </remarks>
public static class GatewayMetadata
{
    /// <summary>Destination metadata: the destination's share of traffic under the <see cref="GatewayPolicies.Weighted"/> policy, a whole number of at least 0. Defaults to 1; 0 takes the destination out of rotation.</summary>
    public const string Weight = "Weight";

    /// <summary>
    /// Route metadata: the name of the <see cref="GatewayResiliencePolicy"/> the route's requests run under (defined with
    /// <see cref="GatewayBuilder.AddResiliencePolicy"/> or under <c>ResiliencePolicies</c> in configuration). An unknown name
    /// fails the configuration load, naming the route and the policy.
    /// </summary>
    public const string ResiliencePolicy = "Patterns.ResiliencePolicy";

    /// <summary>Cluster metadata: where the routing key of a sticky split comes from: <c>header:NAME</c>, <c>cookie:NAME</c> or <c>claim:TYPE</c>. A request with the key always reaches the same destination while the weights stay the same.</summary>
    public const string RoutingKey = "Patterns.RoutingKey";

    /// <summary>Cluster metadata: consecutive failures (5xx, timeout or transport error) that eject a destination. Enables the consecutive-failure mode.</summary>
    public const string OutlierConsecutiveFailures = "Patterns.Outlier.ConsecutiveFailures";

    /// <summary>Cluster metadata: the failure ratio (0 to 1) within <see cref="OutlierInterval"/> that ejects a destination. Enables the failure-rate mode.</summary>
    public const string OutlierFailureRate = "Patterns.Outlier.FailureRate";

    /// <summary>Cluster metadata: requests a destination must have seen within <see cref="OutlierInterval"/> before the failure-rate mode judges it. Defaults to 10.</summary>
    public const string OutlierMinimumRequests = "Patterns.Outlier.MinimumRequests";

    /// <summary>Cluster metadata: the window of the failure-rate mode. Defaults to 10 seconds.</summary>
    public const string OutlierInterval = "Patterns.Outlier.Interval";

    /// <summary>Cluster metadata: the first ejection's length; each further ejection of the same destination adds one more. Defaults to 30 seconds.</summary>
    public const string OutlierBaseEjectionTime = "Patterns.Outlier.BaseEjectionTime";

    /// <summary>Cluster metadata: the longest ejection. Defaults to 5 minutes.</summary>
    public const string OutlierMaxEjectionTime = "Patterns.Outlier.MaxEjectionTime";

    /// <summary>Cluster metadata: the largest share of the cluster's destinations (0 to 100) ejected at once; one destination may always be ejected. Defaults to 50.</summary>
    public const string OutlierMaxEjectionPercent = "Patterns.Outlier.MaxEjectionPercent";

    /// <summary>Cluster metadata: the timeout of the whole request, every retry or hedge included. No timeout when absent.</summary>
    public const string Timeout = "Patterns.Timeout";

    /// <summary>Cluster metadata: the timeout of one attempt. No timeout when absent.</summary>
    public const string AttemptTimeout = "Patterns.AttemptTimeout";

    /// <summary>Cluster metadata: retries of an idempotent request after a 5xx, a timeout or a transport error, each to another destination. Defaults to 0 (off).</summary>
    public const string RetryMaxRetries = "Patterns.Retry.MaxRetries";

    /// <summary>Cluster metadata: retries in flight allowed as a percentage of the cluster's active requests. Defaults to 20.</summary>
    public const string RetryBudgetPercent = "Patterns.Retry.BudgetPercent";

    /// <summary>Cluster metadata: retries in flight always allowed, whatever the budget. Defaults to 3.</summary>
    public const string RetryMinConcurrency = "Patterns.Retry.MinConcurrency";

    /// <summary>Cluster metadata: the largest request body buffered so that a request with a body can be retried. Defaults to 65536 bytes; larger bodies are sent once.</summary>
    public const string RetryMaxBufferedBodyBytes = "Patterns.Retry.MaxBufferedBodyBytes";

    /// <summary>Cluster metadata: after this delay without a response, a request without a body is also sent to another destination and the first good answer wins. Off when absent.</summary>
    public const string HedgingDelay = "Patterns.Hedging.Delay";

    /// <summary>Cluster metadata: hedged attempts besides the first. Defaults to 1.</summary>
    public const string HedgingMaxHedges = "Patterns.Hedging.MaxHedges";

    /// <summary>Cluster metadata: the failure ratio (0 to 1) that opens a destination's circuit. Enables the per-destination circuit breaker.</summary>
    public const string CircuitBreakerFailureRatio = "Patterns.CircuitBreaker.FailureRatio";

    /// <summary>Cluster metadata: attempts within the sampling duration before the breaker judges. Defaults to 10.</summary>
    public const string CircuitBreakerMinimumThroughput = "Patterns.CircuitBreaker.MinimumThroughput";

    /// <summary>Cluster metadata: the breaker's sampling window. Defaults to 30 seconds.</summary>
    public const string CircuitBreakerSamplingDuration = "Patterns.CircuitBreaker.SamplingDuration";

    /// <summary>Cluster metadata: how long an open circuit stays open before one trial request. Defaults to 5 seconds.</summary>
    public const string CircuitBreakerBreakDuration = "Patterns.CircuitBreaker.BreakDuration";
}

/// <summary>Names of the YARP policies this package adds.</summary>
public static class GatewayPolicies
{
    /// <summary>The load-balancing policy for weighted destinations and sticky splits (<c>LoadBalancingPolicy</c> of a cluster).</summary>
    public const string Weighted = "Weighted";

    /// <summary>The passive health policy that ejects outliers on 5xx, timeouts and transport errors (<c>HealthCheck.Passive.Policy</c> of a cluster).</summary>
    public const string OutlierDetection = "OutlierDetection";
}
