using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Patterns.Batching;
using Patterns.Hosting;
using Patterns.Serialization;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers batching on an <see cref="IServiceCollection"/>. Idempotent: a second call adds registrations but never duplicates the shared services.</summary>
public static class BatchingServiceCollectionExtensions
{
    /// <summary>Adds batching: in-process batchers and batch consumers of queues and subscriptions, registered in <paramref name="configure"/>.</summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Registers batchers and batch consumers.</param>
    /// <returns>The builder.</returns>
    public static BatchingBuilder AddBatching(this IServiceCollection services, Action<BatchingBuilder>? configure = null)
    {
        services.AddPatterns();
        if (!services.Any(d => d.ServiceType == typeof(BatchingMarker)))
        {
            services.AddSingleton<BatchingMarker>();
            services.AddOptions<BatchingTopology>().ValidateOnStart();
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<BatchingTopology>, BatchingTopologyValidator>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, BatchingHostedService>(static sp => new BatchingHostedService(
                sp.GetRequiredService<IOptions<BatchingTopology>>(),
                sp,
                sp.GetRequiredService<MessageBus>(),
                sp.GetRequiredService<IMessageSerializer>(),
                sp.GetRequiredService<IOptions<PatternsOptions>>(),
                PatternsServiceCollectionExtensions.LoggerFactory(sp))));
        }

        var builder = new BatchingBuilder(services);
        configure?.Invoke(builder);
        return builder;
    }

    private sealed class BatchingMarker;
}
