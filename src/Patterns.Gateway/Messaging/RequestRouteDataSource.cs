using System.Globalization;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Patterns.Gateway.Telemetry;

namespace Patterns.Gateway.Messaging;

/// <summary>The <c>Requests</c> section given to <see cref="GatewayBuilder.LoadFromConfig"/>: HTTP routes to request handlers.</summary>
internal sealed class RequestRouteSection(IConfiguration section)
{
    public IConfiguration Section { get; } = section;
}

/// <summary>
/// The endpoints of the request routes declared in configuration. They are built when <c>MapGateway</c> runs (a bad
/// route fails the host, naming the route and the field) and rebuilt when the configuration changes (a bad change is
/// logged and the last good routes stay).
/// </summary>
internal sealed class RequestRouteDataSource : EndpointDataSource, IDisposable
{
    private static readonly string[] Fields = ["Path", "Request", "Timeout", "MaxBodyBytes", "AuthorizationPolicy", "RateLimiterPolicy", "Order"];

    private readonly IConfiguration _section;
    private readonly IReadOnlyDictionary<string, RequestTarget> _targets;
    private readonly bool _hasRequestClient;
    private readonly ILogger _logger;
    private readonly IDisposable _reloads;
    private readonly Lock _lock = new();
    private IReadOnlyList<Endpoint> _endpoints;
    private CancellationTokenSource _changed = new();

    public RequestRouteDataSource(IConfiguration section, IEnumerable<RequestTarget> targets, bool hasRequestClient, ILogger logger)
    {
        _section = section;
        _targets = targets.GroupBy(t => t.Name, StringComparer.OrdinalIgnoreCase).ToDictionary(g => g.Key, g => g.Last(), StringComparer.OrdinalIgnoreCase);
        _hasRequestClient = hasRequestClient;
        _logger = logger;
        var errors = new List<string>();
        _endpoints = Build(errors);
        if (errors.Count > 0)
        {
            throw new InvalidOperationException("Invalid gateway request routes: " + string.Join(" ", errors));
        }

        _reloads = ChangeToken.OnChange(_section.GetReloadToken, Reload);
    }

    public override IReadOnlyList<Endpoint> Endpoints => Volatile.Read(ref _endpoints);

    public override IChangeToken GetChangeToken()
    {
        lock (_lock)
        {
            return new CancellationChangeToken(_changed.Token);
        }
    }

    public void Dispose()
    {
        _reloads.Dispose();
        _changed.Dispose();
    }

    private void Reload()
    {
        var errors = new List<string>();
        var endpoints = Build(errors);
        if (errors.Count > 0)
        {
            GatewayLog.RequestRoutesRejected(_logger, string.Join(" ", errors));
            return;
        }

        CancellationTokenSource previous;
        lock (_lock)
        {
            Volatile.Write(ref _endpoints, endpoints);
            previous = _changed;
            _changed = new CancellationTokenSource();
        }

        previous.Cancel();
        previous.Dispose();
    }

    /// <summary>Builds one POST endpoint per configured route, adding one message per problem to <paramref name="errors"/>.</summary>
    private List<Endpoint> Build(List<string> errors)
    {
        var endpoints = new List<Endpoint>();
        var paths = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var route in _section.GetChildren())
        {
            var id = route.Key;
            var before = errors.Count;
            foreach (var field in route.GetChildren())
            {
                if (!Fields.Contains(field.Key, StringComparer.OrdinalIgnoreCase))
                {
                    errors.Add($"Request route '{id}': unknown field '{field.Key}'; the fields are {string.Join(", ", Fields)}.");
                }
            }

            RoutePattern? pattern = null;
            var path = route["Path"];
            if (string.IsNullOrWhiteSpace(path))
            {
                errors.Add($"Request route '{id}': 'Path' is missing; give the route pattern, for example '/api/quotes'.");
            }
            else
            {
                try
                {
                    pattern = RoutePatternFactory.Parse(path);
                    if (!paths.TryAdd(pattern.RawText ?? path, id))
                    {
                        errors.Add($"Request route '{id}': 'Path' '{path}' is also the path of request route '{paths[pattern.RawText ?? path]}'.");
                    }
                }
                catch (RoutePatternException ex)
                {
                    errors.Add($"Request route '{id}': 'Path' '{path}' is not a valid route pattern: {ex.Message}");
                }
            }

            RequestTarget? target = null;
            var request = route["Request"];
            if (string.IsNullOrWhiteSpace(request))
            {
                errors.Add($"Request route '{id}': 'Request' is missing; name a request type registered with AddRequestType<TRequest, TResponse>().");
            }
            else if (!_targets.TryGetValue(request, out target))
            {
                var known = _targets.Count == 0 ? "none is registered" : "registered: " + string.Join(", ", _targets.Keys.Order(StringComparer.OrdinalIgnoreCase));
                errors.Add($"Request route '{id}': 'Request' is '{request}', which is not a request type the gateway knows ({known}); register it with AddRequestType<TRequest, TResponse>().");
            }

            var options = new MessageEndpointOptions();
            if (route["Timeout"] is { } timeoutText)
            {
                if (TimeSpan.TryParse(timeoutText, CultureInfo.InvariantCulture, out var timeout) && timeout > TimeSpan.Zero)
                {
                    options.Timeout = timeout;
                }
                else
                {
                    errors.Add($"Request route '{id}': 'Timeout' is '{timeoutText}'; it must be a positive duration such as 00:00:05.");
                }
            }

            if (route["MaxBodyBytes"] is { } maxText)
            {
                if (int.TryParse(maxText, NumberStyles.Integer, CultureInfo.InvariantCulture, out var max) && max > 0)
                {
                    options.MaxBodyBytes = max;
                }
                else
                {
                    errors.Add($"Request route '{id}': 'MaxBodyBytes' is '{maxText}'; it must be a whole number from 1 to {int.MaxValue}.");
                }
            }

            var order = 0;
            if (route["Order"] is { } orderText && !int.TryParse(orderText, NumberStyles.Integer, CultureInfo.InvariantCulture, out order))
            {
                errors.Add($"Request route '{id}': 'Order' is '{orderText}'; it must be a whole number.");
            }

            if (!_hasRequestClient && target is not null)
            {
                errors.Add($"Request route '{id}': no IRequestClient is registered; call AddPatterns(...) with a transport and AddRequestResponse().");
            }

            if (errors.Count > before || pattern is null || target is null)
            {
                continue;
            }

            var builder = new RouteEndpointBuilder(target.CreateDelegate(pattern.RawText ?? path!, options), pattern, order)
            {
                DisplayName = $"Gateway request route '{id}': POST {pattern.RawText} to {target.Name}",
            };
            builder.Metadata.Add(new HttpMethodMetadata([HttpMethods.Post]));
            builder.Metadata.Add(options);
            AddPolicies(builder, route["AuthorizationPolicy"], route["RateLimiterPolicy"]);
            endpoints.Add(builder.Build());
        }

        return endpoints;
    }

    /// <summary>YARP's conventions: <c>Default</c> and <c>Anonymous</c> authorization, <c>Default</c> and <c>Disable</c> rate limiting, else a named policy.</summary>
    private static void AddPolicies(RouteEndpointBuilder builder, string? authorization, string? rateLimiter)
    {
        if (!string.IsNullOrEmpty(authorization))
        {
            builder.Metadata.Add(
                string.Equals(authorization, "Anonymous", StringComparison.OrdinalIgnoreCase) ? new AllowAnonymousAttribute()
                : string.Equals(authorization, "Default", StringComparison.OrdinalIgnoreCase) ? new AuthorizeAttribute()
                : new AuthorizeAttribute(authorization));
        }

        if (!string.IsNullOrEmpty(rateLimiter) && !string.Equals(rateLimiter, "Default", StringComparison.OrdinalIgnoreCase))
        {
            builder.Metadata.Add(
                string.Equals(rateLimiter, "Disable", StringComparison.OrdinalIgnoreCase) ? new DisableRateLimitingAttribute() : new EnableRateLimitingAttribute(rateLimiter));
        }
    }
}
