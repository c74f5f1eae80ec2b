using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Patterns.Consuming;
using Patterns.Hosting;
using Patterns.Messaging;
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

    /// <summary>Gets or sets the root services, handed to a <see cref="RequestContext"/> until a scope replaces them.</summary>
    public IServiceProvider Services { get; set; } = EmptyServices.Instance;

    /// <summary>Gets the queue requests of this type travel on, also the consumer group filters see.</summary>
    public string Queue { get; private set; } = "";

    /// <summary>Creates the consumer that answers this request type when requests travel over a transport.</summary>
    public abstract DeliveryHandler CreateResponder(MessageBus bus, IMessageSerializer serializer, ILogger logger);

    /// <summary>Sets what the entry needs once the host's services exist: the root services, the request queue and the consume filters.</summary>
    public virtual void Configure(IServiceProvider services, string queue, IReadOnlyList<Consuming.IConsumeFilter> filters)
    {
        Services = services;
        Queue = queue;
    }
}

/// <summary>A handler entry seen through its response type only: lets a request whose type is known at run time only (<see cref="IRequest{TResponse}"/>) reach its typed entry without reflection.</summary>
internal abstract class RequestHandlerEntry<TResponse>(string handlerName, ResiliencePipeline? pipeline)
    : RequestHandlerEntry(handlerName, pipeline)
{
    public override Type ResponseType => typeof(TResponse);

    /// <summary>Sends <paramref name="request"/> through <paramref name="client"/> with this entry's request type.</summary>
    public abstract ValueTask<Response<TResponse>> SendThroughAsync(RequestClient client, object request, in MessageOptions options, TimeSpan timeout, CancellationToken cancellationToken);
}

internal abstract class RequestHandlerEntry<TRequest, TResponse>(string handlerName, ResiliencePipeline? pipeline, bool wantsContext)
    : RequestHandlerEntry<TResponse>(handlerName, pipeline)
    where TRequest : notnull
{
    public override Type RequestType => typeof(TRequest);

    /// <summary>Gets a value indicating whether the handler takes a <see cref="RequestContext"/>; when not, callers pass <see langword="null"/> and build none.</summary>
    public bool WantsContext { get; } = wantsContext;

    /// <summary>
    /// The end of the filter pipeline: the handler's call. A filter may pass its <c>next</c> any context: one that is not
    /// a request context of this entry's types is refused (FilteredRequest is sealed, so the check is one compare), and
    /// never runs another message's handler.
    /// </summary>
    private static readonly ConsumeDelegate s_handler =
        static context => context is FilteredRequest own ? own.CallHandlerAsync() : ConsumeFilterChain.ThrowForeignContext(context, typeof(TRequest));

    private ConsumeDelegate? _filters;

    /// <summary>Gets a value indicating whether consume filters run around this handler.</summary>
    public bool HasFilters => _filters is not null;

    /// <summary>Gets a value indicating whether an in-process call may invoke the handler directly: no resilience pipeline, no context, no filters.</summary>
    public bool IsDirect { get; private set; }

    public override DeliveryHandler CreateResponder(MessageBus bus, IMessageSerializer serializer, ILogger logger) =>
        new RequestResponder<TRequest, TResponse>(this, bus, serializer, logger).HandleAsync;

    public override void Configure(IServiceProvider services, string queue, IReadOnlyList<IConsumeFilter> filters)
    {
        base.Configure(services, queue, filters);
        _filters = filters.Count == 0 ? null : ConsumeFilterChain.Build(filters, s_handler);
        IsDirect = Pipeline is null && !WantsContext && _filters is null;
    }

    /// <summary>Calls the handler through the consume filters (when any are registered) and its resilience pipeline.</summary>
    /// <param name="request">The request.</param>
    /// <param name="context">The handler's context, when it takes one.</param>
    /// <param name="envelope">The request's envelope, which the filters see.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The handler's response.</returns>
    public ValueTask<TResponse> InvokeFilteredAsync(TRequest request, RequestContext? context, in Envelope envelope, CancellationToken cancellationToken) =>
        _filters is { } filters
            ? InvokeThroughFiltersAsync(filters, new FilteredRequest(this, request, context, envelope, cancellationToken))
            : InvokeResilientAsync(request, context, cancellationToken);

    private static async ValueTask<TResponse> InvokeThroughFiltersAsync(ConsumeDelegate filters, FilteredRequest call)
    {
        await filters(call).ConfigureAwait(false);
        return call.Answered
            ? call.Response
            : throw new InvalidOperationException(
                $"A consume filter returned without calling next for request '{typeof(TRequest).Name}' (handler {call.Entry.HandlerName}), so there is no response. To refuse a request, throw from the filter.");
    }

    /// <summary>One request on its way through the filters; the terminal call keeps the handler's response.</summary>
    private sealed class FilteredRequest(RequestHandlerEntry<TRequest, TResponse> entry, TRequest request, RequestContext? context, in Envelope envelope, CancellationToken cancellationToken)
        : ConsumeContext(envelope, entry.Queue, entry.Queue, entry.HandlerName, context?.Services ?? entry.Services, cancellationToken)
    {
        public RequestHandlerEntry<TRequest, TResponse> Entry => entry;

        public TResponse Response { get; private set; } = default!;

        public bool Answered { get; private set; }

        public override object Message => request;

        public override Type MessageType => typeof(TRequest);

        public async ValueTask CallHandlerAsync()
        {
            Response = await entry.InvokeResilientAsync(request, context, CancellationToken).ConfigureAwait(false);
            Answered = true;
        }
    }

    public override ValueTask<Response<TResponse>> SendThroughAsync(RequestClient client, object request, in MessageOptions options, TimeSpan timeout, CancellationToken cancellationToken) =>
        client.GetResponseCoreAsync<TRequest, TResponse>((TRequest)request, options, timeout, cancellationToken);

    /// <summary>Calls the handler once; may throw synchronously.</summary>
    public abstract ValueTask<TResponse> InvokeAsync(TRequest request, RequestContext? context, CancellationToken cancellationToken);

    /// <summary>
    /// Makes the call a direct in-process request uses (only when <see cref="IsDirect"/>: no context, filters or pipeline),
    /// the same as <see cref="InvokeAsync"/> without a context. Entries whose handler is fixed hand out the handler's own
    /// method, so a call is one delegate invocation rather than a virtual call and an interface dispatch; the others
    /// (a handler resolved per call) return <see langword="null"/> and are called through <see cref="InvokeAsync"/>.
    /// </summary>
    /// <returns>The call, or <see langword="null"/>.</returns>
    public virtual Func<TRequest, CancellationToken, ValueTask<TResponse>>? CreateDirectCall() => null;

    /// <summary>Calls the handler through its resilience pipeline when it has one.</summary>
    public ValueTask<TResponse> InvokeResilientAsync(TRequest request, RequestContext? context, CancellationToken cancellationToken) =>
        Pipeline is null
            ? InvokeAsync(request, context, cancellationToken)
            : Pipeline.ExecuteAsync(static (s, ct) => s.Entry.InvokeAsync(s.Request, s.Context, ct), (Entry: this, Request: request, Context: context), cancellationToken);
}

internal sealed class DelegateRequestHandlerEntry<TRequest, TResponse>(
    Func<TRequest, CancellationToken, ValueTask<TResponse>> handler, string name, ResiliencePipeline? pipeline)
    : RequestHandlerEntry<TRequest, TResponse>(name, pipeline, wantsContext: false)
    where TRequest : notnull
{
    public override ValueTask<TResponse> InvokeAsync(TRequest request, RequestContext? context, CancellationToken cancellationToken) => handler(request, cancellationToken);

    public override Func<TRequest, CancellationToken, ValueTask<TResponse>>? CreateDirectCall() => handler;
}

internal sealed class ContextDelegateRequestHandlerEntry<TRequest, TResponse>(
    Func<TRequest, RequestContext, CancellationToken, ValueTask<TResponse>> handler, string name, ResiliencePipeline? pipeline)
    : RequestHandlerEntry<TRequest, TResponse>(name, pipeline, wantsContext: true)
    where TRequest : notnull
{
    public override ValueTask<TResponse> InvokeAsync(TRequest request, RequestContext? context, CancellationToken cancellationToken) => handler(request, context!, cancellationToken);
}

internal sealed class SingletonRequestHandlerEntry<TRequest, TResponse>(IRequestHandler<TRequest, TResponse> handler, ResiliencePipeline? pipeline)
    : RequestHandlerEntry<TRequest, TResponse>(handler.GetType().Name, pipeline, handler is IRequestContextHandler<TRequest, TResponse>)
    where TRequest : notnull
{
    public override ValueTask<TResponse> InvokeAsync(TRequest request, RequestContext? context, CancellationToken cancellationToken) =>
        RequestHandlerCall.Invoke(handler, request, context, cancellationToken);

    // Without a context RequestHandlerCall.Invoke calls HandleAsync: bound here once, the implementation is resolved now.
    public override Func<TRequest, CancellationToken, ValueTask<TResponse>>? CreateDirectCall() => handler.HandleAsync;
}

internal sealed class ScopedRequestHandlerEntry<TRequest, TResponse, [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
    IServiceScopeFactory scopes, ResiliencePipeline? pipeline)
    : RequestHandlerEntry<TRequest, TResponse>(typeof(THandler).Name, pipeline, typeof(IRequestContextHandler<TRequest, TResponse>).IsAssignableFrom(typeof(THandler)))
    where TRequest : notnull
    where THandler : class, IRequestHandler<TRequest, TResponse>
{
    public override async ValueTask<TResponse> InvokeAsync(TRequest request, RequestContext? context, CancellationToken cancellationToken)
    {
        var scope = scopes.CreateAsyncScope();
        await using (scope.ConfigureAwait(false))
        {
            context?.UseScope(scope.ServiceProvider);
            return await RequestHandlerCall.Invoke(scope.ServiceProvider.GetRequiredService<THandler>(), request, context, cancellationToken).ConfigureAwait(false);
        }
    }
}

internal static class RequestHandlerCall
{
    /// <summary>Calls the overload that takes the context when the handler has one and a context was built.</summary>
    public static ValueTask<TResponse> Invoke<TRequest, TResponse>(IRequestHandler<TRequest, TResponse> handler, TRequest request, RequestContext? context, CancellationToken cancellationToken) =>
        context is not null && handler is IRequestContextHandler<TRequest, TResponse> contextual
            ? contextual.HandleAsync(request, context, cancellationToken)
            : handler.HandleAsync(request, cancellationToken);
}

internal sealed class EmptyServices : IServiceProvider
{
    public static readonly EmptyServices Instance = new();

    public object? GetService(Type serviceType) => null;
}
