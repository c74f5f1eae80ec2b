using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Messaging;

namespace Patterns.Hosting;

/// <summary>Calls the user's handler for one message: a delegate, a singleton, or a handler resolved in a new scope.</summary>
internal abstract class MessageHandlerInvoker<TMessage>
{
    public abstract string HandlerName { get; }

    public abstract ValueTask InvokeAsync(TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken);
}

/// <summary>Where a consumer reads from, for message contexts.</summary>
internal sealed record ConsumerIdentity(string Source, string ConsumerGroup, IServiceProvider Services, MessageBus Bus);

internal sealed class DelegateHandlerInvoker<TMessage>(Func<TMessage, MessageContext, CancellationToken, ValueTask> handler, string name)
    : MessageHandlerInvoker<TMessage>
{
    public override string HandlerName => name;

    public override ValueTask InvokeAsync(TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken) =>
        handler(message, new MessageContext(envelope, consumer.Source, consumer.ConsumerGroup, consumer.Services, consumer.Bus), cancellationToken);
}

internal sealed class SingletonHandlerInvoker<TMessage>(IMessageHandler<TMessage> handler) : MessageHandlerInvoker<TMessage>
{
    public override string HandlerName { get; } = handler.GetType().Name;

    public override ValueTask InvokeAsync(TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken) =>
        handler.HandleAsync(message, new MessageContext(envelope, consumer.Source, consumer.ConsumerGroup, consumer.Services, consumer.Bus), cancellationToken);
}

internal sealed class ScopedHandlerInvoker<TMessage, [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(IServiceScopeFactory scopes)
    : MessageHandlerInvoker<TMessage>
    where THandler : class, IMessageHandler<TMessage>
{
    public override string HandlerName => typeof(THandler).Name;

    public override ValueTask InvokeAsync(TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken) =>
        InvokeInScopeAsync(message, envelope, consumer, cancellationToken);

    private async ValueTask InvokeInScopeAsync(TMessage message, Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken)
    {
        var scope = scopes.CreateAsyncScope();
        await using (scope.ConfigureAwait(false))
        {
            var handler = scope.ServiceProvider.GetRequiredService<THandler>();
            await handler.HandleAsync(
                message,
                new MessageContext(envelope, consumer.Source, consumer.ConsumerGroup, scope.ServiceProvider, consumer.Bus),
                cancellationToken).ConfigureAwait(false);
        }
    }
}
