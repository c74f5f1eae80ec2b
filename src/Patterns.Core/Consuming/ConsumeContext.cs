using Patterns.Messaging;

namespace Patterns.Consuming;

/// <summary>One message on its way through the consume filters to its handler.</summary>
/// <remarks>Valid until the pipeline's task completes; a filter must not keep it beyond that.</remarks>
public abstract class ConsumeContext
{
    private Dictionary<string, object?>? _items;

    private protected ConsumeContext(in Envelope envelope, string source, string consumerGroup, string handlerName, IServiceProvider services, CancellationToken cancellationToken)
    {
        Envelope = envelope;
        Source = source;
        ConsumerGroup = consumerGroup;
        HandlerName = handlerName;
        Services = services;
        CancellationToken = cancellationToken;
    }

    /// <summary>Gets the message, deserialized.</summary>
    public abstract object Message { get; }

    /// <summary>Gets the message's type.</summary>
    public abstract Type MessageType { get; }

    /// <summary>Gets the envelope the message arrived in: id, correlation id, headers, delivery count.</summary>
    public Envelope Envelope { get; }

    /// <summary>Gets the topic pattern or queue the message was consumed from.</summary>
    public string Source { get; }

    /// <summary>Gets the consumer group handling the message.</summary>
    public string ConsumerGroup { get; }

    /// <summary>Gets the handler's name (its type's name, or <c>delegate&lt;T&gt;</c>).</summary>
    public string HandlerName { get; }

    /// <summary>Gets the application's services (the root provider; a scoped handler gets its own scope after the filters).</summary>
    public IServiceProvider Services { get; }

    /// <summary>Gets the token the handler receives: cancelled when the consumer stops past its drain deadline, or at the message's deadline.</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>Gets a bag for filters to pass values to later filters; created on first use.</summary>
    public IDictionary<string, object?> Items => _items ??= new Dictionary<string, object?>(StringComparer.Ordinal);
}
