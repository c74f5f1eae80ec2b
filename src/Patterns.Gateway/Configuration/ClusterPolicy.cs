using System.Collections.Frozen;
using System.Globalization;
using System.Runtime.CompilerServices;
using Patterns.Gateway.Resilience;
using Patterns.Resilience;
using Polly;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Configuration;

/// <summary>The parsed <see cref="GatewayMetadata"/> of one cluster configuration, cached per configuration instance.</summary>
internal sealed class ClusterPolicy
{
    private static readonly ConditionalWeakTable<ClusterConfig, Parsed> Cache = new();

    // The last configuration this thread looked up, and its policy: a request asks for its cluster's policy several times
    // (body buffering, the handoff, the balancer, outlier detection), and a thread mostly serves one cluster at a time, so a
    // reference check answers where a table lookup would. Per thread, so clusters served on other cores do not evict it.
    // After a reload a thread keeps the old configuration alive only until it looks up another one.
    [ThreadStatic]
    private static Parsed? t_last;

    public static readonly ClusterPolicy Default = new();

    /// <summary>Gets the configured <see cref="GatewayMetadata.Weight"/> of each destination that has one, parsed once per configuration.</summary>
    public FrozenDictionary<string, int>? Weights { get; private init; }

    public RoutingKeySource? RoutingKey { get; private init; }

    public OutlierSettings? Outlier { get; private init; }

    public TimeSpan? Timeout { get; private init; }

    public TimeSpan? AttemptTimeout { get; private init; }

    public int MaxRetries { get; private init; }

    public double RetryBudgetPercent { get; private init; } = 20;

    public int RetryMinConcurrency { get; private init; } = 3;

    public long MaxBufferedBodyBytes { get; private init; } = 64 * 1024;

    public TimeSpan? HedgingDelay { get; private init; }

    public int MaxHedges { get; private init; } = 1;

    /// <summary>Gets the methods hedged (idempotent ones only); a request with a body is never hedged.</summary>
    public IReadOnlyList<string> HedgingMethods { get; private init; } = GatewayHedgingOptions.DefaultMethods;

    /// <summary>True when a request of <paramref name="method"/> without a body is hedged under this policy.</summary>
    public bool Hedges(string method)
    {
        if (HedgingDelay is null)
        {
            return false;
        }

        foreach (var hedged in HedgingMethods)
        {
            if (string.Equals(hedged, method, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }

    public BreakerSettings? Breaker { get; private init; }

    /// <summary>Gets the named policy these resilience settings come from, or <see langword="null"/> for the cluster's metadata.</summary>
    public string? PolicyName { get; private init; }

    /// <summary>Gets the delay before the first retry (a named policy's backoff); zero retries at once.</summary>
    public TimeSpan RetryDelay { get; private init; }

    public DelayBackoffType RetryBackoff { get; private init; }

    public bool RetryJitter { get; private init; }

    public TimeSpan? RetryMaxDelay { get; private init; }

    /// <summary>Gets the concurrency limit shared by every route naming the policy.</summary>
    public ConcurrencyLimitStrategy? Limiter { get; private init; }

    /// <summary>Gets the strategies a named policy adds to each attempt.</summary>
    public Action<ResiliencePipelineBuilder>? ConfigureAttempt { get; private init; }

    /// <summary>Gets or sets the resilience handler's pipelines for this policy (built on first use).</summary>
    internal object? Pipelines { get; set; }

    /// <summary>Gets each destination's breaker and attempt timeout under this policy; a new policy (a reload) starts them afresh.</summary>
    internal ConditionalWeakTable<DestinationState, object> AttemptPipelines { get; } = new();

    /// <summary>True when the resilience handler has anything to do for this cluster.</summary>
    public bool HasResilience =>
        Timeout is not null || AttemptTimeout is not null || MaxRetries > 0 || HedgingDelay is not null || Breaker is not null || Limiter is not null || ConfigureAttempt is not null;

    /// <summary>True when every attempt runs through a per-destination pipeline (breaker, attempt timeout, added strategies).</summary>
    public bool HasAttemptPipeline => Breaker is not null || AttemptTimeout is not null || ConfigureAttempt is not null;

    /// <summary>True when only retries at once apply (or nothing, for a request that is not hedged), so the first attempt can go out without Polly.</summary>
    public bool RetriesOnly =>
        Timeout is null && !HasAttemptPipeline && Limiter is null && RetryDelay == TimeSpan.Zero;

    /// <summary>
    /// The policy of one proxied request: the named policy of its route (<see cref="GatewayMetadata.ResiliencePolicy"/>) over its
    /// cluster's, or the cluster's alone.
    /// </summary>
    /// <param name="feature">The request's proxy feature.</param>
    /// <param name="registry">The named policies, or <see langword="null"/> to resolve them from <paramref name="context"/> only when the route names one.</param>
    /// <param name="context">The request, which carries the policy set its first read chose, and whose services hold the registry (read only when the route names a policy: the first read of a request's services creates its scope).</param>
    public static ClusterPolicy Effective(IReverseProxyFeature feature, ResiliencePolicyRegistry? registry, Microsoft.AspNetCore.Http.HttpContext? context = null)
    {
        var policy = For(feature.Cluster!.Config);
        if (feature.Route.Config.Metadata is not { Count: > 0 } metadata || !TryGetRoutePolicy(metadata, out var name))
        {
            return policy;
        }

        // One request sees one policy set: the first read keeps it on the request for the later ones (the body buffering,
        // the context handoff and the resilience handler), so a reload between them cannot mix two sets.
        var set = context?.Features.Get<ResiliencePolicySet>();
        if (set is null)
        {
            registry ??= context?.RequestServices.GetService(typeof(ResiliencePolicyRegistry)) as ResiliencePolicyRegistry;
            set = registry?.Current;
            if (set is not null)
            {
                context?.Features.Set(set);
            }
        }

        if (set?.Find(name) is { } named)
        {
            return named.Over(policy);
        }

        // The route's policy left the set (a reload renamed or removed it and the prune ran) after this request was matched by
        // the route: the request keeps the policy its route was loaded with.
        registry ??= context?.RequestServices.GetService(typeof(ResiliencePolicyRegistry)) as ResiliencePolicyRegistry;
        return registry?.Pinned(feature.Route.Config) is { } pinned ? pinned.Over(policy) : policy;
    }

    /// <summary>The route's <see cref="GatewayMetadata.ResiliencePolicy"/>, its key compared without case as the cluster keys are.</summary>
    public static bool TryGetRoutePolicy(IReadOnlyDictionary<string, string> metadata, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out string? name)
    {
        if (metadata.TryGetValue(GatewayMetadata.ResiliencePolicy, out name))
        {
            return true;
        }

        foreach (var (key, value) in metadata)
        {
            if (string.Equals(key, GatewayMetadata.ResiliencePolicy, StringComparison.OrdinalIgnoreCase))
            {
                name = value;
                return true;
            }
        }

        name = null;
        return false;
    }

    /// <summary>This cluster policy with its resilience settings replaced by a named policy's.</summary>
    public ClusterPolicy With(string name, GatewayResiliencePolicy named, ConcurrencyLimitStrategy? limiter)
    {
        var retry = named.Retry;
        var breaker = named.CircuitBreaker;
        var hedging = named.Hedging;
        return new ClusterPolicy
        {
            Weights = Weights,
            RoutingKey = RoutingKey,
            Outlier = Outlier,
            PolicyName = name,
            Timeout = named.Timeout,
            AttemptTimeout = named.AttemptTimeout,
            MaxRetries = retry?.MaxRetryAttempts ?? 0,
            RetryDelay = retry?.Delay ?? TimeSpan.Zero,
            RetryBackoff = retry?.BackoffType ?? DelayBackoffType.Constant,
            RetryJitter = retry?.UseJitter ?? false,
            RetryMaxDelay = retry?.MaxDelay,
            RetryBudgetPercent = named.RetryBudgetPercent,
            RetryMinConcurrency = named.RetryMinConcurrency,
            MaxBufferedBodyBytes = named.MaxBufferedBodyBytes,
            HedgingDelay = hedging?.Delay,
            MaxHedges = hedging?.MaxHedgedAttempts ?? 1,
            HedgingMethods = hedging is null ? GatewayHedgingOptions.DefaultMethods : [.. hedging.Methods],
            Breaker = breaker is null ? null : new BreakerSettings
            {
                FailureRatio = breaker.FailureRatio,
                MinimumThroughput = breaker.MinimumThroughput,
                SamplingDuration = breaker.SamplingDuration,
                BreakDuration = breaker.BreakDuration,
            },
            Limiter = limiter,
            ConfigureAttempt = named.ConfigurePipeline,
        };
    }

    public static ClusterPolicy For(ClusterConfig config)
    {
        var last = t_last;
        if (last is not null && ReferenceEquals(last.Config, config))
        {
            return last.Policy;
        }

        if (!Cache.TryGetValue(config, out last))
        {
            last = Cache.GetValue(config, static c =>
            {
                var errors = new List<string>();
                var policy = Parse(c, errors);
                return new Parsed(c, errors.Count == 0 ? policy : Default);
            });
        }

        t_last = last;
        return last.Policy;
    }

    /// <summary>A configuration and its parsed policy (the table's value names its key, which the table allows).</summary>
    private sealed class Parsed(ClusterConfig config, ClusterPolicy policy)
    {
        public ClusterConfig Config { get; } = config;

        public ClusterPolicy Policy { get; } = policy;
    }

    /// <summary>The cluster metadata keys of this package: any other key starting with <c>Patterns.</c> is a mistake.</summary>
    private static readonly string[] ClusterKeys =
    [
        GatewayMetadata.RoutingKey, GatewayMetadata.OutlierConsecutiveFailures, GatewayMetadata.OutlierFailureRate, GatewayMetadata.OutlierMinimumRequests,
        GatewayMetadata.OutlierInterval, GatewayMetadata.OutlierBaseEjectionTime, GatewayMetadata.OutlierMaxEjectionTime, GatewayMetadata.OutlierMaxEjectionPercent,
        GatewayMetadata.Timeout, GatewayMetadata.AttemptTimeout, GatewayMetadata.RetryMaxRetries, GatewayMetadata.RetryBudgetPercent,
        GatewayMetadata.RetryMinConcurrency, GatewayMetadata.RetryMaxBufferedBodyBytes, GatewayMetadata.HedgingDelay, GatewayMetadata.HedgingMaxHedges,
        GatewayMetadata.CircuitBreakerFailureRatio, GatewayMetadata.CircuitBreakerMinimumThroughput, GatewayMetadata.CircuitBreakerSamplingDuration,
        GatewayMetadata.CircuitBreakerBreakDuration,
    ];

    private const string Prefix = "Patterns.";

    /// <summary>Parses a cluster's metadata, adding one message per problem to <paramref name="errors"/>.</summary>
    public static ClusterPolicy Parse(ClusterConfig config, List<string> errors)
    {
        var metadata = config.Metadata;
        var weighted = string.Equals(config.LoadBalancingPolicy, GatewayPolicies.Weighted, StringComparison.OrdinalIgnoreCase);
        var weights = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        foreach (var destination in config.Destinations ?? new Dictionary<string, DestinationConfig>())
        {
            if (destination.Value.Metadata is not { } dm)
            {
                continue;
            }

            foreach (var name in dm.Keys)
            {
                if (name.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase))
                {
                    errors.Add($"Cluster '{config.ClusterId}' destination '{destination.Key}': Metadata '{name}' is not a gateway key; a destination takes only '{GatewayMetadata.Weight}'.");
                }
            }

            if (dm.TryGetValue(GatewayMetadata.Weight, out var w))
            {
                if (!int.TryParse(w, NumberStyles.Integer, CultureInfo.InvariantCulture, out var weight) || weight < 0)
                {
                    errors.Add($"Cluster '{config.ClusterId}' destination '{destination.Key}': Metadata '{GatewayMetadata.Weight}' is '{w}'; it must be a whole number of at least 0.");
                }
                else
                {
                    weights[destination.Key] = weight;
                }
            }
        }

        if (metadata is null || metadata.Count == 0)
        {
            return weights.Count == 0 ? Default : new ClusterPolicy { Weights = weights.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase) };
        }

        foreach (var name in metadata.Keys)
        {
            if (!name.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase) || ClusterKeys.Contains(name, StringComparer.Ordinal))
            {
                continue;
            }

            var near = ClusterKeys.FirstOrDefault(k => string.Equals(k, name, StringComparison.OrdinalIgnoreCase));
            if (near is null)
            {
                errors.Add($"Cluster '{config.ClusterId}': Metadata '{name}' is not a gateway key; the keys are {string.Join(", ", ClusterKeys)}.");
            }
            else if (!metadata.ContainsKey(near))
            {
                // Metadata read from configuration ignores case; a dictionary built in code may not.
                errors.Add($"Cluster '{config.ClusterId}': Metadata '{name}' is not a gateway key; did you mean '{near}'? (this metadata dictionary is case-sensitive)");
            }
        }

        var reader = new Reader(config.ClusterId, metadata, errors);
        RoutingKeySource? key = null;
        if (metadata.TryGetValue(GatewayMetadata.RoutingKey, out var keyText))
        {
            if (!RoutingKeySource.TryParse(keyText, out key))
            {
                errors.Add($"Cluster '{config.ClusterId}': Metadata '{GatewayMetadata.RoutingKey}' is '{keyText}'; expected 'header:NAME', 'cookie:NAME' or 'claim:TYPE'.");
            }
            else if (!weighted)
            {
                errors.Add($"Cluster '{config.ClusterId}': Metadata '{GatewayMetadata.RoutingKey}' applies only with LoadBalancingPolicy '{GatewayPolicies.Weighted}'; the cluster's is '{config.LoadBalancingPolicy ?? "PowerOfTwoChoices (the default)"}'.");
            }
        }

        OutlierSettings? outlier = null;
        var consecutive = reader.Int(GatewayMetadata.OutlierConsecutiveFailures, 1, int.MaxValue);
        var rate = reader.Double(GatewayMetadata.OutlierFailureRate, 0, 1);
        if (consecutive is not null || rate is not null)
        {
            if (config.HealthCheck?.Passive is not { Enabled: true } passive || !string.Equals(passive.Policy, GatewayPolicies.OutlierDetection, StringComparison.OrdinalIgnoreCase))
            {
                errors.Add($"Cluster '{config.ClusterId}': Metadata '{(consecutive is not null ? GatewayMetadata.OutlierConsecutiveFailures : GatewayMetadata.OutlierFailureRate)}' applies only when HealthCheck:Passive is enabled with Policy '{GatewayPolicies.OutlierDetection}'" +
                    $" (the cluster's passive health check is {(config.HealthCheck?.Passive is { Enabled: true } p ? "policy '" + (p.Policy ?? "TransportFailureRate") + "'" : "off")}); without it an ejected destination would still get traffic.");
            }

            outlier = new OutlierSettings
            {
                ConsecutiveFailures = consecutive,
                FailureRate = rate,
                MinimumRequests = reader.Int(GatewayMetadata.OutlierMinimumRequests, 1, int.MaxValue) ?? 10,
                Interval = reader.Duration(GatewayMetadata.OutlierInterval) ?? TimeSpan.FromSeconds(10),
                BaseEjectionTime = reader.Duration(GatewayMetadata.OutlierBaseEjectionTime) ?? TimeSpan.FromSeconds(30),
                MaxEjectionTime = reader.Duration(GatewayMetadata.OutlierMaxEjectionTime) ?? TimeSpan.FromMinutes(5),
                MaxEjectionPercent = reader.Double(GatewayMetadata.OutlierMaxEjectionPercent, 0, 100) ?? 50,
            };
        }

        BreakerSettings? breaker = null;
        var ratio = reader.Double(GatewayMetadata.CircuitBreakerFailureRatio, 0, 1);
        if (ratio is not null)
        {
            breaker = new BreakerSettings
            {
                FailureRatio = ratio.Value,
                MinimumThroughput = reader.Int(GatewayMetadata.CircuitBreakerMinimumThroughput, 2, int.MaxValue) ?? 10,
                SamplingDuration = reader.Duration(GatewayMetadata.CircuitBreakerSamplingDuration) ?? TimeSpan.FromSeconds(30),
                BreakDuration = reader.Duration(GatewayMetadata.CircuitBreakerBreakDuration) ?? TimeSpan.FromSeconds(5),
            };
        }

        var policy = new ClusterPolicy
        {
            Weights = weights.Count == 0 ? null : weights.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase),
            RoutingKey = key,
            Outlier = outlier,
            Timeout = reader.Duration(GatewayMetadata.Timeout),
            AttemptTimeout = reader.Duration(GatewayMetadata.AttemptTimeout),
            MaxRetries = reader.Int(GatewayMetadata.RetryMaxRetries, 0, 10) ?? 0,
            RetryBudgetPercent = reader.Double(GatewayMetadata.RetryBudgetPercent, 0, 100) ?? 20,
            RetryMinConcurrency = reader.Int(GatewayMetadata.RetryMinConcurrency, 0, int.MaxValue) ?? 3,
            MaxBufferedBodyBytes = reader.Int(GatewayMetadata.RetryMaxBufferedBodyBytes, 0, int.MaxValue) ?? 64 * 1024,
            HedgingDelay = reader.Duration(GatewayMetadata.HedgingDelay),
            MaxHedges = reader.Int(GatewayMetadata.HedgingMaxHedges, 1, 10) ?? 1,
            Breaker = breaker,
        };
        if (policy.MaxRetries > 0 && policy.HedgingDelay is not null)
        {
            errors.Add($"Cluster '{config.ClusterId}': '{GatewayMetadata.RetryMaxRetries}' and '{GatewayMetadata.HedgingDelay}' exclude each other; choose retries or hedging.");
        }

        return policy;
    }

    private readonly struct Reader(string cluster, IReadOnlyDictionary<string, string> metadata, List<string> errors)
    {
        public int? Int(string key, int min, int max)
        {
            if (!metadata.TryGetValue(key, out var text))
            {
                return null;
            }

            if (int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) && value >= min && value <= max)
            {
                return value;
            }

            errors.Add($"Cluster '{cluster}': Metadata '{key}' is '{text}'; it must be a whole number from {min} to {max}.");
            return null;
        }

        public double? Double(string key, double min, double max)
        {
            if (!metadata.TryGetValue(key, out var text))
            {
                return null;
            }

            if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && value >= min && value <= max)
            {
                return value;
            }

            errors.Add($"Cluster '{cluster}': Metadata '{key}' is '{text}'; it must be a number from {min} to {max}.");
            return null;
        }

        public TimeSpan? Duration(string key)
        {
            if (!metadata.TryGetValue(key, out var text))
            {
                return null;
            }

            if (TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out var value) && value > TimeSpan.Zero)
            {
                return value;
            }

            errors.Add($"Cluster '{cluster}': Metadata '{key}' is '{text}'; it must be a positive duration such as 00:00:05.");
            return null;
        }
    }
}

internal sealed class OutlierSettings
{
    public int? ConsecutiveFailures { get; init; }

    public double? FailureRate { get; init; }

    public int MinimumRequests { get; init; }

    public TimeSpan Interval { get; init; }

    public TimeSpan BaseEjectionTime { get; init; }

    public TimeSpan MaxEjectionTime { get; init; }

    public double MaxEjectionPercent { get; init; }
}

internal sealed class BreakerSettings
{
    public double FailureRatio { get; init; }

    public int MinimumThroughput { get; init; }

    public TimeSpan SamplingDuration { get; init; }

    public TimeSpan BreakDuration { get; init; }
}
