using Patterns.EventSourcing;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers event sourcing on an <see cref="IServiceCollection"/>. Calling it again adds registrations but never duplicates the shared services.</summary>
public static class EventSourcingServiceCollectionExtensions
{
    /// <summary>
    /// Adds event sourcing: the event store (in memory unless <paramref name="configure"/> chooses another) and the
    /// aggregates, projections and subscriptions registered in <paramref name="configure"/>.
    /// </summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Chooses the store and registers event types, aggregates, projections and subscriptions.</param>
    /// <returns>The builder.</returns>
    public static EventSourcingBuilder AddEventSourcing(this IServiceCollection services, Action<EventSourcingBuilder>? configure = null)
    {
        services.AddPatterns();
        var builder = new EventSourcingBuilder(services);
        if (!services.Any(static d => d.ServiceType == typeof(EventSourcingMarker)))
        {
            services.AddSingleton<EventSourcingMarker>();
            builder.UseInMemory();
            builder.AddCoreServices();
        }

        configure?.Invoke(builder);
        return builder;
    }

    private sealed class EventSourcingMarker;
}
