using System.Globalization;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Patterns.Gateway;
using Patterns.Gateway.Messaging;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Whose requests share a rate limit.</summary>
public enum ClientPartition
{
    /// <summary>The client's IP address.</summary>
    IpAddress,

    /// <summary>The API key in the <c>X-Api-Key</c> header (requests without one share the IP address's limit).</summary>
    ApiKey,

    /// <summary>The authenticated subject (<c>sub</c> claim; anonymous requests share the IP address's limit).</summary>
    Subject,
}

/// <summary>Authentication and rate limiting for gateway routes, on ASP.NET Core's own middleware.</summary>
public static class GatewaySecurityExtensions
{
    /// <summary>Adds API-key authentication under <paramref name="scheme"/>.</summary>
    /// <param name="builder">The authentication builder.</param>
    /// <param name="configure">Sets the header and the keys.</param>
    /// <param name="scheme">The scheme name.</param>
    /// <returns>The builder.</returns>
    public static AuthenticationBuilder AddApiKeys(this AuthenticationBuilder builder, Action<ApiKeyAuthenticationOptions> configure, string scheme = ApiKeyAuthenticationOptions.DefaultScheme)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.AddScheme<ApiKeyAuthenticationOptions, ApiKeyAuthenticationHandler>(scheme, configure);
    }

    /// <summary>
    /// Adds a fixed-window rate-limit policy partitioned per client, for a route's <c>RateLimiterPolicy</c>, and makes
    /// rejections answer 429 with <c>Retry-After</c> and a problem details body.
    /// </summary>
    /// <param name="options">The rate limiter options.</param>
    /// <param name="policyName">The policy's name.</param>
    /// <param name="permitLimit">Requests per window and client.</param>
    /// <param name="window">The window.</param>
    /// <param name="partition">Whose requests share the limit.</param>
    /// <returns>The options.</returns>
    public static RateLimiterOptions AddPerClientFixedWindow(this RateLimiterOptions options, string policyName, int permitLimit, TimeSpan window, ClientPartition partition = ClientPartition.IpAddress)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(policyName);
        ArgumentOutOfRangeException.ThrowIfLessThan(permitLimit, 1);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(window, TimeSpan.Zero);
        options.AddPolicy(policyName, context => RateLimitPartition.GetFixedWindowLimiter(
            ClientKey(context, partition),
            _ => new FixedWindowRateLimiterOptions { PermitLimit = permitLimit, Window = window, QueueLimit = 0, AutoReplenishment = true }));
        UseProblemRejections(options);
        return options;
    }

    /// <summary>Makes rate-limit rejections answer 429 with <c>Retry-After</c> (when the limiter knows it) and a problem details body.</summary>
    /// <param name="options">The rate limiter options.</param>
    /// <returns>The options.</returns>
    public static RateLimiterOptions UseProblemRejections(this RateLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
        options.OnRejected = static (context, cancellationToken) =>
        {
            string? retryAfter = null;
            if (context.Lease.TryGetMetadata(MetadataName.RetryAfter, out var delay))
            {
                retryAfter = Math.Max(1, (int)Math.Ceiling(delay.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
            }

            return new ValueTask(ProblemResponses.WriteAsync(context.HttpContext, StatusCodes.Status429TooManyRequests, "Too many requests", "The rate limit of this route was reached; retry later.", retryAfter));
        };
        return options;
    }

    internal static string ClientKey(HttpContext context, ClientPartition partition)
    {
        var fallback = "ip:" + (context.Connection.RemoteIpAddress?.ToString() ?? "unknown");
        return partition switch
        {
            ClientPartition.ApiKey => context.Request.Headers.TryGetValue("X-Api-Key", out var key) && !string.IsNullOrEmpty(key) ? "key:" + key.ToString() : fallback,
            ClientPartition.Subject => context.User.FindFirst("sub")?.Value is { } sub ? "sub:" + sub : fallback,
            _ => fallback,
        };
    }
}
