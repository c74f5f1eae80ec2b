using Patterns.Hosting;
using Patterns.Messaging;

namespace Patterns.Consuming;

/// <summary>
/// Runs a consumer's handler inside the registered consume filters. The chain of delegates is built once per consumer;
/// a message costs one context object and a call per filter. Consumers without filters never get one of these.
/// </summary>
internal sealed class FilteredHandlerInvoker<TMessage> : MessageHandlerInvoker<TMessage>
{
    [ThreadStatic]
    private static Context? t_spare;

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

    public override ValueTask InvokeAsync(TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken)
    {
        // A context whose pipeline finished synchronously is reused by the next message on this thread: the
        // documented contract is that a filter does not keep the context once its pipeline has completed.
        var context = t_spare ?? new Context();
        t_spare = null;
        context.Set(_inner, message, envelope, consumer, cancellationToken);
        var pending = _pipeline(context);
        if (!pending.IsCompletedSuccessfully)
        {
            return pending;
        }

        #pragma warning disable CA1849 // Completed already, so it does not block.
        pending.GetAwaiter().GetResult();
        #pragma warning restore CA1849
        context.Reset();
        t_spare = context;
        return default;
    }

    private sealed class Context : ConsumeContext
    {
        private MessageHandlerInvoker<TMessage> _inner = null!;
        private TMessage _message = default!;
        private ConsumerIdentity _consumer = null!;

        public override object Message => _message!;

        public override Type MessageType => typeof(TMessage);

        public void Set(MessageHandlerInvoker<TMessage> inner, TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken)
        {
            _inner = inner;
            _message = message;
            _consumer = consumer;
            Initialize(envelope, consumer.Source, consumer.ConsumerGroup, inner.HandlerName, consumer.Services, cancellationToken);
        }

        public void Reset()
        {
            _message = default!;
            Clear();
        }

        public ValueTask InvokeHandler() => _inner.InvokeAsync(_message, Envelope, _consumer, CancellationToken);
    }
}
