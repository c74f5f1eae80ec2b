using Microsoft.AspNetCore.Http;
using Patterns.Gateway.Messaging;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Security;

/// <summary>
/// In the proxy pipeline: a body declared larger than the route's <c>MaxRequestBodySize</c> is answered 413 before
/// anything is forwarded. (A chunked body that grows past the limit is cut off by Kestrel while it streams.)
/// </summary>
internal static class RequestLimitsMiddleware
{
    public static Task InvokeAsync(HttpContext context, RequestDelegate next)
    {
        var route = context.Features.Get<IReverseProxyFeature>()?.Route.Config;
        if (route?.MaxRequestBodySize is > 0 and var limit && context.Request.ContentLength > limit)
        {
            return ProblemResponses.WriteAsync(context, StatusCodes.Status413PayloadTooLarge, "The request body is too large",
                $"The body has {context.Request.ContentLength} bytes; route '{route.RouteId}' accepts at most {limit}.");
        }

        return next(context);
    }
}
