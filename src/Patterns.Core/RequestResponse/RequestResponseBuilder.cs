using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Hosting;

namespace Patterns.RequestResponse;

/// <summary>Registers request handlers and configures the request client.</summary>
public sealed class RequestResponseBuilder
{
    internal RequestResponseBuilder(IServiceCollection services) => Services = services;

    /// <summary>Gets the service collection.</summary>
    public IServiceCollection Services { get; }

    /// <summary>Registers the handler of one request type.</summary>
    /// <typeparam name="TRequest">The request type.</typeparam>
    /// <typeparam name="TResponse">The response type.</typeparam>
    /// <typeparam name="THandler">The handler; resolved from a new scope per request unless registered as a singleton.</typeparam>
    /// <param name="configure">Adjusts its resilience pipeline.</param>
    /// <param name="lifetime">The handler's lifetime, when it is not registered already.</param>
    /// <returns>This builder.</returns>
    public RequestResponseBuilder AddHandler<TRequest, TResponse, [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
        Action<RequestHandlerOptions>? configure = null, ServiceLifetime lifetime = ServiceLifetime.Scoped)
        where TRequest : notnull
        where THandler : class, IRequestHandler<TRequest, TResponse>
    {
        var options = new RequestHandlerOptions();
        configure?.Invoke(options);
        var effective = HandlerRegistration.EnsureRegistered<THandler>(Services, lifetime);
        HandlerRegistration.AddRequestHandler<TRequest, TResponse>(
            Services,
            typeof(THandler).Name,
            options,
            effective == ServiceLifetime.Singleton
                ? static (sp, pipeline) => new SingletonRequestHandlerEntry<TRequest, TResponse>(sp.GetRequiredService<THandler>(), pipeline)
                : static (sp, pipeline) => new ScopedRequestHandlerEntry<TRequest, TResponse, THandler>(sp.GetRequiredService<IServiceScopeFactory>(), pipeline));
        return this;
    }

    /// <summary>Registers a delegate as the handler of one request type.</summary>
    /// <typeparam name="TRequest">The request type.</typeparam>
    /// <typeparam name="TResponse">The response type.</typeparam>
    /// <param name="handler">The handler.</param>
    /// <param name="configure">Adjusts its resilience pipeline.</param>
    /// <returns>This builder.</returns>
    public RequestResponseBuilder AddHandler<TRequest, TResponse>(
        Func<TRequest, CancellationToken, ValueTask<TResponse>> handler, Action<RequestHandlerOptions>? configure = null)
        where TRequest : notnull
    {
        ArgumentNullException.ThrowIfNull(handler);
        var options = new RequestHandlerOptions();
        configure?.Invoke(options);
        var name = $"delegate<{typeof(TRequest).Name}>";
        HandlerRegistration.AddRequestHandler<TRequest, TResponse>(
            Services, name, options, (_, pipeline) => new DelegateRequestHandlerEntry<TRequest, TResponse>(handler, name, pipeline));
        return this;
    }

    /// <summary>Registers a delegate that takes the request's context (headers, correlation id, response headers, follow-ups) as the handler of one request type.</summary>
    /// <typeparam name="TRequest">The request type.</typeparam>
    /// <typeparam name="TResponse">The response type.</typeparam>
    /// <param name="handler">The handler.</param>
    /// <param name="configure">Adjusts its resilience pipeline.</param>
    /// <returns>This builder.</returns>
    public RequestResponseBuilder AddHandler<TRequest, TResponse>(
        Func<TRequest, RequestContext, CancellationToken, ValueTask<TResponse>> handler, Action<RequestHandlerOptions>? configure = null)
        where TRequest : notnull
    {
        ArgumentNullException.ThrowIfNull(handler);
        var options = new RequestHandlerOptions();
        configure?.Invoke(options);
        var name = $"delegate<{typeof(TRequest).Name}>";
        HandlerRegistration.AddRequestHandler<TRequest, TResponse>(
            Services, name, options, (_, pipeline) => new ContextDelegateRequestHandlerEntry<TRequest, TResponse>(handler, name, pipeline));
        return this;
    }

    /// <summary>Adjusts the request client's options.</summary>
    /// <param name="configure">The adjustment.</param>
    /// <returns>This builder.</returns>
    public RequestResponseBuilder Configure(Action<RequestResponseOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        Services.Configure(configure);
        return this;
    }
}
