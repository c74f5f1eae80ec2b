using System.Diagnostics.CodeAnalysis;
using Patterns.Messaging;

namespace Patterns.Consuming;

/// <summary>One message on its way through the consume filters to its handler.</summary>
/// <remarks>Valid until the pipeline's task completes; a filter must not keep it beyond that.</remarks>
public abstract class ConsumeContext
{
    private Dictionary<string, object?>? _items;

    private protected ConsumeContext(in Envelope envelope, string source, string consumerGroup, string handlerName, IServiceProvider services, CancellationToken cancellationToken) =>
        Enter(envelope, source, consumerGroup, handlerName, services, cancellationToken);

    /// <summary>Creates a context to be filled by <see cref="Enter"/> and reused once it is cleared by <see cref="Exit"/>.</summary>
    private protected ConsumeContext()
    {
        Source = ConsumerGroup = HandlerName = string.Empty;
        Services = EmptyServices.Instance;
    }

    /// <summary>Fills a reused context for the next message.</summary>
    [MemberNotNull(nameof(Source), nameof(ConsumerGroup), nameof(HandlerName), nameof(Services))]
    private protected void Enter(in Envelope envelope, string source, string consumerGroup, string handlerName, IServiceProvider services, CancellationToken cancellationToken)
    {
        Envelope = envelope;
        Source = source;
        ConsumerGroup = consumerGroup;
        HandlerName = handlerName;
        Services = services;
        CancellationToken = cancellationToken;
    }

    /// <summary>Drops what the last message left (its envelope, services and items), so a reused context holds nothing alive.</summary>
    private protected void Exit()
    {
        Envelope = default;
        Services = EmptyServices.Instance;
        CancellationToken = default;
        if (_items is { Count: > 0 } items)
        {
            items.Clear();
        }
    }

    /// <summary>Gets the message, deserialized.</summary>
    public abstract object Message { get; }

    /// <summary>Gets the message's type.</summary>
    public abstract Type MessageType { get; }

    /// <summary>Gets the envelope the message arrived in: id, correlation id, headers, delivery count.</summary>
    public Envelope Envelope { get; private set; }

    /// <summary>Gets the topic pattern or queue the message was consumed from.</summary>
    public string Source { get; private set; }

    /// <summary>Gets the consumer group handling the message.</summary>
    public string ConsumerGroup { get; private set; }

    /// <summary>Gets the handler's name (its type's name, or <c>delegate&lt;T&gt;</c>).</summary>
    public string HandlerName { get; private set; }

    /// <summary>Gets the application's services (the root provider; a scoped handler gets its own scope after the filters).</summary>
    public IServiceProvider Services { get; private set; }

    /// <summary>Gets the token the handler receives: cancelled when the consumer stops past its drain deadline, or at the message's deadline.</summary>
    public CancellationToken CancellationToken { get; private set; }

    /// <summary>Gets a bag for filters to pass values to later filters; created on first use.</summary>
    public IDictionary<string, object?> Items => _items ??= new Dictionary<string, object?>(StringComparer.Ordinal);

    private sealed class EmptyServices : IServiceProvider
    {
        public static readonly EmptyServices Instance = new();

        public object? GetService(Type serviceType) => null;
    }
}
