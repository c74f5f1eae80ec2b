using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Patterns.Hosting;
using Patterns.Streaming;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers streaming on an <see cref="IServiceCollection"/>. Idempotent: a second call adds pipelines but never duplicates the shared services.</summary>
public static class StreamingServiceCollectionExtensions
{
    /// <summary>Adds streaming: the pipelines registered in <paramref name="configure"/> run as hosted services, with a durable <see cref="StoreStreamSnapshotStore"/> when the store chosen in <c>AddEventSourcing</c> has units of work, otherwise an in-memory <see cref="IStreamSnapshotStore"/>, unless another is registered.</summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Registers pipelines.</param>
    /// <returns>The builder.</returns>
    public static StreamingBuilder AddStreaming(this IServiceCollection services, Action<StreamingBuilder>? configure = null)
    {
        services.AddPatterns();
        if (!services.Any(d => d.ServiceType == typeof(StreamingMarker)))
        {
            services.AddSingleton<StreamingMarker>();
            services.TryAddSingleton<IStreamSnapshotStore>(static sp => StreamSnapshotStores.Default(sp));
            services.AddOptions<StreamingTopology>().ValidateOnStart();
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<StreamingTopology>, StreamingTopologyValidator>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, StreamingHostedService>(static sp => new StreamingHostedService(
                sp.GetRequiredService<IOptions<StreamingTopology>>(),
                sp,
                sp.GetRequiredService<IOptions<PatternsOptions>>(),
                sp.GetRequiredService<TimeProvider>(),
                PatternsServiceCollectionExtensions.LoggerFactory(sp))));
        }

        var builder = new StreamingBuilder(services);
        configure?.Invoke(builder);
        return builder;
    }

    private sealed class StreamingMarker;
}
