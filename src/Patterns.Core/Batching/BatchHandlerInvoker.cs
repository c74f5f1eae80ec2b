using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;

namespace Patterns.Batching;

/// <summary>Calls the user's batch handler: a delegate, a singleton, or a handler resolved in a new scope per batch.</summary>
internal abstract class BatchHandlerInvoker<TMessage>
{
    public abstract string HandlerName { get; }

    public abstract ValueTask InvokeAsync(Batch<TMessage> batch, CancellationToken cancellationToken);
}

internal sealed class DelegateBatchHandlerInvoker<TMessage>(BatchHandler<TMessage> handler, string name) : BatchHandlerInvoker<TMessage>
{
    public override string HandlerName => name;

    public override ValueTask InvokeAsync(Batch<TMessage> batch, CancellationToken cancellationToken) => handler(batch, cancellationToken);
}

internal sealed class SingletonBatchHandlerInvoker<TMessage>(IBatchHandler<TMessage> handler) : BatchHandlerInvoker<TMessage>
{
    public override string HandlerName { get; } = handler.GetType().Name;

    public override ValueTask InvokeAsync(Batch<TMessage> batch, CancellationToken cancellationToken) => handler.HandleAsync(batch, cancellationToken);
}

internal sealed class ScopedBatchHandlerInvoker<TMessage, [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(IServiceScopeFactory scopes)
    : BatchHandlerInvoker<TMessage>
    where THandler : class, IBatchHandler<TMessage>
{
    public override string HandlerName => typeof(THandler).Name;

    public override async ValueTask InvokeAsync(Batch<TMessage> batch, CancellationToken cancellationToken)
    {
        var scope = scopes.CreateAsyncScope();
        await using (scope.ConfigureAwait(false))
        {
            await scope.ServiceProvider.GetRequiredService<THandler>().HandleAsync(batch, cancellationToken).ConfigureAwait(false);
        }
    }
}
