using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Patterns.Hosting;
using Patterns.Serialization;
using Patterns.Transport;
using Polly;

namespace Patterns.RequestResponse;

/// <summary>A registered request handler, ready to call.</summary>
internal abstract class RequestHandlerEntry
{
    protected RequestHandlerEntry(string handlerName, ResiliencePipeline? pipeline)
    {
        HandlerName = handlerName;
        Pipeline = pipeline;
    }

    public abstract Type RequestType { get; }

    public abstract Type ResponseType { get; }

    public string HandlerName { get; }

    public ResiliencePipeline? Pipeline { get; }

    /// <summary>Creates the consumer that answers this request type when requests travel over a transport.</summary>
    public abstract DeliveryHandler CreateResponder(MessageBus bus, IMessageSerializer serializer, ILogger logger);
}

internal abstract class RequestHandlerEntry<TRequest, TResponse>(string handlerName, ResiliencePipeline? pipeline)
    : RequestHandlerEntry(handlerName, pipeline)
{
    public override Type RequestType => typeof(TRequest);

    public override Type ResponseType => typeof(TResponse);

    public override DeliveryHandler CreateResponder(MessageBus bus, IMessageSerializer serializer, ILogger logger) =>
        new RequestResponder<TRequest, TResponse>(this, bus, serializer, logger).HandleAsync;

    /// <summary>Calls the handler once; may throw synchronously.</summary>
    public abstract ValueTask<TResponse> InvokeAsync(TRequest request, CancellationToken cancellationToken);

    /// <summary>Calls the handler through its resilience pipeline when it has one.</summary>
    public ValueTask<TResponse> InvokeResilientAsync(TRequest request, CancellationToken cancellationToken) =>
        Pipeline is null
            ? InvokeAsync(request, cancellationToken)
            : Pipeline.ExecuteAsync(static (s, ct) => s.Entry.InvokeAsync(s.Request, ct), (Entry: this, Request: request), cancellationToken);
}

internal sealed class DelegateRequestHandlerEntry<TRequest, TResponse>(
    Func<TRequest, CancellationToken, ValueTask<TResponse>> handler, string name, ResiliencePipeline? pipeline)
    : RequestHandlerEntry<TRequest, TResponse>(name, pipeline)
{
    public override ValueTask<TResponse> InvokeAsync(TRequest request, CancellationToken cancellationToken) => handler(request, cancellationToken);
}

internal sealed class SingletonRequestHandlerEntry<TRequest, TResponse>(IRequestHandler<TRequest, TResponse> handler, ResiliencePipeline? pipeline)
    : RequestHandlerEntry<TRequest, TResponse>(handler.GetType().Name, pipeline)
{
    public override ValueTask<TResponse> InvokeAsync(TRequest request, CancellationToken cancellationToken) => handler.HandleAsync(request, cancellationToken);
}

internal sealed class ScopedRequestHandlerEntry<TRequest, TResponse, [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
    IServiceScopeFactory scopes, ResiliencePipeline? pipeline)
    : RequestHandlerEntry<TRequest, TResponse>(typeof(THandler).Name, pipeline)
    where THandler : class, IRequestHandler<TRequest, TResponse>
{
    public override async ValueTask<TResponse> InvokeAsync(TRequest request, CancellationToken cancellationToken)
    {
        var scope = scopes.CreateAsyncScope();
        await using (scope.ConfigureAwait(false))
        {
            return await scope.ServiceProvider.GetRequiredService<THandler>().HandleAsync(request, cancellationToken).ConfigureAwait(false);
        }
    }
}
