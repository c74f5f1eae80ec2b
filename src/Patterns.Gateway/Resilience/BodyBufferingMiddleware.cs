using Microsoft.AspNetCore.Http;
using Patterns.Gateway.Configuration;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Resilience;

/// <summary>
/// In the proxy pipeline: reads the body of an idempotent request into memory, up to the cluster's limit, when the
/// cluster retries, so that a retry can send it again. Larger bodies and bodies of unknown length go once.
/// </summary>
internal static class BodyBufferingMiddleware
{
    public static async Task InvokeAsync(HttpContext context, Func<Task> next)
    {
        var feature = context.Features.Get<IReverseProxyFeature>();
        var request = context.Request;
        if (feature is not null && request.ContentLength is > 0 and var length
            && ClusterPolicy.For(feature.Cluster.Config) is { MaxRetries: > 0 } policy
            && length <= policy.MaxBufferedBodyBytes && ResilienceHandler.IsIdempotent(request.Method))
        {
            var bytes = new byte[length];
            await request.Body.ReadExactlyAsync(bytes, context.RequestAborted).ConfigureAwait(false);
            request.Body = new MemoryStream(bytes, writable: false);
            context.Features.Set(new BufferedBody(bytes));
        }

        await next().ConfigureAwait(false);
    }
}
