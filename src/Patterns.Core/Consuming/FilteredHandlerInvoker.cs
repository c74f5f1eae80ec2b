using Patterns.Hosting;
using Patterns.Messaging;

namespace Patterns.Consuming;

/// <summary>
/// Runs a consumer's handler inside the registered consume filters. The chain of delegates is built once per consumer;
/// a message costs a call per filter. Consumers without filters never get one of these.
/// </summary>
/// <remarks>
/// The context a message travels in is reused: each thread keeps the last one that finished, and a message takes it
/// (or a new one when it is in use, for example by a handler that consumes another message of the same type inline).
/// That is why a filter must not keep the context beyond the task it returns, as <see cref="ConsumeContext"/> says: once
/// that task completes, the context is cleared and carries the next message.
/// </remarks>
internal sealed class FilteredHandlerInvoker<TMessage> : MessageHandlerInvoker<TMessage>
{
    [ThreadStatic]
    private static Context? t_free;

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
        var context = t_free ?? new Context();
        t_free = null;
        context.Enter(_inner, message, envelope, consumer, cancellationToken);
        ValueTask pending;
        try
        {
            pending = _pipeline(context);
        }
        catch
        {
            Recycle(context);
            throw;
        }

        if (!pending.IsCompletedSuccessfully)
        {
            return AwaitThenRecycleAsync(pending, context);
        }

        // The caller still takes the result (a pooled task source is released by that, not here).
        Recycle(context);
        return pending;
    }

    private static async ValueTask AwaitThenRecycleAsync(ValueTask pending, Context context)
    {
        try
        {
            await pending.ConfigureAwait(false);
        }
        finally
        {
            Recycle(context);
        }
    }

    private static void Recycle(Context context)
    {
        // A handler still running (a filter gave up waiting for it, for example on a timeout) may still be followed by
        // filter code that reads the context: it keeps its message, and the next message gets a new context.
        if (context.HandlersRunning != 0)
        {
            return;
        }

        context.Exit();
        t_free = context;
    }

    private sealed class Context : ConsumeContext
    {
        private MessageHandlerInvoker<TMessage>? _inner;
        private TMessage _message = default!;
        private ConsumerIdentity? _consumer;
        private int _handlersRunning;

        public override object Message => _message!;

        public override Type MessageType => typeof(TMessage);

        public void Enter(MessageHandlerInvoker<TMessage> inner, TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken)
        {
            _inner = inner;
            _message = message;
            _consumer = consumer;
            Enter(envelope, consumer.Source, consumer.ConsumerGroup, inner.HandlerName, consumer.Services, cancellationToken);
        }

        public new void Exit()
        {
            _inner = null;
            _message = default!;
            _consumer = null;
            base.Exit();
        }

        /// <summary>Gets how many handler calls made through this context have not completed.</summary>
        public int HandlersRunning => Volatile.Read(ref _handlersRunning);

        public ValueTask InvokeHandler()
        {
            if (_inner is not { } inner)
            {
                throw new InvalidOperationException(
                    $"A consume filter called next for a '{typeof(TMessage).Name}' message after the task it returned had completed. A filter must await next (or return its task) and must not keep the context.");
            }

            var pending = inner.InvokeAsync(_message, Envelope, _consumer!, CancellationToken);
            if (pending.IsCompleted)
            {
                return pending;
            }

            Interlocked.Increment(ref _handlersRunning);
            return CountedAsync(pending);
        }

        private async ValueTask CountedAsync(ValueTask pending)
        {
            try
            {
                await pending.ConfigureAwait(false);
            }
            finally
            {
                Interlocked.Decrement(ref _handlersRunning);
            }
        }
    }
}
