using Patterns.Consuming;
using Patterns.Messaging;

namespace Patterns.Batching;

/// <summary>
/// Runs the registered consume filters around a batch handler, once per batch: the filters see the batch as the
/// message (<see cref="ConsumeContext.Message"/> is the <see cref="Batch{T}"/>, valid until the handler returns) and the
/// envelope of its first message. A filter that throws fails the batch as the handler would; one that returns without
/// calling the next step skips the handler, so the batch is acknowledged.
/// </summary>
internal sealed class FilteredBatchHandlerInvoker<TMessage> : BatchHandlerInvoker<TMessage>
{
    /// <summary>
    /// The end of the pipeline: the batch handler's call. A filter may pass its <c>next</c> any context: one that is not a
    /// batch context of this pipeline's type is refused (Context is sealed, so the check is one compare), and never runs
    /// another message's handler.
    /// </summary>
    private static readonly ConsumeDelegate s_handler =
        static context => context is Context own ? own.CallHandler() : ConsumeFilterChain.ThrowForeignContext(context, typeof(Batch<TMessage>));

    private readonly BatchHandlerInvoker<TMessage> _inner;
    private readonly ConsumeDelegate _pipeline;
    private readonly string _source;
    private readonly string _consumerGroup;
    private readonly IServiceProvider _services;

    private FilteredBatchHandlerInvoker(BatchHandlerInvoker<TMessage> inner, IReadOnlyList<IConsumeFilter> filters, string source, string consumerGroup, IServiceProvider services)
    {
        _inner = inner;
        _source = source;
        _consumerGroup = consumerGroup;
        _services = services;
        _pipeline = ConsumeFilterChain.Build(filters, s_handler);
    }

    public override string HandlerName => _inner.HandlerName;

    /// <summary>Wraps <paramref name="inner"/> in the filters; returns it unchanged when there are none.</summary>
    public static BatchHandlerInvoker<TMessage> Wrap(
        BatchHandlerInvoker<TMessage> inner, IReadOnlyList<IConsumeFilter> filters, string source, string consumerGroup, IServiceProvider services) =>
        filters.Count == 0 ? inner : new FilteredBatchHandlerInvoker<TMessage>(inner, filters, source, consumerGroup, services);

    public override ValueTask InvokeAsync(Batch<TMessage> batch, CancellationToken cancellationToken)
    {
        var envelopes = batch.Envelopes;
        var first = envelopes.IsEmpty ? default : envelopes[0];
        return _pipeline(new Context(this, batch, first, cancellationToken));
    }

    private sealed class Context(FilteredBatchHandlerInvoker<TMessage> owner, Batch<TMessage> batch, in Envelope first, CancellationToken cancellationToken)
        : ConsumeContext(first, owner._source, owner._consumerGroup, owner._inner.HandlerName, owner._services, cancellationToken)
    {
        public override object Message => batch;

        public override Type MessageType => typeof(Batch<TMessage>);

        public ValueTask CallHandler() => owner._inner.InvokeAsync(batch, CancellationToken);
    }
}
