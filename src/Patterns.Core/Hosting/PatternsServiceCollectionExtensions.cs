using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Patterns.Consuming;
using Patterns.Health;
using Patterns.Hosting;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;
using Patterns.Serialization;
using Patterns.Transport;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers Patterns on an <see cref="IServiceCollection"/>. Every method is idempotent: calling it again adds registrations but never duplicates the shared services.</summary>
public static class PatternsServiceCollectionExtensions
{
    /// <summary>Adds the shared Patterns services (in-memory transport, JSON serializer, hosted consumers) and configures them.</summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Chooses the transport and serializer.</param>
    /// <returns>The builder, for plug-in extensions.</returns>
    public static PatternsBuilder AddPatterns(this IServiceCollection services, Action<PatternsBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var builder = new PatternsBuilder(services);
        if (!services.Any(d => d.ServiceType == typeof(PatternsMarker)))
        {
            services.AddSingleton<PatternsMarker>();
            services.AddOptions();
            services.TryAddSingleton(TimeProvider.System);
            services.TryAddSingleton<MessageTypeRegistry>();
            services.TryAddSingleton<IMessageSerializer>(static _ => new JsonMessageSerializer());
            services.TryAddSingleton<MessageTransport>(static sp => TransportDecorator.ApplyAll(
                InMemoryTransport.Create(
                    sp.GetRequiredService<IOptions<InMemoryTransportOptions>>().Value,
                    sp.GetRequiredService<TimeProvider>(),
                    LoggerFactory(sp)),
                sp));
            services.TryAddSingleton(static sp => new MessageBus(
                sp.GetRequiredService<MessageTransport>(), sp.GetRequiredService<MessageTypeRegistry>(), sp.GetRequiredService<TimeProvider>(), LoggerFactory(sp),
                new ConsumerPaths(() => sp.GetRequiredService<IOptions<PatternsOptions>>().Value, () => sp.GetService<Patterns.Storage.IInboxStore>(), sp.GetRequiredService<TimeProvider>(), LoggerFactory(sp))));
            services.TryAddSingleton<IPublisher>(static sp => sp.GetRequiredService<MessageBus>());
            services.TryAddSingleton<IQueueSender>(static sp => sp.GetRequiredService<MessageBus>());
            services.TryAddSingleton<IDeadLetterQueue>(static sp => sp.GetRequiredService<MessageBus>());
            services.TryAddSingleton(static sp => new RequestClient(
                sp.GetRequiredService<IOptions<MessagingTopology>>(), sp, sp.GetRequiredService<MessageBus>(), sp.GetRequiredService<IMessageSerializer>(),
                sp.GetRequiredService<IOptions<RequestResponseOptions>>(), LoggerFactory(sp)));
            services.TryAddSingleton<IRequestClient>(static sp => sp.GetRequiredService<RequestClient>());

            services.AddOptions<MessagingTopology>().ValidateOnStart();
            services.AddOptions<PatternsOptions>().ValidateOnStart();
            services.AddOptions<RequestResponseOptions>().ValidateOnStart();
            services.AddOptions<InMemoryTransportOptions>().ValidateOnStart();
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<MessagingTopology>, TopologyValidator>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<PatternsOptions>, PatternsOptionsValidator>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<RequestResponseOptions>, RequestResponseOptionsValidator>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<InMemoryTransportOptions>, InMemoryTransportOptionsValidator>());
            services.TryAddSingleton(static sp => new MessagingHostedService(
                sp.GetRequiredService<IOptions<MessagingTopology>>(), sp, sp.GetRequiredService<MessageBus>(), sp.GetRequiredService<RequestClient>(),
                sp.GetRequiredService<IMessageSerializer>(), sp.GetRequiredService<IOptions<PatternsOptions>>(), LoggerFactory(sp)));
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, MessagingHostedService>(static sp => sp.GetRequiredService<MessagingHostedService>()));
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, Patterns.Consuming.InboxPruner>(static sp => new Patterns.Consuming.InboxPruner(
                sp, sp.GetRequiredService<IOptions<PatternsOptions>>(), sp.GetRequiredService<TimeProvider>(), LoggerFactory(sp))));
            services.TryAddSingleton(static sp => new PatternsTransportHealthCheck(sp.GetRequiredService<MessageTransport>()));
            services.TryAddSingleton(static sp => new PatternsConsumersHealthCheck(sp.GetRequiredService<MessagingHostedService>()));
        }

        configure?.Invoke(builder);
        return builder;
    }

    /// <summary>Adds request-response: <see cref="IRequestClient"/> and the handlers registered in <paramref name="configure"/>.</summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Registers handlers.</param>
    /// <returns>The builder.</returns>
    public static RequestResponseBuilder AddRequestResponse(this IServiceCollection services, Action<RequestResponseBuilder>? configure = null)
    {
        services.AddPatterns();
        var builder = new RequestResponseBuilder(services);
        configure?.Invoke(builder);
        return builder;
    }

    /// <summary>Adds pub/sub: <see cref="IPublisher"/> and the subscriptions registered in <paramref name="configure"/>.</summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Registers subscriptions.</param>
    /// <returns>The builder.</returns>
    public static PubSubBuilder AddPubSub(this IServiceCollection services, Action<PubSubBuilder>? configure = null)
    {
        services.AddPatterns();
        var builder = new PubSubBuilder(services);
        configure?.Invoke(builder);
        return builder;
    }

    /// <summary>Adds message queues: <see cref="IQueueSender"/>, <see cref="IDeadLetterQueue"/>, and the queues and consumers registered in <paramref name="configure"/>.</summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Declares queues and registers consumers.</param>
    /// <returns>The builder.</returns>
    public static MessageQueueBuilder AddMessageQueue(this IServiceCollection services, Action<MessageQueueBuilder>? configure = null)
    {
        services.AddPatterns();
        var builder = new MessageQueueBuilder(services);
        configure?.Invoke(builder);
        return builder;
    }

    internal static ILoggerFactory LoggerFactory(IServiceProvider services) =>
        services.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance;

    private sealed class PatternsMarker;
}
