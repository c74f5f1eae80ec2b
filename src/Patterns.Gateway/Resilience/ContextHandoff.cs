using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http;
using Patterns.Gateway.Configuration;
using Patterns.Gateway.Health;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Model;
using Yarp.ReverseProxy.Transforms.Builder;

namespace Patterns.Gateway.Resilience;

/// <summary>
/// Hands a request's <see cref="HttpContext"/> from the last request transform to the cluster's <see cref="ResilienceHandler"/>
/// without allocating: YARP sends the proxy request on the thread that finished its transforms when they finished
/// synchronously (the usual case), so a thread-static slot, checked against the request, carries it. When a transform
/// completed asynchronously the context goes through a shared map instead (allocating, as the request options did).
/// </summary>
internal static class ContextHandoff
{
    [ThreadStatic]
    private static HttpRequestMessage? t_request;

    [ThreadStatic]
    private static HttpContext? t_context;

    [ThreadStatic]
    private static ClusterPolicy? t_policy;

    private static readonly ConcurrentDictionary<HttpRequestMessage, HttpContext> Pending = new(ReferenceEqualityComparer.Instance);

    // The entries in Pending, read on every send so that the usual request (nothing pending) does not touch the map:
    // ConcurrentDictionary.IsEmpty takes every lock.
    private static int s_pending;

    /// <summary>Gets the contexts handed over through the shared map and not taken or removed yet.</summary>
    internal static int PendingCount => Volatile.Read(ref s_pending);

    public static void Give(HttpRequestMessage request, HttpContext context, ClusterPolicy policy, bool sameThread)
    {
        if (sameThread)
        {
            t_request = request;
            t_context = context;
            t_policy = policy;
        }
        else
        {
            if (Pending.TryAdd(request, context))
            {
                Interlocked.Increment(ref s_pending);

                // YARP may not send at all (a transform answered, e.g. 401; the request was aborted), so Take never runs:
                // the entry goes when the request ends, whatever happened.
                context.Response.OnCompleted(static r =>
                {
                    Remove((HttpRequestMessage)r);
                    return Task.CompletedTask;
                }, request);
            }
        }
    }

    private static HttpContext? Remove(HttpRequestMessage request)
    {
        if (Pending.TryRemove(request, out var context))
        {
            Interlocked.Decrement(ref s_pending);
            return context;
        }

        return null;
    }

    /// <summary>
    /// The context handed over with <paramref name="request"/>, once; <see langword="null"/> when none was (the cluster needs no handler).
    /// <paramref name="policy"/> is the policy the transform resolved for it when it came on this thread, else <see langword="null"/>
    /// (the handler resolves it again: one request sees one policy set either way).
    /// </summary>
    public static HttpContext? Take(HttpRequestMessage request, out ClusterPolicy? policy)
    {
        if (ReferenceEquals(t_request, request))
        {
            var context = t_context;
            policy = t_policy;
            t_request = null;
            t_context = null;
            t_policy = null;
            return context;
        }

        policy = null;
        return Volatile.Read(ref s_pending) != 0 ? Remove(request) : null;
    }

    /// <summary>
    /// The request's policy when it needs the resilience handler (anything to retry, time or hedge), else <see langword="null"/>.
    /// A cluster with outlier detection and no resilience does not: its one attempt is counted by the route's transformer when
    /// the response (or the failure) comes back, see <see cref="OutlierDetector.RecordResponse"/>.
    /// </summary>
    public static ClusterPolicy? Needed(HttpContext context, ResiliencePolicyRegistry registry) =>
        context.Features.Get<IReverseProxyFeature>() is { Cluster: not null } proxied
        && ClusterPolicy.Effective(proxied, registry, context) is { HasResilience: true } policy
            ? policy
            : null;
}

/// <summary>
/// Wraps every route's transformer so the context handoff happens after the last request transform, whatever transforms the
/// route has, and so that the one attempt of a request without resilience is counted for outlier detection as its response
/// comes back, before any response transform.
/// </summary>
internal sealed class HandoffTransformBuilder(ITransformBuilder inner, ResiliencePolicyRegistry registry, OutlierDetector outliers) : ITransformBuilder
{
    public IReadOnlyList<Exception> ValidateRoute(RouteConfig route) => inner.ValidateRoute(route);

    public IReadOnlyList<Exception> ValidateCluster(ClusterConfig cluster) => inner.ValidateCluster(cluster);

    public HttpTransformer Build(RouteConfig route, ClusterConfig? cluster) => new Transformer(inner.Build(route, cluster), registry, outliers);

    public HttpTransformer Create(Action<TransformBuilderContext> action) => inner.Create(action);

    private sealed class Transformer(HttpTransformer inner, ResiliencePolicyRegistry registry, OutlierDetector outliers) : HttpTransformer
    {
        public override ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest, string destinationPrefix, CancellationToken cancellationToken)
        {
            var pending = inner.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken);
            if (!pending.IsCompletedSuccessfully)
            {
                return AfterAsync(pending, httpContext, proxyRequest);
            }

            if (ContextHandoff.Needed(httpContext, registry) is { } policy)
            {
                WatchClientBody(httpContext, proxyRequest, sameThread: true);
                ContextHandoff.Give(proxyRequest, httpContext, policy, sameThread: true);
            }
            else if (proxyRequest.Content is not null)
            {
                WatchClientBodyForOutliers(httpContext, proxyRequest, sameThread: true);
            }

            return default;
        }

        private async ValueTask AfterAsync(ValueTask pending, HttpContext httpContext, HttpRequestMessage proxyRequest)
        {
            await pending.ConfigureAwait(false);
            if (ContextHandoff.Needed(httpContext, registry) is { } policy)
            {
                WatchClientBody(httpContext, proxyRequest, sameThread: false);
                ContextHandoff.Give(proxyRequest, httpContext, policy, sameThread: false);
            }
            else if (proxyRequest.Content is not null)
            {
                WatchClientBodyForOutliers(httpContext, proxyRequest, sameThread: false);
            }
        }

        /// <summary>
        /// A request without resilience whose cluster has outlier detection: its body is watched too, so that the route's
        /// transformer can tell a timeout of a stalled upload from one of the destination (<see cref="OutlierDetector.RecordResponse"/>).
        /// </summary>
        private static void WatchClientBodyForOutliers(HttpContext httpContext, HttpRequestMessage proxyRequest, bool sameThread)
        {
            if (httpContext.Features.Get<IReverseProxyFeature>() is { Cluster: { } cluster } && ClusterPolicy.For(cluster.Config).Outlier is not null)
            {
                WatchClientBody(httpContext, proxyRequest, sameThread);
            }
        }

        /// <summary>
        /// A request whose body the forwarder streams from the client: the body is read through a <see cref="ClientBodyStream"/>
        /// (the forwarder reads <c>Request.Body</c> only as it sends), so that the resilience handler can tell a client that went
        /// away or stalled mid-upload from a destination that failed (<see cref="OutlierDetector.IsClientBodyFault(Exception?, HttpContext, bool)"/>).
        /// </summary>
        private static void WatchClientBody(HttpContext httpContext, HttpRequestMessage proxyRequest, bool sameThread)
        {
            if (proxyRequest.Content is null)
            {
                return;
            }

            if (httpContext.Request.Body is not ClientBodyStream body)
            {
                httpContext.Request.Body = body = new ClientBodyStream(httpContext.Request.Body);
            }

            ClientBodyStream.Offer(proxyRequest, body, httpContext, sameThread);
        }

        public override ValueTask<bool> TransformResponseAsync(HttpContext httpContext, HttpResponseMessage? proxyResponse, CancellationToken cancellationToken)
        {
            if (proxyResponse is not null && (int)proxyResponse.StatusCode >= 500)
            {
                // Counted as a failure already (here or in the resilience handler): a body it breaks off is not another one.
                OutlierDetector.MarkFailedAnswer(httpContext);
            }

            // YARP hands its activity token: cancelled when its activity timeout ended the exchange (or the client left).
            outliers.RecordResponse(httpContext, proxyResponse, registry, cancellationToken.IsCancellationRequested);
            if (proxyResponse is null && httpContext.Request.Body is ClientBodyStream)
            {
                OutlierDetector.CorrectUploadStatus(httpContext, cancellationToken.IsCancellationRequested);
            }

            return inner.TransformResponseAsync(httpContext, proxyResponse, cancellationToken);
        }

        public override ValueTask TransformResponseTrailersAsync(HttpContext httpContext, HttpResponseMessage proxyResponse, CancellationToken cancellationToken) =>
            inner.TransformResponseTrailersAsync(httpContext, proxyResponse, cancellationToken);
    }
}
