using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.EventSourcing.InMemory;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.EventSourcing;

public sealed partial class EventSourcingBuilder
{
    /// <summary>Registers the services every event-sourcing application shares; called once per service collection.</summary>
    internal void AddCoreServices()
    {
        Services.AddOptions<EventSourcingTopology>().ValidateOnStart();
        Services.AddOptions<EventSourcingOptions>().ValidateOnStart();
        Services.AddOptions<InMemoryEventStorageOptions>().ValidateOnStart();
        Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<EventSourcingTopology>, EventSourcingTopologyValidator>());
        Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<EventSourcingOptions>, EventSourcingOptionsValidator>());
        Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<InMemoryEventStorageOptions>, InMemoryEventStorageOptionsValidator>());

        Services.TryAddSingleton(static sp => new EventTypeMap(
            sp.GetRequiredService<MessageTypeRegistry>(), sp.GetRequiredService<IMessageSerializer>(), sp.GetRequiredService<IOptions<EventSourcingTopology>>().Value));
        Services.TryAddSingleton(static sp => new InlineProjector(
            [.. sp.GetRequiredService<IOptions<EventSourcingTopology>>().Value.Processors
                .Where(static p => p.IsInline)
                .Select(p => new InlineProjector.Entry(p.Name, p.CreateHandler(sp), [.. p.Options.EventTypes], p.Options.StreamPrefix))],
            sp.GetRequiredService<IMessageSerializer>(),
            sp.GetRequiredService<EventTypeMap>()));
        Services.TryAddSingleton<IEventStore>(static sp =>
        {
            var inline = sp.GetRequiredService<InlineProjector>();
            return new EventStore(
                sp.GetRequiredService<IEventStorage>(),
                sp.GetRequiredService<EventTypeMap>(),
                sp.GetRequiredService<TimeProvider>(),
                inline.Entries.Count == 0 ? null : inline,
                LoggerFactory(sp).CreateLogger<EventStore>());
        });
        Services.TryAddSingleton<IReadModels>(static sp => new ReadModels(sp.GetRequiredService<IDocumentStorage>(), sp.GetRequiredService<IMessageSerializer>()));
        Services.TryAddSingleton(static sp => new EventProcessorServices(
            sp.GetRequiredService<IEventStorage>(),
            sp.GetRequiredService<ICheckpointStore>(),
            sp.GetRequiredService<IDocumentStorage>(),
            sp.GetRequiredService<EventTypeMap>(),
            sp.GetRequiredService<IMessageSerializer>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<IOptions<EventSourcingOptions>>().Value,
            LoggerFactory(sp))
        {
            Units = sp.GetService<IUnitOfWorkStorage>(),
            Leases = sp.GetService<ILeaseStore>(),
            Classifiers = [.. new[] { sp.GetRequiredService<IEventStorage>() as IStorageErrorClassifier }.OfType<IStorageErrorClassifier>(), .. sp.GetServices<IStorageErrorClassifier>()],
        });
        Services.TryAddSingleton(static sp => new SubscriptionManager(
            sp.GetRequiredService<IOptions<EventSourcingTopology>>().Value, sp, sp.GetRequiredService<InlineProjector>(), sp.GetRequiredService<EventProcessorServices>()));
        Services.TryAddSingleton<IEventSubscriptions>(static sp => sp.GetRequiredService<SubscriptionManager>());
        Services.TryAddSingleton(static sp => new EventSubscriptionsHealthCheck(sp.GetRequiredService<IEventSubscriptions>()));
        Services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, EventSourcingHostedService>(static sp => new EventSourcingHostedService(
            sp.GetRequiredService<SubscriptionManager>(),
            sp.GetRequiredService<IOptions<Hosting.PatternsOptions>>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<IOptions<EventSourcingTopology>>().Value,
            sp.GetRequiredService<IMessageSerializer>())));
    }

    private static ILoggerFactory LoggerFactory(IServiceProvider services) =>
        Microsoft.Extensions.DependencyInjection.PatternsServiceCollectionExtensions.LoggerFactory(services);
}
