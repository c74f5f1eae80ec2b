using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.PubSub;

/// <summary>Registers pub/sub subscriptions.</summary>
public sealed class PubSubBuilder
{
    internal PubSubBuilder(IServiceCollection services) => Services = services;

    /// <summary>Gets the service collection.</summary>
    public IServiceCollection Services { get; }

    /// <summary>Subscribes a handler type to a topic (or topic pattern such as <c>orders.*</c>).</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <typeparam name="THandler">The handler; resolved from a new scope per message unless registered as a singleton.</typeparam>
    /// <param name="topic">The topic or pattern; the message type's name when <see langword="null"/>.</param>
    /// <param name="configure">Adjusts the subscription's options.</param>
    /// <param name="lifetime">The handler's lifetime, when it is not registered already.</param>
    /// <returns>This builder.</returns>
    public PubSubBuilder Subscribe<TMessage, [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
        string? topic = null, Action<ConsumerOptions>? configure = null, ServiceLifetime lifetime = ServiceLifetime.Scoped)
        where THandler : class, IMessageHandler<TMessage>
    {
        var invoker = HandlerRegistration.Register<TMessage, THandler>(Services, lifetime);
        Add(topic, typeof(THandler).Name, configure, invoker, typeof(THandler));
        return this;
    }

    /// <summary>Subscribes a delegate to a topic (or topic pattern such as <c>orders.*</c>).</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="handler">The handler.</param>
    /// <param name="topic">The topic or pattern; the message type's name when <see langword="null"/>.</param>
    /// <param name="configure">Adjusts the subscription's options; give delegates a <see cref="ConsumerOptions.ConsumerGroup"/> so their dead letters have a stable address.</param>
    /// <returns>This builder.</returns>
    public PubSubBuilder Subscribe<TMessage>(
        Func<TMessage, MessageContext, CancellationToken, ValueTask> handler, string? topic = null, Action<ConsumerOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(handler);
        var name = $"delegate<{typeof(TMessage).Name}>";
        Add<TMessage>(topic, name, configure, _ => new DelegateHandlerInvoker<TMessage>(handler, name));
        return this;
    }

    private void Add<TMessage>(
        string? topic, string handlerName, Action<ConsumerOptions>? configure, Func<IServiceProvider, MessageHandlerInvoker<TMessage>> invoker, Type? handlerType = null)
    {
        var options = new ConsumerOptions();
        configure?.Invoke(options);
        Services.Configure<MessagingTopology>(t =>
        {
            // The default topic is the message type's registered name, known only once the registry exists,
            // so it is resolved with the same rule here.
            var address = topic ?? MessageTypeNames.Default(typeof(TMessage));
            t.Consumers.Add(ConsumerRegistration.Create(AddressKind.Topic, address, handlerName, options, invoker, handlerType));
        });
    }
}
