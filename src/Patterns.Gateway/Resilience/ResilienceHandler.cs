using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Patterns.Gateway.Configuration;
using Patterns.Gateway.Health;
using Patterns.Gateway.LoadBalancing;
using Patterns.Gateway.Telemetry;
using Patterns.Resilience;
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
    string clusterId, IProxyStateLookup lookup, WeightedLoadBalancingPolicy balancer, OutlierDetector outliers, ResiliencePolicyRegistry registry, TimeProvider timeProvider, ILogger logger)
    : DelegatingHandler
{
    /// <summary>The response header that carries why a failed request was not retried.</summary>
    public const string RetryRefusedHeader = "Patterns-Retry-Refused";

    private readonly ILogger _logger = logger;
    private static readonly ResiliencePropertyKey<Attempts> StateKey = new("Patterns.Gateway.Attempts");
    private readonly RetryBudget _budget = new();

    internal RetryBudget Budget => _budget;

    private WeightedLoadBalancingPolicy Balancer => balancer;

    public static bool IsIdempotent(string method) =>
        HttpMethods.IsGet(method) || HttpMethods.IsHead(method) || HttpMethods.IsOptions(method) || HttpMethods.IsTrace(method)
        || HttpMethods.IsPut(method) || HttpMethods.IsDelete(method);

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (ClientBodyStream.Take(request) is { } upload)
        {
            // Down the send (this request's attempts), the destination's connection tells the upload what the destination did.
            DestinationConnection.Upload.Value = upload;
        }

        // The context comes only for a request whose policy has something to retry, time or count (see ContextHandoff), with
        // that policy when the handoff happened on this thread. The route's cluster state is the one YARP proxied to: no
        // lookup by id unless the route has none (it always has, for a proxied request).
        if (ContextHandoff.Take(request, out var policy) is not { } context
            || context.Features.Get<IReverseProxyFeature>() is not { ProxiedDestination: { } destination, Cluster: not null } feature
            || ClusterOf(feature) is not { } cluster)
        {
            return base.SendAsync(request, cancellationToken);
        }

        policy ??= ClusterPolicy.Effective(feature, registry, context);
        if (!policy.HasResilience)
        {
            // Nothing to retry, time or hedge: the route's transformer counts the one attempt for outlier detection.
            return base.SendAsync(request, cancellationToken);
        }

        // Hedging sends a request more than once: only an idempotent method of the policy's list, and never a body.
        if (request.Content is null && policy.Hedges(request.Method.Method))
        {
            return ExecuteAsync(PipelinesFor(policy).Hedging!, new Attempts(this, context, feature, cluster, policy, request, destination, sent: 0), cancellationToken);
        }

        if (policy.RetriesOnly)
        {
            return policy.MaxRetries > 0
                ? FirstThenRetry(request, context, cluster, policy, destination, cancellationToken)
                : SendOnce(cluster, destination, request, context, cancellationToken);
        }

        return ExecuteAsync(PipelinesFor(policy).Retry, new Attempts(this, context, feature, cluster, policy, request, destination, sent: 0), cancellationToken);
    }

    /// <summary>The inner handler's task for the first attempt; a synchronous throw becomes a faulted task, as an async method would make it.</summary>
    private Task<HttpResponseMessage> SendFirst(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        try
        {
            return base.SendAsync(request, cancellationToken);
        }
        catch (Exception ex)
        {
            return Task.FromException<HttpResponseMessage>(ex);
        }
    }

    /// <summary>
    /// Retries without a timeout or breaker to apply: the first attempt goes out directly, as most succeed, and only a
    /// failed one builds the retry state and enters Polly's retry strategy for the retries. Profiling showed that running
    /// every request through the pipeline, for retries that almost never happen, cost a fifth of the gateway's CPU per request.
    /// A first attempt that completed at once with a success is returned as it is (its own task); otherwise
    /// <see cref="FirstThenRetryAsync"/>'s state machine is the one allocation a successful request makes here.
    /// </summary>
    private Task<HttpResponseMessage> FirstThenRetry(
        HttpRequestMessage request, HttpContext context, ClusterState cluster, ClusterPolicy policy, DestinationState destination, CancellationToken cancellationToken)
    {
        _budget.Enter();
        var handedOver = false;
        try
        {
            var first = SendFirst(request, cancellationToken);
#pragma warning disable CA1849 // Completed already, so it does not block.
            if (!first.IsCompletedSuccessfully || first.Result is not { } response || (int)response.StatusCode >= 500)
#pragma warning restore CA1849
            {
                // FirstThenRetryAsync leaves the budget when it ends (an async method: nothing it throws escapes here).
                handedOver = true;
                return FirstThenRetryAsync(first, request, context, policy, cancellationToken);
            }

            outliers.Record(cluster, destination, failure: false);
            return first;
        }
        finally
        {
            if (!handedOver)
            {
                _budget.Exit();
            }
        }
    }

    /// <summary>
    /// Awaits the first attempt (the budget entered by <see cref="FirstThenRetry"/>). This method's state machine is the one
    /// allocation a successful request makes here, and every parameter and every local live across an await is a field of
    /// it: the cluster and the destination are found again from the context after the attempt instead of being carried
    /// across the await, and the catch holds no await (which would keep the exception in a field).
    /// </summary>
    private async Task<HttpResponseMessage> FirstThenRetryAsync(
        Task<HttpResponseMessage> first, HttpRequestMessage request, HttpContext context, ClusterPolicy policy, CancellationToken cancellationToken)
    {
        try
        {
            // Both written only after the await (no initializer), so neither is a field of the state machine.
            HttpResponseMessage? response;
            Exception? error;
            try
            {
                response = await first.ConfigureAwait(false);
                error = null;
            }
            catch (Exception ex) when (!context.RequestAborted.IsCancellationRequested)
            {
                response = null;
                error = ex;
            }

            var feature = context.Features.Get<IReverseProxyFeature>()!;
            var cluster = ClusterOf(feature)!;
            var destination = feature.ProxiedDestination!;
            Outcome<HttpResponseMessage> outcome;
            if (error is not null)
            {
                if (!OutlierDetector.IsClientBodyFault(error, context, cancellationToken.IsCancellationRequested))
                {
                    outliers.Record(cluster, destination, failure: true);
                }

                outcome = Outcome.FromException<HttpResponseMessage>(error);
            }
            else if (response is null)
            {
                throw new InvalidOperationException($"The handler under cluster '{clusterId}' returned no response message.");
            }
            else if ((int)response.StatusCode < 500)
            {
                outliers.Record(cluster, destination, failure: false);
                return response;
            }
            else
            {
                outliers.Record(cluster, destination, failure: true);
                outcome = Outcome.FromResult(response);
            }

            return await RetryAfterFirstAsync(request, context, cluster, policy, destination, outcome, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _budget.Exit();
        }
    }

    /// <summary>The state of this handler's cluster for a proxied request: the route's, unless the route has none (see <see cref="SendAsync"/>).</summary>
    private ClusterState? ClusterOf(IReverseProxyFeature feature) =>
        feature.Route.Cluster is { } routeCluster && string.Equals(routeCluster.ClusterId, clusterId, StringComparison.Ordinal) ? routeCluster
            : lookup.TryGetCluster(clusterId, out var found) ? found : null;

    /// <summary>After a failed first attempt: plans a retry and runs the retries through Polly, or returns the failure as it was.</summary>
    private Task<HttpResponseMessage> RetryAfterFirstAsync(
        HttpRequestMessage request, HttpContext context, ClusterState cluster, ClusterPolicy policy, DestinationState destination, Outcome<HttpResponseMessage> failed, CancellationToken cancellationToken)
    {
        var feature = context.Features.Get<IReverseProxyFeature>()!;
        var attempts = new Attempts(this, context, feature, cluster, policy, request, destination, sent: 1);
        if (!IsFailure(failed, context, cancellationToken) || !attempts.TryPlanRetry())
        {
            failed.ThrowIfException();
            return Task.FromResult(failed.Result!);
        }

        // ExecuteAsync's finally gives back the planned slot if the retry never runs.
        failed.Result?.Dispose();
        return ExecuteAsync(PipelinesFor(policy).RetryAfterFirst, attempts, cancellationToken, entered: true);
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
        catch (TimeoutRejectedException ex) when (!attempts.Context.RequestAborted.IsCancellationRequested)
        {
            if (attempts.Context.Request.Body is ClientBodyStream body)
            {
                // The gateway's timeout cancelled the body's copy too: not a destination breaking the upload off.
                body.TimedOut();
            }

            return Synthesized(
                HttpStatusCode.GatewayTimeout, "Gateway Timeout", attempts,
                $"Cluster '{attempts.Cluster.ClusterId}' did not answer within {ex.Timeout:c}, the timeout of {Source(attempts.Policy)}.");
        }
        catch (BrokenCircuitException ex)
        {
            return Synthesized(
                HttpStatusCode.ServiceUnavailable, "Service Unavailable", attempts,
                $"The circuit of every destination tried in cluster '{attempts.Cluster.ClusterId}' is open ({Source(attempts.Policy)}).",
                ex.RetryAfter);
        }
        catch (ConcurrencyLimitExceededException ex)
        {
            return Synthesized(HttpStatusCode.ServiceUnavailable, "Service Unavailable", attempts, $"{ex.Message.TrimEnd('.')} ({Source(attempts.Policy)}).");
        }
        finally
        {
            // A retry planned but never run (Polly asks ShouldHandle after the last attempt too, and a timeout or an abort
            // can end the backoff delay) gives its budget slot back here.
            attempts.ReleaseRetrySlot();
            if (!entered)
            {
                _budget.Exit();
            }

            ResilienceContextPool.Shared.Return(resilienceContext);
        }
    }

    /// <summary>The pipelines of a policy, built on its first request (a configuration change brings a new policy object, so new pipelines).</summary>
    private Pipelines PipelinesFor(ClusterPolicy policy)
    {
        if (policy.Pipelines is Pipelines pipelines && ReferenceEquals(pipelines.TimeProvider, timeProvider))
        {
            return pipelines;
        }

        pipelines = new Pipelines(policy, timeProvider);
        policy.Pipelines = pipelines;
        return pipelines;
    }

    private static string Source(ClusterPolicy policy) =>
        policy.PolicyName is { } name ? $"resilience policy '{name}'" : "the cluster's Patterns.* metadata";

    /// <summary>One attempt under a policy with resilience but nothing to do for this request (hedging only, a request that is not hedged), counted for outlier detection; a success that completed at once is returned as its own task.</summary>
    private Task<HttpResponseMessage> SendOnce(ClusterState cluster, DestinationState destination, HttpRequestMessage request, HttpContext context, CancellationToken cancellationToken)
    {
        var sent = SendFirst(request, cancellationToken);
        if (sent.IsCompletedSuccessfully)
        {
#pragma warning disable CA1849 // Completed already, so it does not block.
            outliers.Record(cluster, destination, (int)sent.Result.StatusCode >= 500);
#pragma warning restore CA1849
            return sent;
        }

        return SendOnceAsync(sent, cluster, destination, context, cancellationToken);
    }

    private async Task<HttpResponseMessage> SendOnceAsync(Task<HttpResponseMessage> sent, ClusterState cluster, DestinationState destination, HttpContext context, CancellationToken cancellationToken)
    {
        try
        {
            var response = await sent.ConfigureAwait(false);
            outliers.Record(cluster, destination, (int)response.StatusCode >= 500);
            return response;
        }
        catch (Exception ex) when (!context.RequestAborted.IsCancellationRequested && !OutlierDetector.IsClientBodyFault(ex, context, cancellationToken.IsCancellationRequested))
        {
            outliers.Record(cluster, destination, failure: true);
            throw;
        }
    }

    /// <summary>The gateway's own answer when no destination gave one: RFC 9457 problem details saying why.</summary>
    private static HttpResponseMessage Synthesized(HttpStatusCode status, string title, Attempts attempts, string detail, TimeSpan? retryAfter = null)
    {
        var response = new HttpResponseMessage(status)
        {
            RequestMessage = attempts.Request,
            Content = Messaging.ProblemResponses.Content((int)status, title, detail, attempts.Context.Request.Path.Value),
        };
        if (status == HttpStatusCode.ServiceUnavailable)
        {
            // An open circuit says when it half-opens (whole seconds, rounded up); otherwise try again in a second.
            var seconds = retryAfter is { } wait ? Math.Max(1, Math.Ceiling(wait.TotalSeconds)) : 1;
            response.Headers.RetryAfter = new System.Net.Http.Headers.RetryConditionHeaderValue(TimeSpan.FromSeconds(seconds));
        }

        return response;
    }

    /// <summary>
    /// True when an attempt failed in a way another attempt may mend: not when the client went away, nor when its request body
    /// failed or stalled on the client's side (<see cref="OutlierDetector.IsClientBodyFault(Exception?, HttpContext, bool)"/>).
    /// </summary>
    private static bool IsFailure(Outcome<HttpResponseMessage> outcome, HttpContext context, CancellationToken cancellationToken) =>
        !context.RequestAborted.IsCancellationRequested
        && (outcome.Exception is HttpRequestException or TimeoutRejectedException or BrokenCircuitException or OperationCanceledException
                && !OutlierDetector.IsClientBodyFault(outcome.Exception, context, cancellationToken.IsCancellationRequested)
            || (outcome.Result is { } r && (int)r.StatusCode >= 500));

    private async ValueTask<HttpResponseMessage> AttemptAsync(Attempts state, DestinationState destination, HttpRequestMessage message, CancellationToken cancellationToken)
    {
        message.Options.Set(RequestOptionKeys.Destination, destination);
        var pipelines = state.Policy.HasAttemptPipeline ? AttemptPipeline(state.Policy, destination) : null;
        ResilienceContext? attemptContext = null;
        try
        {
            HttpResponseMessage response;
            if (pipelines is null)
            {
                response = await base.SendAsync(message, cancellationToken).ConfigureAwait(false);
            }
            else if (pipelines.Breaker is not null)
            {
                // The breaker's judgement of an answer that is not a failure waits for its body (BreakerHold); the answer does not.
                var outcome = await BreakerHold.RunAsync(
                    _sendInner ??= SendInnerAsync, state.Context, destination, message, pipelines, StateKey, state, cancellationToken).ConfigureAwait(false);
                outcome.ThrowIfException();
                response = outcome.Result ?? throw new InvalidOperationException($"The handler under cluster '{clusterId}' returned no response message.");
            }
            else
            {
                // The attempt's state rides in the context, so the strategies see the request's.
                attemptContext = ResilienceContextPool.Shared.Get(cancellationToken);
                attemptContext.Properties.Set(StateKey, state);
                response = await pipelines.Inner!.ExecuteAsync(
                    static (ctx, s) => new ValueTask<HttpResponseMessage>(s.Handler.SendInnerAsync(s.Message, ctx.CancellationToken)),
                    attemptContext,
                    (Handler: this, Message: message)).ConfigureAwait(false);
            }

            var failed = (int)response.StatusCode >= 500;
            if (!failed)
            {
                // Set before the hedging strategy accepts this answer and cancels the other attempts.
                state.Answered = true;
            }

            outliers.Record(state.Cluster, destination, failed);
            return response;
        }
        catch (BrokenCircuitException)
        {
            throw;
        }
        catch (Exception ex) when (IsDestinationFault(ex, state, cancellationToken))
        {
            outliers.Record(state.Cluster, destination, failure: true);
            throw;
        }
        finally
        {
            if (attemptContext is not null)
            {
                ResilienceContextPool.Shared.Return(attemptContext);
            }
        }
    }

    /// <summary>
    /// True when an attempt that threw <paramref name="exception"/> failed on its destination's side. Not when the client went
    /// away, nor when the attempt was cancelled because another one answered (a hedge that lost), nor for a client's body that
    /// the gateway's server refused while it streamed: none of these says anything about the destination. An attempt cancelled
    /// by a timeout (the request's, YARP's activity timeout, the connect timeout) with no answer yet is the destination's failure.
    /// </summary>
    private static bool IsDestinationFault(Exception exception, Attempts state, CancellationToken attempt) =>
        !state.Context.RequestAborted.IsCancellationRequested
        && !(state.Answered && attempt.IsCancellationRequested)
        && !OutlierDetector.IsClientBodyFault(exception, state.Context, attempt.IsCancellationRequested);

    private Task<HttpResponseMessage> SendInnerAsync(HttpRequestMessage message, CancellationToken cancellationToken) => base.SendAsync(message, cancellationToken);

    // SendInnerAsync as a delegate, made once per handler (a cluster's client) for the breaker's attempts.
    private Func<HttpRequestMessage, CancellationToken, Task<HttpResponseMessage>>? _sendInner;

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
        private int _slot;
        private volatile bool _answered;

        /// <summary>Gets or sets a value indicating whether an attempt got an answer that is not a failure, so the hedging strategy cancels the others.</summary>
        public bool Answered
        {
            get => _answered;
            set => _answered = value;
        }

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
                    ReleaseRetrySlot();
                }
            }
        }

        /// <summary>Gives back the budget slot of the planned retry, if one is held; safe to call more than once.</summary>
        public void ReleaseRetrySlot()
        {
            if (Interlocked.Exchange(ref _slot, 0) == 1)
            {
                handler._budget.Release();
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
            if (next is null)
            {
                return false;
            }

            // One slot per planned retry: a slot still held from a plan that never ran is reused, not taken twice.
            if (Volatile.Read(ref _slot) == 0)
            {
                if (!handler._budget.TryAcquire(policy.RetryBudgetPercent, policy.RetryMinConcurrency))
                {
                    return false;
                }

                Volatile.Write(ref _slot, 1);
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
                // The weighted balancer picks among the destinations no attempt of this request uses: hedges spread over the
                // cluster by weight (smooth round robin, or the routing key's next choice) instead of all going to one.
                var candidates = cluster.DestinationsState.AvailableDestinations.Where(d => !inUse.Contains(d)).ToList();
                destination = handler.Balancer.Pick(context, cluster, candidates, exclude: null);
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
            // NonValidated: the headers as YARP set them, neither parsed nor dropped when a value does not parse.
            foreach (var header in request.Headers.NonValidated)
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
            TimeProvider = timeProvider;
            var retry = new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = timeProvider };
            if (policy.Limiter is { } limiter)
            {
                PipelineFactory.AddConcurrencyLimit(retry, limiter);
            }

            if (policy.Timeout is { } total)
            {
                retry.AddTimeout(total);
            }

            if (policy.MaxRetries > 0)
            {
                retry.AddRetry(RetryOptions(policy, policy.MaxRetries));
            }

            Retry = retry.Build();

            // For a request whose first attempt went out directly and failed: the planned retry and the rest of them.
            var afterFirst = new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = timeProvider };
            if (policy.MaxRetries > 1)
            {
                afterFirst.AddRetry(RetryOptions(policy, policy.MaxRetries - 1));
            }

            RetryAfterFirst = afterFirst.Build();
            if (policy.HedgingDelay is { } delay)
            {
                var hedging = new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = timeProvider };
                if (policy.Limiter is { } hedgingLimiter)
                {
                    PipelineFactory.AddConcurrencyLimit(hedging, hedgingLimiter);
                }

                if (policy.Timeout is { } t)
                {
                    hedging.AddTimeout(t);
                }

                hedging.AddHedging(new HedgingStrategyOptions<HttpResponseMessage>
                {
                    MaxHedgedAttempts = policy.MaxHedges,
                    Delay = delay,
                    ShouldHandle = static args => new ValueTask<bool>(IsFailure(args.Outcome, args.Context.Properties.GetValue(StateKey, null!).Context, args.Context.CancellationToken)),
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

        public TimeProvider TimeProvider { get; }

        public ResiliencePipeline<HttpResponseMessage> Retry { get; }

        public ResiliencePipeline<HttpResponseMessage> RetryAfterFirst { get; }

        /// <summary>
        /// Retries when the failure is retryable and the request may be retried (the next attempt goes to another destination):
        /// at once under the cluster's metadata, after the backoff of a named policy.
        /// </summary>
        private static RetryStrategyOptions<HttpResponseMessage> RetryOptions(ClusterPolicy policy, int retries) => new()
        {
            MaxRetryAttempts = retries,
            Delay = policy.RetryDelay,
            BackoffType = policy.RetryBackoff,
            UseJitter = policy.RetryJitter,
            MaxDelay = policy.RetryMaxDelay,
            ShouldHandle = static args =>
            {
                var state = args.Context.Properties.GetValue(StateKey, null!);
                return new ValueTask<bool>(IsFailure(args.Outcome, state.Context, args.Context.CancellationToken) && state.TryPlanRetry());
            },
        };

        public ResiliencePipeline<HttpResponseMessage>? Hedging { get; }
    }

    /// <summary>One destination's breaker, attempt timeout and added strategies under <paramref name="policy"/>.</summary>
    private AttemptPipelines AttemptPipeline(ClusterPolicy policy, DestinationState destination) =>
        policy.AttemptPipelines.TryGetValue(destination, out var pipelines)
            ? (AttemptPipelines)pipelines
            : NewAttemptPipeline(policy, destination);

    private AttemptPipelines NewAttemptPipeline(ClusterPolicy policy, DestinationState destination) =>
        (AttemptPipelines)policy.AttemptPipelines.GetValue(destination, _ =>
        {
            ResiliencePipeline<HttpResponseMessage>? breaker = null;
            CircuitBreakerStateProvider? circuit = null;
            CircuitTransitions? transitions = null;
            if (policy.Breaker is { } b)
            {
                circuit = new CircuitBreakerStateProvider();
                var changes = transitions = new CircuitTransitions();
                breaker = new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = timeProvider }.AddCircuitBreaker(new CircuitBreakerStrategyOptions<HttpResponseMessage>
                {
                    FailureRatio = b.FailureRatio,
                    MinimumThroughput = b.MinimumThroughput,
                    SamplingDuration = b.SamplingDuration,
                    BreakDuration = b.BreakDuration,
                    StateProvider = circuit,
                    OnOpened = _ => changes.Changed(),
                    OnClosed = _ => changes.Changed(),
                    // As for outlier detection: a 5xx, a transport error, a timeout (Polly's, or a cancellation that neither the
                    // client nor a winning hedge caused: the request's timeout, YARP's activity timeout) or an answer whose body the
                    // destination broke off (BreakerHold) counts; a client that went away, a hedge that lost, or a client's body
                    // refused by the gateway's server or stalled by the client does not.
                    ShouldHandle = static args => new ValueTask<bool>(args.Outcome.Exception is { } ex
                        ? ReferenceEquals(ex, BreakerHold.BodyBrokenOff)
                            || (ex is HttpRequestException or TimeoutRejectedException or OperationCanceledException
                                && (args.Context.Properties.TryGetValue(StateKey, out var state)
                                    ? IsDestinationFault(ex, state, args.Context.CancellationToken)
                                    : !OutlierDetector.IsClientBodyFault(ex)))
                        : args.Outcome.Result is { } r && (int)r.StatusCode >= 500),
                }).Build();
            }

            ResiliencePipeline<HttpResponseMessage>? inner = null;
            if (policy.AttemptTimeout is not null || policy.ConfigureAttempt is not null)
            {
                var builder = new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = timeProvider };
                if (policy.AttemptTimeout is { } attempt)
                {
                    builder.AddTimeout(attempt);
                }

                if (policy.ConfigureAttempt is { } configure)
                {
                    var added = new ResiliencePipelineBuilder { TimeProvider = timeProvider };
                    configure(added);
                    builder.AddPipeline(added.Build());
                }

                inner = builder.Build();
            }

            return new AttemptPipelines { Breaker = breaker, Circuit = circuit, Inner = inner, Transitions = transitions };
        });
}
