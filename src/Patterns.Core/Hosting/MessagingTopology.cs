using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.RequestResponse;
using Patterns.Resilience;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Hosting;

/// <summary>Everything registered through the pattern builders; validated at start and run by <see cref="MessagingHostedService"/>.</summary>
internal sealed class MessagingTopology
{
    public List<QueueRegistration> Queues { get; } = [];

    public List<ConsumerRegistration> Consumers { get; } = [];

    public List<RequestHandlerRegistration> RequestHandlers { get; } = [];
}

internal sealed record QueueRegistration(string Name, QueueOptions Options);

internal sealed class ConsumerRegistration
{
    public required AddressKind Kind { get; init; }

    public required string Address { get; init; }

    public required Type MessageType { get; init; }

    public required string HandlerName { get; init; }

    /// <summary>Gets the handler's type; <see langword="null"/> for a delegate.</summary>
    public Type? HandlerType { get; init; }

    /// <summary>Gets the handler's full name, for messages that must tell handlers with the same short name apart.</summary>
    public string HandlerFullName => HandlerType?.FullName ?? HandlerName;

    public required ConsumerOptions Options { get; init; }

    /// <summary>Builds the delivery handler once the host's services exist.</summary>
    public required Func<ConsumerFactoryContext, DeliveryHandler> CreateHandler { get; init; }

    public string ConsumerGroup => Options.ConsumerGroup ?? (Kind == AddressKind.Queue ? Address : $"{Address}:{HandlerName}");

    public string Describe() => $"{(Kind == AddressKind.Queue ? "queue consumer" : "subscription")} '{ConsumerGroup}' ({HandlerName} on {(Kind == AddressKind.Queue ? "queue" : "topic")} '{Address}')";

    public static ConsumerRegistration Create<TMessage>(
        AddressKind kind, string? address, string handlerName, ConsumerOptions options, Func<IServiceProvider, MessageHandlerInvoker<TMessage>> invokerFactory, Type? handlerType = null)
    {
        return new ConsumerRegistration
        {
            Kind = kind,
            Address = address ?? string.Empty,
            MessageType = typeof(TMessage),
            HandlerName = handlerName,
            HandlerType = handlerType,
            Options = options,
            CreateHandler = context =>
            {
                var identity = new ConsumerIdentity(context.Source, context.ConsumerGroup, context.Services, context.Bus);
                var tags = Telemetry.PatternsTelemetry.Tags(context.Bus.Transport.SystemName, context.Source, context.ConsumerGroup);
                // The consumer's own workers are its only callers: with MaxConcurrentCalls below Concurrency they wait
                // for a permit rather than fail.
                var pipeline = PipelineFactory.Create(
                    options,
                    context.Bus.TimeProvider,
                    args =>
                    {
                        Telemetry.PatternsTelemetry.Retried.Add(1, tags);
                        HostingLog.Retrying(context.Logger, args.Outcome.Exception, handlerName, args.AttemptNumber + 1, args.RetryDelay);
                    },
                    callers: options.Concurrency);
                var filters = context.Services.GetServices<Consuming.IConsumeFilter>().ToArray();
                var invoker = Consuming.FilteredHandlerInvoker<TMessage>.Wrap(invokerFactory(context.Services), filters);
                var consumer = new MessageConsumer<TMessage>(invoker, identity, options, pipeline, context.Serializer, context.Logger, context.Stop);
                return consumer.HandleAsync;
            },
        };
    }
}

internal sealed record ConsumerFactoryContext(
    IServiceProvider Services, MessageBus Bus, IMessageSerializer Serializer, ILogger Logger, string Source, string ConsumerGroup, ConsumerStop? Stop = null);

internal sealed class RequestHandlerRegistration
{
    public required Type RequestType { get; init; }

    public required Type ResponseType { get; init; }

    public required string HandlerName { get; init; }

    public required RequestHandlerOptions Options { get; init; }

    public required Func<IServiceProvider, TimeProvider, RequestHandlerEntry> CreateEntry { get; init; }
}
