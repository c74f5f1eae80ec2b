using System.Globalization;
using System.Runtime.CompilerServices;
using Yarp.ReverseProxy.Configuration;

namespace Patterns.Gateway.Configuration;

/// <summary>The parsed <see cref="GatewayMetadata"/> of one cluster configuration, cached per configuration instance.</summary>
internal sealed class ClusterPolicy
{
    private static readonly ConditionalWeakTable<ClusterConfig, ClusterPolicy> Cache = new();

    public static readonly ClusterPolicy Default = new();

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

    public BreakerSettings? Breaker { get; private init; }

    /// <summary>True when the resilience handler has anything to do for this cluster.</summary>
    public bool HasResilience => Timeout is not null || AttemptTimeout is not null || MaxRetries > 0 || HedgingDelay is not null || Breaker is not null;

    public static ClusterPolicy For(ClusterConfig config) =>
        Cache.GetValue(config, static c =>
        {
            var errors = new List<string>();
            var policy = Parse(c, errors);
            return errors.Count == 0 ? policy : Default;
        });

    /// <summary>Parses a cluster's metadata, adding one message per problem to <paramref name="errors"/>.</summary>
    public static ClusterPolicy Parse(ClusterConfig config, List<string> errors)
    {
        var metadata = config.Metadata;
        foreach (var destination in config.Destinations ?? new Dictionary<string, DestinationConfig>())
        {
            if (destination.Value.Metadata is { } dm && dm.TryGetValue(GatewayMetadata.Weight, out var w)
                && (!int.TryParse(w, NumberStyles.Integer, CultureInfo.InvariantCulture, out var weight) || weight < 0))
            {
                errors.Add($"Cluster '{config.ClusterId}' destination '{destination.Key}': Metadata '{GatewayMetadata.Weight}' is '{w}'; it must be a whole number of at least 0.");
            }
        }

        if (metadata is null || metadata.Count == 0)
        {
            return Default;
        }

        var reader = new Reader(config.ClusterId, metadata, errors);
        RoutingKeySource? key = null;
        if (metadata.TryGetValue(GatewayMetadata.RoutingKey, out var keyText) && !RoutingKeySource.TryParse(keyText, out key))
        {
            errors.Add($"Cluster '{config.ClusterId}': Metadata '{GatewayMetadata.RoutingKey}' is '{keyText}'; expected 'header:NAME', 'cookie:NAME' or 'claim:TYPE'.");
        }

        OutlierSettings? outlier = null;
        var consecutive = reader.Int(GatewayMetadata.OutlierConsecutiveFailures, 1, int.MaxValue);
        var rate = reader.Double(GatewayMetadata.OutlierFailureRate, 0, 1);
        if (consecutive is not null || rate is not null)
        {
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
