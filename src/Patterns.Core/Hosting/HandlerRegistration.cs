using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Patterns.Messaging;
using Patterns.RequestResponse;

namespace Patterns.Hosting;

internal static class HandlerRegistration
{
    public static Func<IServiceProvider, MessageHandlerInvoker<TMessage>> Register<TMessage, [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
        IServiceCollection services, ServiceLifetime lifetime)
        where THandler : class, IMessageHandler<TMessage>
    {
        var effective = EnsureRegistered<THandler>(services, lifetime);
        return effective == ServiceLifetime.Singleton
            ? static sp => new SingletonHandlerInvoker<TMessage>(sp.GetRequiredService<THandler>())
            : static sp => new ScopedHandlerInvoker<TMessage, THandler>(sp.GetRequiredService<IServiceScopeFactory>());
    }

    public static ServiceLifetime EnsureRegistered<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
        IServiceCollection services, ServiceLifetime lifetime)
        where THandler : class
    {
        foreach (var descriptor in services)
        {
            if (descriptor.ServiceType == typeof(THandler) && !descriptor.IsKeyedService)
            {
                return descriptor.Lifetime;
            }
        }

        services.TryAdd(new ServiceDescriptor(typeof(THandler), typeof(THandler), lifetime));
        return lifetime;
    }

    public static void AddRequestHandler<TRequest, TResponse>(
        IServiceCollection services, string handlerName, RequestHandlerOptions options, Func<IServiceProvider, Polly.ResiliencePipeline?, RequestHandlerEntry> create)
    {
        services.Configure<MessagingTopology>(t => t.RequestHandlers.Add(new RequestHandlerRegistration
        {
            RequestType = typeof(TRequest),
            ResponseType = typeof(TResponse),
            HandlerName = handlerName,
            Options = options,
            CreateEntry = (sp, time) => create(sp, Resilience.PipelineFactory.Create(options, time)),
        }));
    }
}
