using System.Collections.Frozen;
using System.Globalization;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Patterns.Gateway.Configuration;
using Patterns.Gateway.Telemetry;
using Patterns.Resilience;
using Polly;
using Polly.CircuitBreaker;
using Polly.Retry;

namespace Patterns.Gateway.Resilience;

/// <summary>A policy defined in code with <see cref="GatewayBuilder.AddResiliencePolicy"/>.</summary>
internal sealed record ResiliencePolicyConfiguration(string Name, Action<GatewayResiliencePolicy> Configure);

/// <summary>
/// The named resilience policies: from the <c>ResiliencePolicies</c> section of each gateway configuration, then from code.
/// A configuration change builds a whole new set that replaces the old one in one write, so a request sees either the old
/// policies or the new ones; a set with a problem is logged and the last good one stays.
/// </summary>
/// <remarks>
/// The policies and YARP's routes reload separately, in either order. A policy that the new set drops while a route YARP
/// still serves names it is carried into the new set, so that route keeps its resilience and a change that renames a policy
/// in its routes and in its definition at once goes through; once YARP has applied its configuration (<see cref="PolicyPruner"/>),
/// a carried policy no route names any more leaves, and one a route still names stays and is logged.
/// </remarks>
internal sealed class ResiliencePolicyRegistry(
    IEnumerable<GatewaySection> sections, IEnumerable<ResiliencePolicyConfiguration> code, ILogger<ResiliencePolicyRegistry> logger, IServiceProvider? services = null)
{
    public const string SectionName = "ResiliencePolicies";

    private readonly IConfiguration[] _sections = [.. sections.Select(s => s.Section.GetSection(SectionName))];
    private readonly ResiliencePolicyConfiguration[] _code = [.. code];
    private readonly Lock _gate = new();
    private readonly ConditionalWeakTable<Yarp.ReverseProxy.Configuration.RouteConfig, NamedResiliencePolicy> _pins = new();
    private ResiliencePolicySet? _current;
    private IChangeToken[] _tokens = [];

    /// <summary>Gets the current set, first rebuilding it when the configuration changed since it was built.</summary>
    /// <exception cref="InvalidOperationException">The first set has a problem (the host must not start).</exception>
    public ResiliencePolicySet Current
    {
        get
        {
            // Tokens first, then the set: the writer publishes the set before its tokens, so a reader that sees a set's tokens
            // also sees that set (or a newer one); reading the set first could pair an old set with the new, unchanged tokens.
            var tokens = Volatile.Read(ref _tokens);
            var current = Volatile.Read(ref _current);
            if (current is not null && !Changed(tokens))
            {
                return current;
            }

            lock (_gate)
            {
                current = _current;
                if (current is not null && !Changed(_tokens))
                {
                    return current;
                }

                // The tokens are taken before reading (a change while building is seen next time) but published only after
                // the new set: a reader that sees fresh tokens must also see the set built from them, or it would take the
                // old set for current (YARP validating a reloaded route on one thread while a request rebuilds on another).
                tokens = [.. _sections.Select(s => s.GetReloadToken())];
                var errors = new List<string>();
                var built = Build(errors, current);
                if (errors.Count == 0 && current is not null)
                {
                    built = CarryLiveRoutePolicies(built, current);
                }

                if (errors.Count == 0)
                {
                    Volatile.Write(ref _current, built);
                    Volatile.Write(ref _tokens, tokens);
                    return built;
                }

                Volatile.Write(ref _tokens, tokens);

                var message = string.Join(" ", errors);
                if (current is null)
                {
                    throw new InvalidOperationException(message);
                }

                GatewayLog.ConfigRoutesRejected(logger, "resilience policies", message);
                return current;
            }
        }
    }

    /// <summary>
    /// Pins the policy a route named when YARP loaded it: a request matched by that route keeps its policy even when a reload
    /// renamed or removed it and <see cref="Prune"/> dropped it before the request reached the proxy.
    /// </summary>
    public void Pin(Yarp.ReverseProxy.Configuration.RouteConfig route, NamedResiliencePolicy policy) => _pins.AddOrUpdate(route, policy);

    /// <summary>The policy pinned to a route's configuration when YARP loaded it, if any.</summary>
    public NamedResiliencePolicy? Pinned(Yarp.ReverseProxy.Configuration.RouteConfig route) => _pins.TryGetValue(route, out var policy) ? policy : null;

    private static bool Changed(IChangeToken[] tokens)
    {
        foreach (var token in tokens)
        {
            if (token.HasChanged)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The routes YARP serves and the policy each names; empty before YARP has started.</summary>
    private List<(string Route, string Policy)> LiveRoutePolicies()
    {
        var live = new List<(string, string)>();

        // Resolved late: YARP's state depends on the config filter, which depends on this registry.
        if (services?.GetService(typeof(Yarp.ReverseProxy.IProxyStateLookup)) is Yarp.ReverseProxy.IProxyStateLookup lookup)
        {
            foreach (var route in lookup.GetRoutes())
            {
                if (route.Config.Metadata is { Count: > 0 } metadata && ClusterPolicy.TryGetRoutePolicy(metadata, out var name))
                {
                    live.Add((route.Config.RouteId, name));
                }
            }
        }

        return live;
    }

    /// <summary>True when the route YARP serves under <paramref name="routeId"/> names the policy <paramref name="policy"/>.</summary>
    public bool LiveRouteNames(string routeId, string policy) =>
        LiveRoutePolicies().Exists(l => string.Equals(l.Route, routeId, StringComparison.OrdinalIgnoreCase) && string.Equals(l.Policy, policy, StringComparison.OrdinalIgnoreCase));

    /// <summary>A new set may not take away the policy of a route YARP still serves: that policy is carried into it, until <see cref="Prune"/>.</summary>
    private ResiliencePolicySet CarryLiveRoutePolicies(ResiliencePolicySet built, ResiliencePolicySet current)
    {
        Dictionary<string, NamedResiliencePolicy>? policies = null;
        foreach (var (_, name) in LiveRoutePolicies())
        {
            if (built.Find(name) is null && current.Find(name) is { } old)
            {
                policies ??= new Dictionary<string, NamedResiliencePolicy>(built.Policies, StringComparer.OrdinalIgnoreCase);
                policies[name] = old;
            }
        }

        return policies is null
            ? built
            : new ResiliencePolicySet(policies.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase), [.. policies.Keys.Where(n => built.Find(n) is null)]);
    }

    /// <summary>
    /// After YARP applied a configuration: the carried policies that no served route names leave the set; one that a route
    /// still names stays (the route keeps its resilience) and the problem is logged, naming the route and the policy.
    /// </summary>
    public void Prune()
    {
        lock (_gate)
        {
            if (_current is not { Carried.Count: > 0 } current)
            {
                return;
            }

            var keep = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
            var errors = new List<string>();
            foreach (var (route, name) in LiveRoutePolicies())
            {
                if (current.Carried.Contains(name, StringComparer.OrdinalIgnoreCase))
                {
                    keep.Add(name);
                    errors.Add($"Route '{route}' names resilience policy '{name}', which the new policies no longer define; the route keeps it until you remove or change the route.");
                }
            }

            var remaining = current.Policies.Where(p => !current.Carried.Contains(p.Key, StringComparer.OrdinalIgnoreCase) || keep.Contains(p.Key));
            Volatile.Write(ref _current, new ResiliencePolicySet(remaining.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase), [.. keep]));
            if (errors.Count > 0)
            {
                GatewayLog.CarriedPoliciesKept(logger, string.Join(" ", errors));
            }
        }
    }

    private ResiliencePolicySet Build(List<string> errors, ResiliencePolicySet? previous)
    {
        var policies = new Dictionary<string, GatewayResiliencePolicy>(StringComparer.OrdinalIgnoreCase);
        foreach (var section in _sections)
        {
            foreach (var child in section.GetChildren())
            {
                Bind(child, policies.TryGetValue(child.Key, out var existing) ? existing : policies[child.Key] = new GatewayResiliencePolicy(), errors);
            }
        }

        foreach (var configuration in _code)
        {
            if (!policies.TryGetValue(configuration.Name, out var policy))
            {
                policies[configuration.Name] = policy = new GatewayResiliencePolicy();
            }

            configuration.Configure(policy);
        }

        var named = new Dictionary<string, NamedResiliencePolicy>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, policy) in policies)
        {
            var before = errors.Count;
            Validate(name, policy, errors);
            if (errors.Count == before)
            {
                // An unchanged policy keeps its object, so its concurrency limit and its breakers keep their state.
                named[name] = previous?.Find(name) is { } old && string.Equals(old.Name, name, StringComparison.Ordinal) && PolicyComparer.Same(old.Options, policy)
                    ? old
                    : new NamedResiliencePolicy(name, policy);
            }
        }

        return new ResiliencePolicySet(named.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase));
    }

    private static readonly string[] PolicyFields =
        ["Timeout", "AttemptTimeout", "Retry", "CircuitBreaker", "MaxConcurrentCalls", "MaxQueuedCalls", "RetryBudgetPercent", "RetryMinConcurrency", "MaxBufferedBodyBytes", "Hedging"];

    private static readonly string[] RetryFields = ["MaxRetryAttempts", "Delay", "BackoffType", "UseJitter", "MaxDelay"];

    private static readonly string[] BreakerFields = ["FailureRatio", "MinimumThroughput", "SamplingDuration", "BreakDuration"];

    private static readonly string[] HedgingFields = ["MaxHedgedAttempts", "Delay", "Methods"];

    /// <summary>Reads one policy's section; every unknown field or malformed value adds an error naming the policy and the field.</summary>
    private static void Bind(IConfigurationSection section, GatewayResiliencePolicy policy, List<string> errors)
    {
        var reader = new FieldReader(section.Key, section.Path, errors);
        foreach (var field in section.GetChildren())
        {
            switch (Known(field.Key, PolicyFields))
            {
                case "Timeout": policy.Timeout = reader.Duration(field); break;
                case "AttemptTimeout": policy.AttemptTimeout = reader.Duration(field); break;
                case "MaxConcurrentCalls": policy.MaxConcurrentCalls = reader.Int(field); break;
                case "MaxQueuedCalls": policy.MaxQueuedCalls = reader.Int(field) ?? policy.MaxQueuedCalls; break;
                case "RetryBudgetPercent": policy.RetryBudgetPercent = reader.Double(field) ?? policy.RetryBudgetPercent; break;
                case "RetryMinConcurrency": policy.RetryMinConcurrency = reader.Int(field) ?? policy.RetryMinConcurrency; break;
                case "MaxBufferedBodyBytes": policy.MaxBufferedBodyBytes = reader.Int(field) ?? policy.MaxBufferedBodyBytes; break;
                case "Retry":
                    var retry = policy.Retry ??= new RetryStrategyOptions();
                    foreach (var r in field.GetChildren())
                    {
                        switch (Known(r.Key, RetryFields))
                        {
                            case "MaxRetryAttempts": retry.MaxRetryAttempts = reader.Int(r) ?? retry.MaxRetryAttempts; break;
                            case "Delay": retry.Delay = reader.Duration(r, allowZero: true) ?? retry.Delay; break;
                            case "BackoffType": retry.BackoffType = reader.Enum(r, retry.BackoffType); break;
                            case "UseJitter": retry.UseJitter = reader.Bool(r) ?? retry.UseJitter; break;
                            case "MaxDelay": retry.MaxDelay = reader.Duration(r); break;
                            default: reader.Unknown(r, RetryFields); break;
                        }
                    }

                    break;
                case "CircuitBreaker":
                    var breaker = policy.CircuitBreaker ??= new CircuitBreakerStrategyOptions();
                    foreach (var b in field.GetChildren())
                    {
                        switch (Known(b.Key, BreakerFields))
                        {
                            case "FailureRatio": breaker.FailureRatio = reader.Double(b) ?? breaker.FailureRatio; break;
                            case "MinimumThroughput": breaker.MinimumThroughput = reader.Int(b) ?? breaker.MinimumThroughput; break;
                            case "SamplingDuration": breaker.SamplingDuration = reader.Duration(b) ?? breaker.SamplingDuration; break;
                            case "BreakDuration": breaker.BreakDuration = reader.Duration(b) ?? breaker.BreakDuration; break;
                            default: reader.Unknown(b, BreakerFields); break;
                        }
                    }

                    break;
                case "Hedging":
                    var hedging = policy.Hedging ??= new GatewayHedgingOptions();
                    foreach (var h in field.GetChildren())
                    {
                        switch (Known(h.Key, HedgingFields))
                        {
                            case "MaxHedgedAttempts": hedging.MaxHedgedAttempts = reader.Int(h) ?? hedging.MaxHedgedAttempts; break;
                            case "Delay": hedging.Delay = reader.Duration(h, allowZero: true) ?? hedging.Delay; break;
                            case "Methods": hedging.Methods = reader.List(h); break;
                            default: reader.Unknown(h, HedgingFields); break;
                        }
                    }

                    break;
                default: reader.Unknown(field, PolicyFields); break;
            }
        }
    }

    private static string? Known(string key, string[] fields) => fields.FirstOrDefault(f => string.Equals(f, key, StringComparison.OrdinalIgnoreCase));

    /// <summary>Checks the values a policy ended with, from configuration and code alike.</summary>
    private static void Validate(string name, GatewayResiliencePolicy policy, List<string> errors)
    {
        void Check(bool ok, string field, object? value, string rule)
        {
            if (!ok)
            {
                errors.Add($"Resilience policy '{name}': {field} is {Format(value)}; it must be {rule}.");
            }
        }

        // Polly's own ranges for timeouts and breaker windows, checked here so the message names the policy.
        var min = TimeSpan.FromMilliseconds(10);
        var day = TimeSpan.FromDays(1);
        if (policy.Timeout is { } timeout)
        {
            Check(timeout >= min && timeout <= day, "Timeout", timeout, "from 00:00:00.010 to 1.00:00:00");
        }

        if (policy.AttemptTimeout is { } attempt)
        {
            Check(attempt >= min && attempt <= day, "AttemptTimeout", attempt, "from 00:00:00.010 to 1.00:00:00");
        }

        if (policy.Retry is { } retry)
        {
            Check(retry.MaxRetryAttempts is >= 0 and <= 10, "Retry.MaxRetryAttempts", retry.MaxRetryAttempts, "a whole number from 0 to 10");
            Check(retry.Delay >= TimeSpan.Zero && retry.Delay <= day, "Retry.Delay", retry.Delay, "from 00:00:00 to 1.00:00:00");
            Check(retry.MaxDelay is null || retry.MaxDelay > TimeSpan.Zero, "Retry.MaxDelay", retry.MaxDelay, "a positive duration");
        }

        if (policy.CircuitBreaker is { } breaker)
        {
            Check(breaker.FailureRatio is > 0 and <= 1, "CircuitBreaker.FailureRatio", breaker.FailureRatio, "a number above 0 and at most 1");
            Check(breaker.MinimumThroughput >= 2, "CircuitBreaker.MinimumThroughput", breaker.MinimumThroughput, "a whole number of at least 2");
            Check(breaker.SamplingDuration >= TimeSpan.FromMilliseconds(500) && breaker.SamplingDuration <= day, "CircuitBreaker.SamplingDuration", breaker.SamplingDuration, "from 00:00:00.500 to 1.00:00:00");
            Check(breaker.BreakDuration >= TimeSpan.FromMilliseconds(500) && breaker.BreakDuration <= day, "CircuitBreaker.BreakDuration", breaker.BreakDuration, "from 00:00:00.500 to 1.00:00:00");
        }

        if (policy.Hedging is { } hedging)
        {
            Check(hedging.MaxHedgedAttempts is >= 1 and <= 10, "Hedging.MaxHedgedAttempts", hedging.MaxHedgedAttempts, "a whole number from 1 to 10");
            Check(hedging.Delay >= TimeSpan.Zero && hedging.Delay <= day, "Hedging.Delay", hedging.Delay, "from 00:00:00 to 1.00:00:00");
            Check(hedging.Methods is { Count: > 0 }, "Hedging.Methods", hedging.Methods is null ? null : "[]", "a list of at least one method");
            foreach (var method in hedging.Methods ?? [])
            {
                if (string.IsNullOrWhiteSpace(method) || !ResilienceHandler.IsIdempotent(method))
                {
                    errors.Add($"Resilience policy '{name}': Hedging.Methods names {Format(method)}, which is not an idempotent method; hedging sends a request more than once, so only GET, HEAD, OPTIONS, TRACE, PUT and DELETE may be hedged.");
                }
            }

            if (policy.Retry is not null)
            {
                errors.Add($"Resilience policy '{name}': Retry and Hedging exclude each other; choose retries or hedging.");
            }
        }

        if (policy.Timeout is { } whole && policy.Hedging is { } hedged && hedged.Delay >= whole)
        {
            errors.Add($"Resilience policy '{name}': Hedging.Delay ({Format(hedged.Delay)}) is not shorter than Timeout ({Format(whole)}); the request times out before a hedge starts.");
        }

        if (policy.Timeout is { } total && policy.AttemptTimeout is { } one && one >= total)
        {
            errors.Add($"Resilience policy '{name}': AttemptTimeout ({Format(one)}) is not shorter than Timeout ({Format(total)}); an attempt's timeout must be shorter than the whole request's, or it never applies.");
        }

        if (policy.MaxConcurrentCalls is null && policy.MaxQueuedCalls > 0)
        {
            errors.Add($"Resilience policy '{name}': MaxQueuedCalls is '{policy.MaxQueuedCalls.ToString(CultureInfo.InvariantCulture)}' but MaxConcurrentCalls is not set; calls queue only behind a concurrency limit, so set MaxConcurrentCalls too.");
        }

        Check(policy.MaxConcurrentCalls is null or >= 1, "MaxConcurrentCalls", policy.MaxConcurrentCalls, "a whole number of at least 1");
        Check(policy.MaxQueuedCalls >= 0, "MaxQueuedCalls", policy.MaxQueuedCalls, "a whole number of at least 0");
        Check(policy.RetryBudgetPercent is >= 0 and <= 100, "RetryBudgetPercent", policy.RetryBudgetPercent, "a number from 0 to 100");
        Check(policy.RetryMinConcurrency >= 0, "RetryMinConcurrency", policy.RetryMinConcurrency, "a whole number of at least 0");
        Check(policy.MaxBufferedBodyBytes >= 0, "MaxBufferedBodyBytes", policy.MaxBufferedBodyBytes, "a whole number of at least 0");
    }

    private static string Format(object? value) => value switch
    {
        null => "empty",
        IFormattable f => "'" + f.ToString(null, CultureInfo.InvariantCulture) + "'",
        _ => "'" + value + "'",
    };

    private readonly struct FieldReader(string policy, string policyPath, List<string> errors)
    {
        private string Path(IConfigurationSection field) => field.Path[(policyPath.Length + 1)..].Replace(':', '.');

        public void Unknown(IConfigurationSection field, string[] known) =>
            errors.Add($"Resilience policy '{policy}': '{Path(field)}' is not a policy field; the fields here are {string.Join(", ", known)}.");

        private void Bad(IConfigurationSection field, string expected) =>
            errors.Add($"Resilience policy '{policy}': {Path(field)} is '{field.Value}'; it must be {expected}.");

        public int? Int(IConfigurationSection field)
        {
            if (int.TryParse(field.Value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value))
            {
                return value;
            }

            Bad(field, "a whole number");
            return null;
        }

        public double? Double(IConfigurationSection field)
        {
            if (double.TryParse(field.Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
            {
                return value;
            }

            Bad(field, "a number");
            return null;
        }

        public bool? Bool(IConfigurationSection field)
        {
            if (bool.TryParse(field.Value, out var value))
            {
                return value;
            }

            Bad(field, "true or false");
            return null;
        }

        public TimeSpan? Duration(IConfigurationSection field, bool allowZero = false)
        {
            if (TimeSpan.TryParse(field.Value, CultureInfo.InvariantCulture, out var value) && (value > TimeSpan.Zero || (allowZero && value == TimeSpan.Zero)))
            {
                return value;
            }

            Bad(field, allowZero ? "a duration such as 00:00:00.200" : "a positive duration such as 00:00:05");
            return null;
        }

        /// <summary>
        /// A list given as an array (<c>Methods:0</c>, <c>Methods:1</c>) or as one comma-separated value, its items trimmed. Given
        /// both ways (a string in one configuration source, an array in another, which configuration merges into one section),
        /// it is an error: neither form silently wins.
        /// </summary>
        public List<string> List(IConfigurationSection field)
        {
            var items = field.GetChildren().Select(c => (c.Value ?? string.Empty).Trim()).ToList();
            if (field.Value is not { } text)
            {
                return items;
            }

            if (items.Count > 0)
            {
                errors.Add($"Resilience policy '{policy}': {Path(field)} is given both as a string ('{text}') and as a list ({string.Join(", ", items)}), likely by two configuration sources; give it one way.");
            }

            return [.. text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
        }

        public DelayBackoffType Enum(IConfigurationSection field, DelayBackoffType fallback)
        {
            if (System.Enum.TryParse<DelayBackoffType>(field.Value, ignoreCase: true, out var value) && System.Enum.IsDefined(value))
            {
                return value;
            }

            Bad(field, "Constant, Linear or Exponential");
            return fallback;
        }
    }
}

/// <summary>One consistent set of named policies.</summary>
internal sealed class ResiliencePolicySet(FrozenDictionary<string, NamedResiliencePolicy> policies, IReadOnlyList<string>? carried = null)
{
    public IEnumerable<string> Names => policies.Keys;

    public FrozenDictionary<string, NamedResiliencePolicy> Policies => policies;

    /// <summary>Gets the policies the configuration no longer defines, kept because a route YARP serves named them.</summary>
    public IReadOnlyList<string> Carried => carried ?? [];

    public NamedResiliencePolicy? Find(string name) => policies.GetValueOrDefault(name);
}

/// <summary>One named policy of a set: its options and its concurrency limit, shared by every route that names it.</summary>
internal sealed class NamedResiliencePolicy(string name, GatewayResiliencePolicy options)
{
    private readonly ConditionalWeakTable<ClusterPolicy, ClusterPolicy> _merged = new();
    private readonly ConcurrencyLimitStrategy? _limiter = options.MaxConcurrentCalls is { } permits ? new ConcurrencyLimitStrategy(permits, options.MaxQueuedCalls) : null;

    public string Name => name;

    public GatewayResiliencePolicy Options => options;

    /// <summary>The cluster's policy with this policy's resilience settings, made once per cluster configuration.</summary>
    public ClusterPolicy Over(ClusterPolicy cluster) =>
        _merged.TryGetValue(cluster, out var merged) ? merged : _merged.GetValue(cluster, c => c.With(name, options, _limiter));
}

/// <summary>Compares the values the gateway uses of two policies, to tell whether a reload changed a policy.</summary>
internal static class PolicyComparer
{
    public static bool Same(GatewayResiliencePolicy a, GatewayResiliencePolicy b) =>
        a.Timeout == b.Timeout && a.AttemptTimeout == b.AttemptTimeout
        && a.MaxConcurrentCalls == b.MaxConcurrentCalls && a.MaxQueuedCalls == b.MaxQueuedCalls
        && a.RetryBudgetPercent.Equals(b.RetryBudgetPercent) && a.RetryMinConcurrency == b.RetryMinConcurrency
        && a.MaxBufferedBodyBytes == b.MaxBufferedBodyBytes
        && ReferenceEquals(a.ConfigurePipeline, b.ConfigurePipeline)
        && Same(a.Retry, b.Retry) && Same(a.CircuitBreaker, b.CircuitBreaker) && Same(a.Hedging, b.Hedging);

    private static bool Same(GatewayHedgingOptions? a, GatewayHedgingOptions? b) =>
        (a is null && b is null)
        || (a is not null && b is not null && a.MaxHedgedAttempts == b.MaxHedgedAttempts && a.Delay == b.Delay
            && a.Methods.SequenceEqual(b.Methods, StringComparer.OrdinalIgnoreCase));

    private static bool Same(RetryStrategyOptions? a, RetryStrategyOptions? b) =>
        (a is null && b is null)
        || (a is not null && b is not null && a.MaxRetryAttempts == b.MaxRetryAttempts && a.Delay == b.Delay && a.BackoffType == b.BackoffType
            && a.UseJitter == b.UseJitter && a.MaxDelay == b.MaxDelay);

    private static bool Same(CircuitBreakerStrategyOptions? a, CircuitBreakerStrategyOptions? b) =>
        (a is null && b is null)
        || (a is not null && b is not null && a.FailureRatio.Equals(b.FailureRatio) && a.MinimumThroughput == b.MinimumThroughput
            && a.SamplingDuration == b.SamplingDuration && a.BreakDuration == b.BreakDuration);
}

/// <summary>Prunes the carried policies once YARP has applied (or failed to apply) a configuration.</summary>
internal sealed class PolicyPruner(ResiliencePolicyRegistry registry) : Yarp.ReverseProxy.Configuration.IConfigChangeListener
{
    public void ConfigurationLoadingFailed(Yarp.ReverseProxy.Configuration.IProxyConfigProvider configProvider, Exception exception)
    {
    }

    public void ConfigurationLoaded(IReadOnlyList<Yarp.ReverseProxy.Configuration.IProxyConfig> proxyConfigs)
    {
    }

    public void ConfigurationApplyingFailed(IReadOnlyList<Yarp.ReverseProxy.Configuration.IProxyConfig> proxyConfigs, Exception exception) => registry.Prune();

    public void ConfigurationApplied(IReadOnlyList<Yarp.ReverseProxy.Configuration.IProxyConfig> proxyConfigs) => registry.Prune();
}
