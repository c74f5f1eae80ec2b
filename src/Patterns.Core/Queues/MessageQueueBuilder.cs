using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.Queues;

/// <summary>Declares point-to-point queues and registers their competing consumers.</summary>
public sealed class MessageQueueBuilder
{
    internal MessageQueueBuilder(IServiceCollection services) => Services = services;

    /// <summary>Gets the service collection.</summary>
    public IServiceCollection Services { get; }

    /// <summary>Declares a queue.</summary>
    /// <param name="name">The queue name.</param>
    /// <param name="configure">Adjusts its capacity and full mode.</param>
    /// <returns>This builder.</returns>
    public MessageQueueBuilder AddQueue(string name, Action<QueueOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(name);
        var options = new QueueOptions();
        configure?.Invoke(options);
        Services.Configure<MessagingTopology>(t => t.Queues.Add(new QueueRegistration(name, options)));
        return this;
    }

    /// <summary>Adds a consumer of a queue. Set <see cref="ConsumerOptions.Concurrency"/> for N competing workers; each message goes to exactly one.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <typeparam name="THandler">The handler; resolved from a new scope per message unless registered as a singleton.</typeparam>
    /// <param name="queue">The queue; declared with default options if <see cref="AddQueue"/> did not declare it.</param>
    /// <param name="configure">Adjusts the consumer's options.</param>
    /// <param name="lifetime">The handler's lifetime, when it is not registered already.</param>
    /// <returns>This builder.</returns>
    public MessageQueueBuilder AddConsumer<TMessage, [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
        string queue, Action<ConsumerOptions>? configure = null, ServiceLifetime lifetime = ServiceLifetime.Scoped)
        where THandler : class, IMessageHandler<TMessage>
    {
        var invoker = HandlerRegistration.Register<TMessage, THandler>(Services, lifetime);
        Add(queue, typeof(THandler).Name, configure, invoker);
        return this;
    }

    /// <summary>Adds a delegate consumer of a queue.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="queue">The queue; declared with default options if <see cref="AddQueue"/> did not declare it.</param>
    /// <param name="handler">The handler.</param>
    /// <param name="configure">Adjusts the consumer's options.</param>
    /// <returns>This builder.</returns>
    public MessageQueueBuilder AddConsumer<TMessage>(
        string queue, Func<TMessage, MessageContext, CancellationToken, ValueTask> handler, Action<ConsumerOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(handler);
        var name = $"delegate<{typeof(TMessage).Name}>";
        Add<TMessage>(queue, name, configure, _ => new DelegateHandlerInvoker<TMessage>(handler, name));
        return this;
    }

    private void Add<TMessage>(string queue, string handlerName, Action<ConsumerOptions>? configure, Func<IServiceProvider, MessageHandlerInvoker<TMessage>> invoker)
    {
        ArgumentNullException.ThrowIfNull(queue);
        var options = new ConsumerOptions();
        configure?.Invoke(options);
        Services.Configure<MessagingTopology>(t => t.Consumers.Add(ConsumerRegistration.Create(AddressKind.Queue, queue, handlerName, options, invoker)));
    }
}
