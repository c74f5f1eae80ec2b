using System.Diagnostics.CodeAnalysis;
using Patterns.Messaging;

namespace Patterns.Consuming;

/// <summary>One message on its way through the consume filters to its handler.</summary>
/// <remarks>Valid until the pipeline's task completes; a filter must not keep it beyond that.</remarks>
public abstract class ConsumeContext
{
    private Dictionary<string, object?>? _items;
    private Envelope _envelope;
    private string _source;
    private string _consumerGroup;
    private string _handlerName;
    private IServiceProvider _services;

    private protected ConsumeContext(in Envelope envelope, string source, string consumerGroup, string handlerName, IServiceProvider services, CancellationToken cancellationToken) =>
        Enter(envelope, source, consumerGroup, handlerName, services, cancellationToken);

    /// <summary>Creates a context to be filled by <see cref="Enter"/> and reused once it is cleared by <see cref="Exit"/>.</summary>
    private protected ConsumeContext()
    {
        _source = _consumerGroup = _handlerName = string.Empty;
        _services = EmptyServices.Instance;
    }

    /// <summary>Gets the envelope without copying it, for the handler call.</summary>
    private protected ref readonly Envelope EnvelopeRef => ref _envelope;

    /// <summary>
    /// Fills a reused context for the next message. Where the message came from (source, group, handler, services) is
    /// usually what the last message had: those fields are only written when they change, which spares the write barriers.
    /// </summary>
    [MemberNotNull(nameof(_source), nameof(_consumerGroup), nameof(_handlerName), nameof(_services))]
    private protected void Enter(in Envelope envelope, string source, string consumerGroup, string handlerName, IServiceProvider services, CancellationToken cancellationToken)
    {
        _envelope = envelope;
        if (!ReferenceEquals(_source, source))
        {
            _source = source;
        }

        if (!ReferenceEquals(_consumerGroup, consumerGroup))
        {
            _consumerGroup = consumerGroup;
        }

        if (!ReferenceEquals(_handlerName, handlerName))
        {
            _handlerName = handlerName;
        }

        if (!ReferenceEquals(_services, services))
        {
            _services = services;
        }

        // The token too (no write barrier for the same token, or for none after Exit cleared it).
        if (CancellationToken != cancellationToken)
        {
            CancellationToken = cancellationToken;
        }
    }

    /// <summary>
    /// Drops what the last message left (its envelope, token and items), so a reused context holds no message alive. Where
    /// it came from (source, group, handler name, the application's root services) stays until a message from elsewhere.
    /// </summary>
    private protected void Exit()
    {
        _envelope = default;
        CancellationToken = default;
        if (_items is { Count: > 0 } items)
        {
            items.Clear();
        }
    }

    /// <summary>
    /// Takes the task of a step of the pipeline that did not complete at once (a filter's call with the rest of the chain, or
    /// the handler's call): a context that is reused counts the steps still running, so it is not freed under them. This one
    /// passes it on.
    /// </summary>
    /// <param name="pending">The step's task.</param>
    /// <returns>The task the caller of <c>next</c> gets.</returns>
    internal virtual ValueTask Track(ValueTask pending) => pending;

    /// <summary>Gets the message, deserialized.</summary>
    public abstract object Message { get; }

    /// <summary>Gets the message's type.</summary>
    public abstract Type MessageType { get; }

    /// <summary>Gets the envelope the message arrived in: id, correlation id, headers, delivery count.</summary>
    public Envelope Envelope => _envelope;

    /// <summary>Gets the topic pattern or queue the message was consumed from.</summary>
    public string Source => _source;

    /// <summary>Gets the consumer group handling the message.</summary>
    public string ConsumerGroup => _consumerGroup;

    /// <summary>Gets the handler's name (its type's name, or <c>delegate&lt;T&gt;</c>).</summary>
    public string HandlerName => _handlerName;

    /// <summary>Gets the application's services (the root provider; a scoped handler gets its own scope after the filters).</summary>
    public IServiceProvider Services => _services;

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
