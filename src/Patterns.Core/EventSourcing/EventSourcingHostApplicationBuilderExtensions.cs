using Microsoft.Extensions.DependencyInjection;
using Patterns.EventSourcing;

namespace Microsoft.Extensions.Hosting;

/// <summary>Short form of the event-sourcing registration on an <see cref="IHostApplicationBuilder"/>.</summary>
public static class EventSourcingHostApplicationBuilderExtensions
{
    /// <summary>Adds event sourcing (see <see cref="EventSourcingServiceCollectionExtensions.AddEventSourcing"/>).</summary>
    /// <param name="builder">The host builder.</param>
    /// <param name="configure">Chooses the store and registers event types, aggregates, projections and subscriptions.</param>
    /// <returns>The event-sourcing builder.</returns>
    public static EventSourcingBuilder AddEventSourcing(this IHostApplicationBuilder builder, Action<EventSourcingBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Services.AddEventSourcing(configure);
    }
}
