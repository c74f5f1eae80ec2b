using Patterns.Hosting;
using Patterns.Messaging;

namespace Patterns.Consuming;

/// <summary>
/// Runs a consumer's handler inside the registered consume filters. The chain of delegates is built once per consumer;
/// a message costs one context object and a call per filter. Consumers without filters never get one of these.
/// </summary>
internal sealed class FilteredHandlerInvoker<TMessage> : MessageHandlerInvoker<TMessage>
{
    private readonly MessageHandlerInvoker<TMessage> _inner;
    private readonly ConsumeDelegate _pipeline;

    public FilteredHandlerInvoker(MessageHandlerInvoker<TMessage> inner, IReadOnlyList<IConsumeFilter> filters)
    {
        _inner = inner;
        _pipeline = ConsumeFilterChain.Build(filters, static context => ((Context)context).InvokeHandler());
    }

    public override string HandlerName => _inner.HandlerName;

    /// <summary>Wraps <paramref name="inner"/> in the filters, or returns it as it is when there are none.</summary>
    public static MessageHandlerInvoker<TMessage> Wrap(MessageHandlerInvoker<TMessage> inner, IReadOnlyList<IConsumeFilter> filters) =>
        filters.Count == 0 ? inner : new FilteredHandlerInvoker<TMessage>(inner, filters);

    public override ValueTask InvokeAsync(TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken) =>
        _pipeline(new Context(_inner, message, envelope, consumer, cancellationToken));

    private sealed class Context(MessageHandlerInvoker<TMessage> inner, TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken)
        : ConsumeContext(envelope, consumer.Source, consumer.ConsumerGroup, inner.HandlerName, consumer.Services, cancellationToken)
    {
        public override object Message => message!;

        public override Type MessageType => typeof(TMessage);

        public ValueTask InvokeHandler() => inner.InvokeAsync(message, Envelope, consumer, CancellationToken);
    }
}
