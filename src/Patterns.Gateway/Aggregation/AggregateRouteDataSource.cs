using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Gateway.Configuration;
using Yarp.ReverseProxy;

namespace Patterns.Gateway.Aggregation;

/// <summary>
/// The aggregate (BFF) routes declared in configuration (the <c>Aggregates</c> section), the same as <c>MapAggregate</c>
/// in code: built and reloaded as <see cref="ConfigRouteDataSource"/> describes.
/// </summary>
internal sealed class AggregateRouteDataSource : ConfigRouteDataSource
{
    private static readonly string[] Fields = ["Path", "Legs", "PropagateHeaders", "MaxBodyBytes", "AuthorizationPolicy", "RateLimiterPolicy", "Order"];
    private static readonly string[] LegFields = ["Target", "Path", "Timeout", "OnFailure", "Method", "ForwardBody"];
    private static readonly string[] Methods = [HttpMethods.Get, HttpMethods.Post, HttpMethods.Put, HttpMethods.Patch, HttpMethods.Delete, HttpMethods.Head, HttpMethods.Options];

    private readonly IConfiguration _clusters;

    /// <param name="section">The <c>Aggregates</c> section.</param>
    /// <param name="clusters">The <c>Clusters</c> section beside it: a leg's <c>Target</c> may name one of them.</param>
    /// <param name="services">The application's services.</param>
    public AggregateRouteDataSource(IConfiguration section, IConfiguration clusters, IServiceProvider services)
        : base(section, "aggregate route", services)
    {
        _clusters = clusters;
        Initialize();
    }

    protected override List<Endpoint> Build(List<string> errors)
    {
        var endpoints = new List<Endpoint>();
        var paths = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var clusters = KnownClusters();
        foreach (var route in Section.GetChildren())
        {
            var reader = new RouteReader(Kind, route, errors);
            var before = errors.Count;
            reader.CheckFields(Fields);
            var pattern = reader.Path(paths, "/bff/home/{id}");
            var definition = new AggregateBuilder();
            if (reader.Int("MaxBodyBytes", 1, int.MaxValue) is { } max)
            {
                definition.MaxBody(max);
            }

            definition.PropagateHeaders(Values(route.GetSection("PropagateHeaders")));
            var order = reader.Int("Order", int.MinValue, int.MaxValue) ?? 0;
            var legs = route.GetSection("Legs").GetChildren().ToList();
            if (legs.Count == 0)
            {
                reader.Error("'Legs' is missing or empty; give at least one leg, for example \"Legs\": { \"user\": { \"Target\": \"users\", \"Path\": \"/users/{id}\" } }.");
            }

            foreach (var leg in legs)
            {
                AddLeg(reader, leg, pattern, clusters, definition);
            }

            ValidatePolicies(reader);
            if (errors.Count > before || pattern is null)
            {
                continue;
            }

            var endpoint = new AggregateEndpoint(pattern.RawText!, definition);
            endpoints.Add(Endpoint(
                endpoint.InvokeAsync, pattern, order, $"Gateway aggregate route '{route.Key}': {pattern.RawText} to {string.Join(", ", definition.Legs.Select(l => l.Name))}",
                [HttpMethods.Get, HttpMethods.Post], route));
        }

        return endpoints;
    }

    private static void AddLeg(RouteReader reader, IConfigurationSection leg, RoutePattern? pattern, HashSet<string> clusters, AggregateBuilder definition)
    {
        var where = $"leg '{leg.Key}': ";
        var problems = 0;
        void Error(string message)
        {
            problems++;
            reader.Error(where + message);
        }

        foreach (var field in leg.GetChildren())
        {
            if (!LegFields.Contains(field.Key, StringComparer.OrdinalIgnoreCase))
            {
                Error($"unknown field '{field.Key}'; the fields of a leg are {string.Join(", ", LegFields)}.");
            }
        }

        var target = leg["Target"];
        if (string.IsNullOrWhiteSpace(target))
        {
            Error("'Target' is missing; give a cluster id or an absolute http(s) address.");
        }
        else if (!IsAddress(target) && !clusters.Contains(target))
        {
            Error($"'Target' is '{target}', which is neither a cluster ({(clusters.Count == 0 ? "none is configured" : "known: " + string.Join(", ", clusters.Order(StringComparer.OrdinalIgnoreCase)))}) nor an absolute http(s) address.");
        }

        var path = leg["Path"];
        if (string.IsNullOrWhiteSpace(path))
        {
            Error("'Path' is missing; give the path on the target, for example '/users/{id}'.");
        }
        else if (pattern is not null)
        {
            foreach (var name in Placeholders(path))
            {
                if (pattern.GetParameter(name) is null)
                {
                    Error($"'Path' '{path}' uses '{{{name}}}', which is not a parameter of the route's path '{pattern.RawText}'.");
                }
            }
        }

        var options = new AggregateLegOptions();
        if (reader.Duration("Timeout", leg, where) is { } timeout)
        {
            options.Timeout = timeout;
        }
        else if (leg["Timeout"] is not null)
        {
            problems++;
        }

        if (leg["OnFailure"] is { } onFailure)
        {
            if (string.Equals(onFailure, nameof(LegFailurePolicy.Fail), StringComparison.OrdinalIgnoreCase))
            {
                options.OnFailure = LegFailurePolicy.Fail;
            }
            else if (string.Equals(onFailure, nameof(LegFailurePolicy.Omit), StringComparison.OrdinalIgnoreCase))
            {
                options.OnFailure = LegFailurePolicy.Omit;
            }
            else
            {
                Error($"'OnFailure' is '{onFailure}'; it must be 'Fail' or 'Omit'.");
            }
        }

        if (leg["Method"] is { } method)
        {
            var known = Methods.FirstOrDefault(m => string.Equals(m, method, StringComparison.OrdinalIgnoreCase));
            if (known is null)
            {
                Error($"'Method' is '{method}'; it must be one of {string.Join(", ", Methods)}.");
            }

            options.Method = known;
        }

        if (leg["ForwardBody"] is { } forward)
        {
            if (bool.TryParse(forward, out var value))
            {
                options.ForwardBody = value;
            }
            else
            {
                Error($"'ForwardBody' is '{forward}'; it must be true or false.");
            }
        }

        if (problems == 0 && target is not null && path is not null)
        {
            definition.Leg(leg.Key, target, path, o =>
            {
                o.Timeout = options.Timeout;
                o.OnFailure = options.OnFailure;
                o.Method = options.Method;
                o.ForwardBody = options.ForwardBody;
            });
        }
    }

    /// <summary>The clusters a leg may name: those of the configuration beside the aggregates, and those YARP has loaded (from code, say).</summary>
    private HashSet<string> KnownClusters()
    {
        var known = new HashSet<string>(_clusters.GetChildren().Select(c => c.Key), StringComparer.OrdinalIgnoreCase);
        if (Services.GetService<IProxyStateLookup>() is { } lookup)
        {
            foreach (var cluster in lookup.GetClusters())
            {
                known.Add(cluster.ClusterId);
            }
        }

        return known;
    }

    private static bool IsAddress(string target) =>
        Uri.TryCreate(target, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps);

    /// <summary>A list in configuration: an array (<c>["a", "b"]</c>) or one comma-separated value.</summary>
    private static string[] Values(IConfigurationSection section) =>
        section.Value is { } text
            ? text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            : [.. section.GetChildren().Select(c => c.Value).OfType<string>().Where(v => v.Length > 0)];

    private static IEnumerable<string> Placeholders(string path)
    {
        var i = 0;
        while ((i = path.IndexOf('{', i)) >= 0)
        {
            var close = path.IndexOf('}', i);
            if (close < 0)
            {
                yield break;
            }

            yield return path[(i + 1)..close];
            i = close + 1;
        }
    }
}
