using Microsoft.AspNetCore.Http;

namespace Patterns.Gateway.Security;

/// <summary>
/// Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are not forwarded: the fixed ones that YARP does
/// not already drop, and every header the client named in <c>Connection</c>.
/// </summary>
internal static class HopByHopHeaders
{
    private static readonly string[] Fixed = ["Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate", "Trailer"];

    public static void Remove(HttpContext context, HttpRequestMessage proxyRequest)
    {
        foreach (var name in Fixed)
        {
            proxyRequest.Headers.Remove(name);
        }

        var connection = context.Request.Headers.Connection;
        foreach (var value in connection)
        {
            if (string.IsNullOrEmpty(value))
            {
                continue;
            }

            foreach (var token in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (!token.Equals("close", StringComparison.OrdinalIgnoreCase) && !token.Equals("keep-alive", StringComparison.OrdinalIgnoreCase)
                    && !token.Equals("upgrade", StringComparison.OrdinalIgnoreCase))
                {
                    proxyRequest.Headers.Remove(token);
                    proxyRequest.Content?.Headers.Remove(token);
                }
            }
        }
    }
}
