using System.Net;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Patterns.Gateway.Configuration;
using Patterns.Gateway.Health;
using Patterns.Gateway.LoadBalancing;
using Patterns.Gateway.Telemetry;
using Polly;
using Polly.CircuitBreaker;
using Polly.Hedging;
using Polly.Retry;
using Polly.Timeout;
using Yarp.ReverseProxy;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Resilience;

/// <summary>
/// The outgoing end of one cluster's YARP client: runs each request through the cluster's Polly pipeline (timeout,
/// retry under a budget or hedging, a circuit breaker per destination) and re-picks the destination for every retry
/// or hedge, never the one that just failed. Every attempt's outcome feeds outlier detection.
/// </summary>
internal sealed class ResilienceHandler(
    string clusterId, IProxyStateLookup lookup, WeightedLoadBalancingPolicy balancer, OutlierDetector outliers, TimeProvider timeProvider, ILogger logger)
    : DelegatingHandler
{
    /// <summary>The response header that carries why a failed request was not retried.</summary>
    public const string RetryRefusedHeader = "Patterns-Retry-Refused";

    private readonly ILogger _logger = logger;
    private static readonly ResiliencePropertyKey<Attempts> StateKey = new("Patterns.Gateway.Attempts");
    private Pipelines? _pipelines;
    private readonly ConditionalWeakTable<DestinationState, BreakerSlot> _breakers = new();
    private readonly RetryBudget _budget = new();

    internal RetryBudget Budget => _budget;

    private WeightedLoadBalancingPolicy Balancer => balancer;

    public static bool IsIdempotent(string method) =>
        HttpMethods.IsGet(method) || HttpMethods.IsHead(method) || HttpMethods.IsOptions(method) || HttpMethods.IsTrace(method)
        || HttpMethods.IsPut(method) || HttpMethods.IsDelete(method);

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        // Nothing to retry and nothing to count: the request goes straight through (before Options, whose getter allocates).
        if (!lookup.TryGetCluster(clusterId, out var cluster)
            || ClusterPolicy.For(cluster.Model.Config) is not { } policy || (!policy.HasResilience && policy.Outlier is null)
            || !request.Options.TryGetValue(RequestOptionKeys.HttpContext, out var context)
            || context.Features.Get<IReverseProxyFeature>() is not { ProxiedDestination: { } destination } feature)
        {
            return base.SendAsync(request, cancellationToken);
        }

        context.Features.Set(AttemptsRecorded.Instance);
        if (!policy.HasResilience)
        {
            return SendOnceAsync(cluster, destination, request, context, cancellationToken);
        }

        var pipelines = PipelinesFor(policy);
        if (pipelines.Hedging is not null && request.Content is null)
        {
            return ExecuteAsync(pipelines.Hedging, new Attempts(this, context, feature, cluster, policy, request, destination, sent: 0), cancellationToken);
        }

        return policy.Timeout is null && policy.AttemptTimeout is null && policy.Breaker is null
            ? FirstThenRetryAsync(pipelines, request, context, feature, cluster, policy, destination, cancellationToken)
            : ExecuteAsync(pipelines.Retry, new Attempts(this, context, feature, cluster, policy, request, destination, sent: 0), cancellationToken);
    }

    /// <summary>
    /// Retries without a timeout or breaker to apply: the first attempt goes out directly, as most succeed, and only a
    /// failed one builds the retry state and enters Polly's retry strategy for the retries. Profiling showed that running
    /// every request through the pipeline, for retries that almost never happen, cost a fifth of the gateway's CPU per request.
    /// </summary>
    private async Task<HttpResponseMessage> FirstThenRetryAsync(
        Pipelines pipelines, HttpRequestMessage request, HttpContext context, IReverseProxyFeature feature, ClusterState cluster, ClusterPolicy policy,
        DestinationState destination, CancellationToken cancellationToken)
    {
        _budget.Enter();
        try
        {
            HttpResponseMessage? response = null;
            Exception? error = null;
            try
            {
                response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
                outliers.Record(cluster, destination, (int)response.StatusCode >= 500);
                if ((int)response.StatusCode < 500)
                {
                    return response;
                }
            }
            catch (Exception ex) when (!context.RequestAborted.IsCancellationRequested)
            {
                outliers.Record(cluster, destination, failure: true);
                error = ex;
            }

            var attempts = new Attempts(this, context, feature, cluster, policy, request, destination, sent: 1);
            var failed = error is null ? Outcome.FromResult(response!) : Outcome.FromException<HttpResponseMessage>(error);
            if (!IsFailure(failed, context) || !attempts.TryPlanRetry())
            {
                failed.ThrowIfException();
                return response!;
            }

            response?.Dispose();
            return await ExecuteAsync(pipelines.RetryAfterFirst, attempts, cancellationToken, entered: true).ConfigureAwait(false);
        }
        finally
        {
            _budget.Exit();
        }
    }

    /// <summary>Runs the attempts of one request through a Polly pipeline; the answer is the winning attempt's, or 504 / 503 when the pipeline times out or every circuit is open.</summary>
    private async Task<HttpResponseMessage> ExecuteAsync(ResiliencePipeline<HttpResponseMessage> pipeline, Attempts attempts, CancellationToken cancellationToken, bool entered = false)
    {
        var resilienceContext = ResilienceContextPool.Shared.Get(cancellationToken);
        resilienceContext.Properties.Set(StateKey, attempts);
        if (!entered)
        {
            _budget.Enter();
        }

        try
        {
            var response = await pipeline.ExecuteAsync(
                static (ctx, state) => state.RunAsync(ctx), resilienceContext, attempts).ConfigureAwait(false);
            if (response.RequestMessage is { } sent && sent.Options.TryGetValue(RequestOptionKeys.Destination, out var winner))
            {
                attempts.Feature.ProxiedDestination = winner;
            }

            return response;
        }
        catch (TimeoutRejectedException) when (!attempts.Context.RequestAborted.IsCancellationRequested)
        {
            return Synthesized(HttpStatusCode.GatewayTimeout, attempts.Request);
        }
        catch (BrokenCircuitException)
        {
            return Synthesized(HttpStatusCode.ServiceUnavailable, attempts.Request);
        }
        finally
        {
            if (!entered)
            {
                _budget.Exit();
            }

            ResilienceContextPool.Shared.Return(resilienceContext);
        }
    }

    /// <summary>The pipelines of the cluster's current policy, rebuilt when a configuration change brings a new one (this handler serves one cluster).</summary>
    private Pipelines PipelinesFor(ClusterPolicy policy)
    {
        var pipelines = Volatile.Read(ref _pipelines);
        if (pipelines is null || !ReferenceEquals(pipelines.Policy, policy))
        {
            pipelines = new Pipelines(policy, timeProvider);
            Volatile.Write(ref _pipelines, pipelines);
        }

        return pipelines;
    }

    private async Task<HttpResponseMessage> SendOnceAsync(ClusterState cluster, DestinationState destination, HttpRequestMessage request, HttpContext context, CancellationToken cancellationToken)
    {
        try
        {
            var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
            outliers.Record(cluster, destination, (int)response.StatusCode >= 500);
            return response;
        }
        catch (Exception) when (!context.RequestAborted.IsCancellationRequested)
        {
            outliers.Record(cluster, destination, failure: true);
            throw;
        }
    }

    private static HttpResponseMessage Synthesized(HttpStatusCode status, HttpRequestMessage request) =>
        new(status) { RequestMessage = request, Content = new ByteArrayContent([]) };

    private static bool IsFailure(Outcome<HttpResponseMessage> outcome, HttpContext context) =>
        !context.RequestAborted.IsCancellationRequested
        && (outcome.Exception is HttpRequestException or TimeoutRejectedException or BrokenCircuitException or OperationCanceledException
            || (outcome.Result is { } r && (int)r.StatusCode >= 500));

    private async ValueTask<HttpResponseMessage> AttemptAsync(Attempts state, DestinationState destination, HttpRequestMessage message, CancellationToken cancellationToken)
    {
        message.Options.Set(RequestOptionKeys.Destination, destination);
        var breaker = state.Policy.Breaker is null && state.Policy.AttemptTimeout is null
            ? null
            : _breakers.GetValue(destination, static _ => new BreakerSlot()).For(state.Policy, timeProvider);
        try
        {
            var response = breaker is null
                ? await base.SendAsync(message, cancellationToken).ConfigureAwait(false)
                : await breaker.ExecuteAsync(
                    static (s, ct) => new ValueTask<HttpResponseMessage>(s.Handler.SendInnerAsync(s.Message, ct)),
                    (Handler: this, Message: message),
                    cancellationToken).ConfigureAwait(false);
            outliers.Record(state.Cluster, destination, (int)response.StatusCode >= 500);
            return response;
        }
        catch (BrokenCircuitException)
        {
            throw;
        }
        catch (Exception) when (!state.Context.RequestAborted.IsCancellationRequested)
        {
            outliers.Record(state.Cluster, destination, failure: true);
            throw;
        }
    }

    private Task<HttpResponseMessage> SendInnerAsync(HttpRequestMessage message, CancellationToken cancellationToken) => base.SendAsync(message, cancellationToken);

    private static Uri Retarget(Uri current, DestinationState from, DestinationState to)
    {
        var text = current.AbsoluteUri;
        var oldPrefix = from.Model.Config.Address.TrimEnd('/');
        var suffix = text.StartsWith(oldPrefix, StringComparison.OrdinalIgnoreCase) ? text[oldPrefix.Length..] : current.PathAndQuery;
        return new Uri(to.Model.Config.Address.TrimEnd('/') + suffix, UriKind.Absolute);
    }

    /// <summary>One request's attempts: which destinations were tried, and how to send the next one.</summary>
    private sealed class Attempts(
        ResilienceHandler handler, HttpContext context, IReverseProxyFeature feature, ClusterState cluster, ClusterPolicy policy,
        HttpRequestMessage request, DestinationState first, int sent)
    {
        private readonly DestinationState _first = first;
        private List<DestinationState>? _inUse;
        private DestinationState _last = first;
        private DestinationState? _next;
        private int _count = sent;

        public HttpContext Context => context;

        public IReverseProxyFeature Feature => feature;

        public HttpRequestMessage Request => request;

        public ClusterState Cluster => cluster;

        public ClusterPolicy Policy => policy;

        /// <summary>The primary attempt and every retry: the first goes where YARP's balancer sent it, a retry to the destination chosen when it was allowed.</summary>
        public async ValueTask<HttpResponseMessage> RunAsync(ResilienceContext resilienceContext)
        {
            var retry = Interlocked.Increment(ref _count) > 1 && _next is not null;
            var destination = _last;
            if (retry)
            {
                destination = _next!;
                request.RequestUri = Retarget(request.RequestUri!, _last, destination);
                if (context.Features.Get<BufferedBody>() is { } body && request.Content is { } old)
                {
                    var content = new ByteArrayContent(body.Bytes);
                    foreach (var header in old.Headers)
                    {
                        content.Headers.TryAddWithoutValidation(header.Key, header.Value);
                    }

                    request.Content = content;
                }

                _last = destination;
                _next = null;
                feature.ProxiedDestination = destination;
                GatewayTelemetry.Retries.Add(1, new KeyValuePair<string, object?>(GatewayTelemetry.ClusterTag, cluster.ClusterId), new KeyValuePair<string, object?>(GatewayTelemetry.RouteIdTag, feature.Route.Config.RouteId));
            }

            try
            {
                return await handler.AttemptAsync(this, destination, request, resilienceContext.CancellationToken).ConfigureAwait(false);
            }
            finally
            {
                if (retry)
                {
                    handler._budget.Release();
                }
            }
        }

        /// <summary>Decides whether a failed attempt is retried: an idempotent request whose body can be sent again, another destination, and room in the budget.</summary>
        public bool TryPlanRetry()
        {
            if (!IsIdempotent(context.Request.Method))
            {
                return false;
            }

            if (request.Content is not null && context.Features.Get<BufferedBody>() is null)
            {
                Refuse(context.Features.Get<UnreplayableBody>()?.Reason ?? "the request body was not buffered, so it cannot be sent again.");
                return false;
            }

            var next = handler.Balancer.Pick(context, cluster, cluster.DestinationsState.AvailableDestinations, _last)
                ?? handler.Balancer.Pick(context, cluster, cluster.DestinationsState.AllDestinations, _last);
            if (next is null || !handler._budget.TryAcquire(policy.RetryBudgetPercent, policy.RetryMinConcurrency))
            {
                return false;
            }

            _next = next;
            return true;
        }

        /// <summary>Says why a failed request was not retried: in the log, and to the client in the <c>Patterns-Retry-Refused</c> header.</summary>
        private void Refuse(string reason)
        {
            if (!context.Response.HasStarted)
            {
                context.Response.Headers[RetryRefusedHeader] = reason;
            }

            GatewayLog.RetryRefused(handler._logger, context.Request.Method, context.Request.Path.Value ?? "/", cluster.ClusterId, reason);
        }

        /// <summary>A hedged attempt: a copy of the bodiless request to a destination no other attempt of this request uses.</summary>
        public async ValueTask<Outcome<HttpResponseMessage>> HedgeAsync(ResilienceContext resilienceContext)
        {
            DestinationState? destination;
            var inUse = LazyInitializer.EnsureInitialized(ref _inUse, () => [_first]);
            lock (inUse)
            {
                destination = null;
                foreach (var candidate in cluster.DestinationsState.AvailableDestinations)
                {
                    if (!inUse.Contains(candidate) && WeightedLoadBalancingPolicy.WeightOf(candidate, null, policy.Weights) > 0)
                    {
                        destination = candidate;
                        break;
                    }
                }

                if (destination is not null)
                {
                    inUse.Add(destination);
                }
            }

            if (destination is null)
            {
                return Outcome.FromException<HttpResponseMessage>(new HttpRequestException($"No other destination of cluster '{cluster.ClusterId}' is available for a hedged attempt."));
            }

            GatewayTelemetry.Hedges.Add(1, new KeyValuePair<string, object?>(GatewayTelemetry.ClusterTag, cluster.ClusterId), new KeyValuePair<string, object?>(GatewayTelemetry.RouteIdTag, feature.Route.Config.RouteId));
            using var copy = new HttpRequestMessage(request.Method, Retarget(request.RequestUri!, _first, destination))
            {
                Version = request.Version,
                VersionPolicy = request.VersionPolicy,
            };
            foreach (var header in request.Headers)
            {
                copy.Headers.TryAddWithoutValidation(header.Key, header.Value);
            }

            try
            {
                return Outcome.FromResult(await handler.AttemptAsync(this, destination, copy, resilienceContext.CancellationToken).ConfigureAwait(false));
            }
            catch (Exception ex)
            {
                return Outcome.FromException<HttpResponseMessage>(ex);
            }
        }
    }

    /// <summary>The Polly pipelines of one cluster policy.</summary>
    private sealed class Pipelines
    {
        public Pipelines(ClusterPolicy policy, TimeProvider timeProvider)
        {
            Policy = policy;
            var retry = new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = timeProvider };
            if (policy.Timeout is { } total)
            {
                retry.AddTimeout(total);
            }

            if (policy.MaxRetries > 0)
            {
                retry.AddRetry(RetryOptions(policy.MaxRetries));
            }

            Retry = retry.Build();

            // For a request whose first attempt went out directly and failed: the planned retry and the rest of them.
            var afterFirst = new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = timeProvider };
            if (policy.MaxRetries > 1)
            {
                afterFirst.AddRetry(RetryOptions(policy.MaxRetries - 1));
            }

            RetryAfterFirst = afterFirst.Build();
            if (policy.HedgingDelay is { } delay)
            {
                var hedging = new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = timeProvider };
                if (policy.Timeout is { } t)
                {
                    hedging.AddTimeout(t);
                }

                hedging.AddHedging(new HedgingStrategyOptions<HttpResponseMessage>
                {
                    MaxHedgedAttempts = policy.MaxHedges,
                    Delay = delay,
                    ShouldHandle = static args => new ValueTask<bool>(IsFailure(args.Outcome, args.Context.Properties.GetValue(StateKey, null!).Context)),
                    ActionGenerator = static args =>
                    {
                        var state = args.PrimaryContext.Properties.GetValue(StateKey, null!);
                        var actionContext = args.ActionContext;
                        return () => state.HedgeAsync(actionContext);
                    },
                });
                Hedging = hedging.Build();
            }
        }

        public ClusterPolicy Policy { get; }

        public ResiliencePipeline<HttpResponseMessage> Retry { get; }

        public ResiliencePipeline<HttpResponseMessage> RetryAfterFirst { get; }

        /// <summary>Retries at once (the next attempt goes to another destination), when the failure is retryable and the request may be retried.</summary>
        private static RetryStrategyOptions<HttpResponseMessage> RetryOptions(int retries) => new()
        {
            MaxRetryAttempts = retries,
            Delay = TimeSpan.Zero,
            BackoffType = DelayBackoffType.Constant,
            UseJitter = false,
            ShouldHandle = static args =>
            {
                var state = args.Context.Properties.GetValue(StateKey, null!);
                return new ValueTask<bool>(IsFailure(args.Outcome, state.Context) && state.TryPlanRetry());
            },
        };

        public ResiliencePipeline<HttpResponseMessage>? Hedging { get; }
    }

    /// <summary>One destination's breaker and attempt timeout, rebuilt when the cluster's policy changes.</summary>
    private sealed class BreakerSlot
    {
        private ClusterPolicy? _policy;
        private ResiliencePipeline<HttpResponseMessage>? _pipeline;

        public ResiliencePipeline<HttpResponseMessage> For(ClusterPolicy policy, TimeProvider timeProvider)
        {
            var pipeline = _pipeline;
            if (ReferenceEquals(_policy, policy) && pipeline is not null)
            {
                return pipeline;
            }

            var builder = new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = timeProvider };
            if (policy.Breaker is { } b)
            {
                builder.AddCircuitBreaker(new CircuitBreakerStrategyOptions<HttpResponseMessage>
                {
                    FailureRatio = b.FailureRatio,
                    MinimumThroughput = b.MinimumThroughput,
                    SamplingDuration = b.SamplingDuration,
                    BreakDuration = b.BreakDuration,
                    ShouldHandle = static args => new ValueTask<bool>(
                        args.Outcome.Exception is HttpRequestException or TimeoutRejectedException
                        || (args.Outcome.Result is { } r && (int)r.StatusCode >= 500)),
                });
            }

            if (policy.AttemptTimeout is { } attempt)
            {
                builder.AddTimeout(attempt);
            }

            pipeline = builder.Build();
            _pipeline = pipeline;
            _policy = policy;
            return pipeline;
        }
    }
}
