using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Patterns.EventSourcing.InMemory;
using Patterns.Storage;

namespace Patterns.EventSourcing;

/// <summary>
/// Configures event sourcing: the store, event types, upcasters, aggregates, projections and subscriptions.
/// Plug-in packages add their own <c>UseXxx</c> store methods to this builder as extension methods that call
/// <see cref="UseStorage{TStorage}"/>.
/// </summary>
public sealed partial class EventSourcingBuilder
{
    internal EventSourcingBuilder(IServiceCollection services) => Services = services;

    /// <summary>Gets the service collection, for plug-ins that register their own services.</summary>
    public IServiceCollection Services { get; }

    /// <summary>Stores everything in memory (the default): nothing survives the process.</summary>
    /// <param name="configure">Adjusts the store's options.</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder UseInMemory(Action<InMemoryEventStorageOptions>? configure = null)
    {
        if (configure is not null)
        {
            Services.Configure(configure);
        }

        return UseStorage(static sp => new InMemoryEventStorage(
            sp.GetRequiredService<IOptions<InMemoryEventStorageOptions>>().Value, sp.GetRequiredService<TimeProvider>()));
    }

    /// <summary>
    /// Uses a store built by <paramref name="factory"/> for events, checkpoints, snapshots and read-model
    /// documents, and for inbox entries, units of work, the outbox and leases when it implements <see cref="IInboxStore"/>,
    /// <see cref="IUnitOfWorkStorage"/>, <see cref="IOutboxStore"/> and <see cref="ILeaseStore"/>; it replaces the store
    /// chosen before. This is how a plug-in package adds its store, from a <c>UseXxx</c> extension method.
    /// </summary>
    /// <typeparam name="TStorage">The store type.</typeparam>
    /// <param name="factory">Creates the store from the application's services; called once, on first use.</param>
    /// <returns>This builder.</returns>
    /// <remarks>
    /// The store is registered as a singleton of <typeparamref name="TStorage"/> and resolved through
    /// <see cref="IEventStorage"/>, <see cref="ICheckpointStore"/>, <see cref="ISnapshotStorage"/>,
    /// <see cref="IDocumentStorage"/> and, when implemented, <see cref="IInboxStore"/>, <see cref="IUnitOfWorkStorage"/>,
    /// <see cref="IOutboxStore"/> and <see cref="ILeaseStore"/>. The container disposes
    /// it when the host stops; it may call <c>Dispose</c> once per interface, so make disposal idempotent.
    /// </remarks>
    public EventSourcingBuilder UseStorage<TStorage>(Func<IServiceProvider, TStorage> factory)
        where TStorage : class, IEventStorage, ICheckpointStore, ISnapshotStorage, IDocumentStorage
    {
        ArgumentNullException.ThrowIfNull(factory);
        Services.Replace(ServiceDescriptor.Singleton(factory));
        Services.Replace(ServiceDescriptor.Singleton<IEventStorage>(static sp => sp.GetRequiredService<TStorage>()));
        Services.Replace(ServiceDescriptor.Singleton<ICheckpointStore>(static sp => sp.GetRequiredService<TStorage>()));
        Services.Replace(ServiceDescriptor.Singleton<ISnapshotStorage>(static sp => sp.GetRequiredService<TStorage>()));
        Services.Replace(ServiceDescriptor.Singleton<IDocumentStorage>(static sp => sp.GetRequiredService<TStorage>()));
        ForwardIfImplemented<TStorage, IInboxStore>();
        ForwardIfImplemented<TStorage, IUnitOfWorkStorage>();
        ForwardIfImplemented<TStorage, IOutboxStore>();
        ForwardIfImplemented<TStorage, ILeaseStore>();

        return this;
    }

    private void ForwardIfImplemented<TStorage, TService>()
        where TStorage : class
        where TService : class
    {
        Services.RemoveAll<TService>();
        if (typeof(TService).IsAssignableFrom(typeof(TStorage)))
        {
            Services.AddSingleton(static sp => (TService)(object)sp.GetRequiredService<TStorage>());
        }
    }
}
