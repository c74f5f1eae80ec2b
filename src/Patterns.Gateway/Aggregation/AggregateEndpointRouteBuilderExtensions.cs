using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Patterns.Gateway;
using Patterns.Gateway.Aggregation;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Maps aggregate (backend-for-frontend) routes.</summary>
public static class AggregateEndpointRouteBuilderExtensions
{
    /// <summary>
    /// Maps <paramref name="pattern"/> (GET and POST) to an aggregate: every leg is called in parallel with the
    /// propagated headers, and their JSON answers are merged into one object keyed by leg name.
    /// </summary>
    /// <param name="endpoints">The endpoint route builder.</param>
    /// <param name="pattern">The route pattern; its route values fill the legs' path placeholders.</param>
    /// <param name="configure">Adds the legs.</param>
    /// <returns>The endpoint's convention builder.</returns>
    public static IEndpointConventionBuilder MapAggregate(this IEndpointRouteBuilder endpoints, string pattern, Action<AggregateBuilder> configure)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentException.ThrowIfNullOrEmpty(pattern);
        ArgumentNullException.ThrowIfNull(configure);
        var definition = new AggregateBuilder();
        configure(definition);
        if (definition.Legs.Count == 0)
        {
            throw new ArgumentException($"The aggregate '{pattern}' has no leg.", nameof(configure));
        }

        var endpoint = new AggregateEndpoint(pattern, definition);
        return endpoints.MapMethods(pattern, [HttpMethods.Get, HttpMethods.Post], endpoint.InvokeAsync);
    }
}
