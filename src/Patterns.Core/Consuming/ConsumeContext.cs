using System.Diagnostics.CodeAnalysis;
using Patterns.Messaging;

namespace Patterns.Consuming;

/// <summary>One message on its way through the consume filters to its handler.</summary>
/// <remarks>Valid until the pipeline's task completes; a filter must not keep it beyond that.</remarks>
public abstract class ConsumeContext
{
    private Dictionary<string, object?>? _items;

    private protected ConsumeContext(in Envelope envelope, string source, string consumerGroup, string handlerName, IServiceProvider services, CancellationToken cancellationToken) =>
        Initialize(envelope, source, consumerGroup, handlerName, services, cancellationToken);

    /// <summary>For a context that is reused: an empty one, given its message with <see cref="Initialize"/>.</summary>
    private protected ConsumeContext()
    {
        Source = ConsumerGroup = HandlerName = "";
        Services = null!;
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

    /// <summary>Sets what the context describes (at construction, or when a reused context takes its next message).</summary>
    [MemberNotNull(nameof(Source), nameof(ConsumerGroup), nameof(HandlerName), nameof(Services))]
    private protected void Initialize(in Envelope envelope, string source, string consumerGroup, string handlerName, IServiceProvider services, CancellationToken cancellationToken)
    {
        Envelope = envelope;
        Source = source;
        ConsumerGroup = consumerGroup;
        HandlerName = handlerName;
        Services = services;
        CancellationToken = cancellationToken;
    }

    /// <summary>Drops what the context held, so a reused context keeps no message, envelope or item alive.</summary>
    private protected void Clear()
    {
        Envelope = default;
        Services = null!;
        CancellationToken = default;
        _items = null;
    }
}
