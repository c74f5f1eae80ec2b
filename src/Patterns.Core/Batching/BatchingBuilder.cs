using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Patterns.Hosting;
using Patterns.Transport;

namespace Patterns.Batching;

/// <summary>Registers in-process batchers and batch consumers of queues and subscriptions.</summary>
/// <remarks>
/// Batchers are singletons (keyed by name when one is given) that start with the first resolve and are completed,
/// flushing what is left, when the host stops. Batch consumers start and stop with the host.
/// </remarks>
public sealed class BatchingBuilder
{
    internal BatchingBuilder(IServiceCollection services) => Services = services;

    /// <summary>Gets the service collection.</summary>
    public IServiceCollection Services { get; }

    /// <summary>
    /// Adds an in-process batcher, resolvable as <see cref="Batcher{T}"/> (or, with a <paramref name="name"/>, as a keyed
    /// service with that key).
    /// </summary>
    /// <typeparam name="T">The item type.</typeparam>
    /// <param name="handler">Handles each batch.</param>
    /// <param name="configure">Adjusts the batch options.</param>
    /// <param name="name">The service key and the batcher's name; <see langword="null"/> for the unkeyed <see cref="Batcher{T}"/>.</param>
    /// <param name="sizeOf">Measures an item for <see cref="BatchOptions.MaxSize"/>.</param>
    /// <param name="onDeadLetter">Receives items that still fail after their retries (and items the handler fails after the drain deadline); without it, documents in <see cref="BatchDeadLetters.Collection"/> when a store is configured, otherwise logged and counted.</param>
    /// <returns>This builder.</returns>
    public BatchingBuilder AddBatcher<T>(
        BatchHandler<T> handler,
        Action<BatchOptions>? configure = null,
        string? name = null,
        Func<T, long>? sizeOf = null,
        Func<FailedItem<T>, CancellationToken, ValueTask>? onDeadLetter = null)
    {
        ArgumentNullException.ThrowIfNull(handler);
        return AddBatcherCore(name, configure, sizeOf, (sp, options, time, logger, batcherName) =>
            Batcher.Create(handler, options, sizeOf, onDeadLetter ?? BatchDeadLetters.Default<T>(sp), time, logger, batcherName));
    }

    /// <summary>Adds an in-process batcher whose batches are handled by <typeparamref name="THandler"/>, resolved from a new scope per batch unless it is a singleton.</summary>
    /// <typeparam name="T">The item type.</typeparam>
    /// <typeparam name="THandler">The handler.</typeparam>
    /// <param name="configure">Adjusts the batch options.</param>
    /// <param name="name">The service key and the batcher's name; <see langword="null"/> for the unkeyed <see cref="Batcher{T}"/>.</param>
    /// <param name="sizeOf">Measures an item for <see cref="BatchOptions.MaxSize"/>.</param>
    /// <param name="onDeadLetter">Receives items that still fail after their retries.</param>
    /// <param name="lifetime">The handler's lifetime, when it is not registered already.</param>
    /// <returns>This builder.</returns>
    public BatchingBuilder AddBatcher<T, [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
        Action<BatchOptions>? configure = null,
        string? name = null,
        Func<T, long>? sizeOf = null,
        Func<FailedItem<T>, CancellationToken, ValueTask>? onDeadLetter = null,
        ServiceLifetime lifetime = ServiceLifetime.Scoped)
        where THandler : class, IBatchHandler<T>
    {
        var invoker = RegisterHandler<T, THandler>(lifetime);
        return AddBatcherCore(name, configure, sizeOf, (sp, options, time, logger, batcherName) =>
        {
            var handler = invoker(sp);
            return Batcher.Create<T>(handler.InvokeAsync, options, sizeOf, onDeadLetter ?? BatchDeadLetters.Default<T>(sp), time, logger, batcherName);
        });
    }

    /// <summary>Adds an in-process batcher that groups items by key: one key's items share batches, and one key's batches are handled in order.</summary>
    /// <typeparam name="T">The item type.</typeparam>
    /// <typeparam name="TKey">The key type.</typeparam>
    /// <param name="keySelector">Gets an item's key.</param>
    /// <param name="handler">Handles each batch.</param>
    /// <param name="configure">Adjusts the batch options.</param>
    /// <param name="name">The service key and the batcher's name; <see langword="null"/> for the unkeyed <see cref="Batcher{T}"/>.</param>
    /// <param name="sizeOf">Measures an item for <see cref="BatchOptions.MaxSize"/>.</param>
    /// <param name="onDeadLetter">Receives items that still fail after their retries (and items the handler fails after the drain deadline); without it, documents in <see cref="BatchDeadLetters.Collection"/> when a store is configured, otherwise logged and counted.</param>
    /// <returns>This builder.</returns>
    public BatchingBuilder AddBatcher<T, TKey>(
        Func<T, TKey> keySelector,
        BatchHandler<T> handler,
        Action<BatchOptions>? configure = null,
        string? name = null,
        Func<T, long>? sizeOf = null,
        Func<FailedItem<T>, CancellationToken, ValueTask>? onDeadLetter = null)
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(keySelector);
        ArgumentNullException.ThrowIfNull(handler);
        return AddBatcherCore(name, configure, sizeOf, (sp, options, time, logger, batcherName) =>
            Batcher.Create(keySelector, handler, options, sizeOf, onDeadLetter ?? BatchDeadLetters.Default<T>(sp), time, logger, batcherName));
    }

    /// <summary>
    /// Consumes a queue or a subscription in batches with a handler type. Each message is settled by its item's
    /// outcome: acknowledged, or retried in-process and then redelivered or dead-lettered.
    /// </summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <typeparam name="THandler">The handler; resolved from a new scope per batch unless registered as a singleton.</typeparam>
    /// <param name="source">The queue (<see cref="TransportAddress.Queue"/>) or topic pattern (<see cref="TransportAddress.Topic"/>).</param>
    /// <param name="configure">Adjusts the consumer's options.</param>
    /// <param name="sizeOf">Measures a message for <see cref="BatchOptions.MaxSize"/>; the serialized payload's length when <see langword="null"/>.</param>
    /// <param name="lifetime">The handler's lifetime, when it is not registered already.</param>
    /// <returns>This builder.</returns>
    public BatchingBuilder AddBatchHandler<TMessage, [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
        TransportAddress source,
        Action<BatchConsumerOptions>? configure = null,
        Func<TMessage, long>? sizeOf = null,
        ServiceLifetime lifetime = ServiceLifetime.Scoped)
        where THandler : class, IBatchHandler<TMessage>
    {
        var invoker = RegisterHandler<TMessage, THandler>(lifetime);
        return AddConsumer(source, typeof(THandler).Name, configure, sizeOf, invoker);
    }

    /// <summary>Consumes a queue or a subscription in batches with a delegate.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="source">The queue (<see cref="TransportAddress.Queue"/>) or topic pattern (<see cref="TransportAddress.Topic"/>).</param>
    /// <param name="handler">Handles each batch.</param>
    /// <param name="configure">Adjusts the consumer's options; give delegates a <see cref="BatchConsumerOptions.ConsumerGroup"/> so their dead letters have a stable address.</param>
    /// <param name="sizeOf">Measures a message for <see cref="BatchOptions.MaxSize"/>; the serialized payload's length when <see langword="null"/>.</param>
    /// <returns>This builder.</returns>
    public BatchingBuilder AddBatchHandler<TMessage>(
        TransportAddress source,
        BatchHandler<TMessage> handler,
        Action<BatchConsumerOptions>? configure = null,
        Func<TMessage, long>? sizeOf = null)
    {
        ArgumentNullException.ThrowIfNull(handler);
        var name = $"delegate<{typeof(TMessage).Name}>";
        return AddConsumer(source, name, configure, sizeOf, _ => new DelegateBatchHandlerInvoker<TMessage>(handler, name));
    }

    private Func<IServiceProvider, BatchHandlerInvoker<T>> RegisterHandler<T, [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(ServiceLifetime lifetime)
        where THandler : class, IBatchHandler<T>
    {
        var effective = HandlerRegistration.EnsureRegistered<THandler>(Services, lifetime);
        return effective == ServiceLifetime.Singleton
            ? static sp => new SingletonBatchHandlerInvoker<T>(sp.GetRequiredService<THandler>())
            : static sp => new ScopedBatchHandlerInvoker<T, THandler>(sp.GetRequiredService<IServiceScopeFactory>());
    }

    private BatchingBuilder AddBatcherCore<T>(
        string? name,
        Action<BatchOptions>? configure,
        Func<T, long>? sizeOf,
        Func<IServiceProvider, BatchOptions, TimeProvider, ILogger, string, Batcher<T>> create)
    {
        var options = new BatchOptions();
        configure?.Invoke(options);
        var batcherName = name ?? typeof(T).Name;
        Batcher<T> Factory(IServiceProvider sp) => create(
            sp,
            options,
            sp.GetRequiredService<TimeProvider>(),
            PatternsServiceCollectionExtensions.LoggerFactory(sp).CreateLogger("Patterns.Batching." + batcherName),
            batcherName);

        if (name is null)
        {
            Services.AddSingleton(Factory);
        }
        else
        {
            Services.AddKeyedSingleton(name, (sp, _) => Factory(sp));
        }

        Services.Configure<BatchingTopology>(t => t.Batchers.Add(new BatcherRegistration
        {
            Name = batcherName,
            ItemType = typeof(T),
            Options = options,
            HasSizeFunction = sizeOf is not null,
            Resolve = sp =>
            {
                var batcher = name is null ? sp.GetRequiredService<Batcher<T>>() : sp.GetRequiredKeyedService<Batcher<T>>(name);
                return batcher.CompleteAsync;
            },
        }));
        return this;
    }

    private BatchingBuilder AddConsumer<TMessage>(
        TransportAddress source,
        string handlerName,
        Action<BatchConsumerOptions>? configure,
        Func<TMessage, long>? sizeOf,
        Func<IServiceProvider, BatchHandlerInvoker<TMessage>> invoker)
    {
        var options = new BatchConsumerOptions();
        configure?.Invoke(options);
        Services.Configure<BatchingTopology>(t => t.Consumers.Add(new BatchConsumerRegistration
        {
            Address = source,
            MessageType = typeof(TMessage),
            HandlerName = handlerName,
            Options = options,
            HasSizeFunction = sizeOf is not null,
            Create = context => new BatchConsumerAdapter<TMessage>(new TransportBatchConsumer<TMessage>(
                FilteredBatchHandlerInvoker<TMessage>.Wrap(
                    invoker(context.Services),
                    context.Services.GetServices<Consuming.IConsumeFilter>().ToArray(),
                    source.Name,
                    context.ConsumerGroup,
                    context.Services),
                options, sizeOf, context.Bus, context.Serializer, context.Logger, source.Name, context.ConsumerGroup, context.Stop)),
        }));
        return this;
    }
}
