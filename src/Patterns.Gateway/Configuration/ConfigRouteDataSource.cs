using System.Globalization;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Patterns.Gateway.Telemetry;
using Yarp.ReverseProxy.Configuration;

namespace Patterns.Gateway.Configuration;

/// <summary>The gateway section given to <see cref="GatewayBuilder.LoadFromConfig"/>: YARP's routes and clusters, and the gateway's own <c>Requests</c> and <c>Aggregates</c>.</summary>
internal sealed class GatewaySection(IConfiguration section)
{
    public IConfiguration Section { get; } = section;
}

/// <summary>
/// Endpoints declared in a section of the gateway's configuration (request routes, aggregate routes). They are built when
/// <c>MapGateway</c> runs — a bad entry fails the host, naming the route and the field — and rebuilt when the configuration
/// changes: a change with any problem is rejected whole, logged (event 1310), and the last good endpoints stay.
/// </summary>
internal abstract class ConfigRouteDataSource : EndpointDataSource, IDisposable
{
    private readonly IConfigValidator? _validator;
    private readonly Lock _lock = new();
    private IReadOnlyList<Endpoint> _endpoints = [];
    private CancellationTokenSource _changed = new();
    private IDisposable? _reloads;

    protected ConfigRouteDataSource(IConfiguration section, string kind, IServiceProvider services)
    {
        Section = section;
        Kind = kind;
        Services = services;
        _validator = services.GetService<IConfigValidator>();
        Logger = services.GetService<ILoggerFactory>()?.CreateLogger("Patterns.Gateway.ConfigRoutes") ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
    }

    /// <summary>Gets the section whose children are the routes.</summary>
    protected IConfiguration Section { get; }

    /// <summary>Gets what the routes are called in messages: <c>request route</c>, <c>aggregate route</c>.</summary>
    protected string Kind { get; }

    protected IServiceProvider Services { get; }

    private ILogger Logger { get; }

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
        _reloads?.Dispose();
        _changed.Dispose();
    }

    /// <summary>Builds the endpoints (throwing with every problem named) and starts following configuration changes. Called last by the derived constructor.</summary>
    protected void Initialize()
    {
        var errors = new List<string>();
        _endpoints = Build(errors);
        if (errors.Count > 0)
        {
            throw new InvalidOperationException($"Invalid gateway {Kind}s: " + string.Join(" ", errors));
        }

        _reloads = ChangeToken.OnChange(Section.GetReloadToken, Reload);
    }

    /// <summary>Builds one endpoint per configured route, adding one message per problem to <paramref name="errors"/>.</summary>
    protected abstract List<Endpoint> Build(List<string> errors);

    private void Reload()
    {
        var errors = new List<string>();
        var endpoints = Build(errors);
        if (errors.Count > 0)
        {
            GatewayLog.ConfigRoutesRejected(Logger, Kind + "s", string.Join(" ", errors));
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

    /// <summary>The fields of one route, read with a message per problem that names the route and the field.</summary>
    protected readonly struct RouteReader(string kind, IConfigurationSection route, List<string> errors)
    {
        public string Id => route.Key;

        public IConfigurationSection Route => route;

        /// <summary>The start of every message about this route: <c>Request route 'quotes'</c>.</summary>
        public string Label => char.ToUpperInvariant(kind[0]) + kind[1..] + " '" + route.Key + "'";

        public void Error(string message) => errors.Add(Label + ": " + message);

        public void CheckFields(IReadOnlyList<string> fields)
        {
            foreach (var field in route.GetChildren())
            {
                if (!fields.Contains(field.Key, StringComparer.OrdinalIgnoreCase))
                {
                    Error($"unknown field '{field.Key}'; the fields are {string.Join(", ", fields)}.");
                }
            }
        }

        /// <summary>The route pattern in <c>Path</c>, unique among <paramref name="paths"/> (pattern to route id).</summary>
        public RoutePattern? Path(Dictionary<string, string> paths, string example)
        {
            var path = route["Path"];
            if (string.IsNullOrWhiteSpace(path))
            {
                Error($"'Path' is missing; give the route pattern, for example '{example}'.");
                return null;
            }

            try
            {
                var pattern = RoutePatternFactory.Parse(path);
                if (!paths.TryAdd(pattern.RawText ?? path, route.Key))
                {
                    Error($"'Path' '{path}' is also the path of {kind} '{paths[pattern.RawText ?? path]}'.");
                }

                return pattern;
            }
            catch (RoutePatternException ex)
            {
                Error($"'Path' '{path}' is not a valid route pattern: {ex.Message}");
                return null;
            }
        }

        public TimeSpan? Duration(string field, IConfigurationSection? within = null, string? where = null)
        {
            if ((within ?? route)[field] is not { } text)
            {
                return null;
            }

            if (TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out var value) && value > TimeSpan.Zero)
            {
                return value;
            }

            Error($"{where}'{field}' is '{text}'; it must be a positive duration such as 00:00:05.");
            return null;
        }

        public int? Int(string field, int min, int max)
        {
            if (route[field] is not { } text)
            {
                return null;
            }

            if (int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) && value >= min && value <= max)
            {
                return value;
            }

            Error(min == int.MinValue ? $"'{field}' is '{text}'; it must be a whole number." : $"'{field}' is '{text}'; it must be a whole number from {min} to {max}.");
            return null;
        }
    }

    /// <summary>
    /// Checks the route's <c>AuthorizationPolicy</c> and <c>RateLimiterPolicy</c> against the policies the application
    /// registered, with YARP's own validator (the same check its proxy routes get), so an unknown name fails the load
    /// rather than the first request.
    /// </summary>
    protected void ValidatePolicies(RouteReader reader)
    {
        string? authorization = reader.Route["AuthorizationPolicy"], rateLimiter = reader.Route["RateLimiterPolicy"];
        if (_validator is null || (string.IsNullOrEmpty(authorization) && string.IsNullOrEmpty(rateLimiter)))
        {
            return;
        }

        var probe = new RouteConfig
        {
            RouteId = reader.Id,
            ClusterId = "-",
            Match = new RouteMatch { Path = "/" },
            AuthorizationPolicy = authorization,
            RateLimiterPolicy = rateLimiter,
        };
        foreach (var error in _validator.ValidateRouteAsync(probe).AsTask().GetAwaiter().GetResult())
        {
            reader.Error(error.Message);
        }
    }

    /// <summary>YARP's conventions: <c>Default</c> and <c>Anonymous</c> authorization, <c>Default</c> and <c>Disable</c> rate limiting, else a named policy.</summary>
    protected static void AddPolicies(RouteEndpointBuilder builder, IConfigurationSection route)
    {
        string? authorization = route["AuthorizationPolicy"], rateLimiter = route["RateLimiterPolicy"];
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

    /// <summary>An endpoint for <paramref name="pattern"/> answering <paramref name="methods"/>, with the route's policies.</summary>
    protected static Endpoint Endpoint(RequestDelegate handler, RoutePattern pattern, int order, string displayName, string[] methods, IConfigurationSection route, params object[] metadata)
    {
        var builder = new RouteEndpointBuilder(handler, pattern, order) { DisplayName = displayName };
        builder.Metadata.Add(new HttpMethodMetadata(methods));
        foreach (var item in metadata)
        {
            builder.Metadata.Add(item);
        }

        AddPolicies(builder, route);
        return builder.Build();
    }
}
