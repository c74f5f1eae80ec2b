using System.Runtime.CompilerServices;
using Patterns.Hosting;
using Patterns.Messaging;

namespace Patterns.Consuming;

/// <summary>
/// Runs a consumer's handler inside the registered consume filters. The chain of delegates is built once per consumer;
/// a message costs a call per filter. Consumers without filters never get one of these.
/// </summary>
/// <remarks>
/// The context a message travels in is reused: each thread keeps the last one that finished for each message type (in
/// <see cref="FreeContexts"/>), and a message takes it
/// (or a new one when it is in use, for example by a handler that consumes another message of the same type inline).
/// That is why a filter must not keep the context beyond the task it returns, as <see cref="ConsumeContext"/> says: once
/// that task completes, the context is cleared and carries the next message.
/// </remarks>
internal sealed class FilteredHandlerInvoker<TMessage> : MessageHandlerInvoker<TMessage>
{
    /// <summary>This message type's slot in <see cref="FreeContexts"/>: only its contexts are kept there.</summary>
    private static readonly int s_slot = FreeContexts.NewSlot();

    private readonly MessageHandlerInvoker<TMessage> _inner;
    private readonly ConsumeDelegate _pipeline;
    private readonly int _slot = s_slot;

    public FilteredHandlerInvoker(MessageHandlerInvoker<TMessage> inner, IReadOnlyList<IConsumeFilter> filters)
    {
        _inner = inner;
        _pipeline = ConsumeFilterChain.Build(filters, ConsumeFilterChain.Handler);
    }

    public override string HandlerName => _inner.HandlerName;

    /// <summary>Wraps <paramref name="inner"/> in the filters, or returns it as it is when there are none.</summary>
    public static MessageHandlerInvoker<TMessage> Wrap(MessageHandlerInvoker<TMessage> inner, IReadOnlyList<IConsumeFilter> filters) =>
        filters.Count == 0 ? inner : new FilteredHandlerInvoker<TMessage>(inner, filters);

    public override ValueTask InvokeAsync(TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken)
    {
        var context = FreeContexts.Take(_slot) is { } free ? Unsafe.As<Context>(free) : new Context();
        context.Enter(_inner, message, envelope, consumer, cancellationToken);
        ValueTask pending;
        try
        {
            pending = _pipeline(context);
        }
        catch
        {
            Recycle(context, _slot);
            throw;
        }

        if (!pending.IsCompletedSuccessfully)
        {
            return AwaitThenRecycleAsync(pending, context, _slot);
        }

        // The caller still takes the result (a pooled task source is released by that, not here).
        Recycle(context, _slot);
        return pending;
    }

    private static async ValueTask AwaitThenRecycleAsync(ValueTask pending, Context context, int slot)
    {
        try
        {
            await pending.ConfigureAwait(false);
        }
        finally
        {
            Recycle(context, slot);
        }
    }

    private static void Recycle(Context context, int slot)
    {
        // A handler still running (a filter gave up waiting for it, for example on a timeout) may still be followed by
        // filter code that reads the context: it keeps its message, and the next message gets a new context.
        if (context.HandlersRunning != 0)
        {
            return;
        }

        context.Exit();
        FreeContexts.Return(slot, context);
    }

    private sealed class Context : ConsumeContext
    {
        private MessageHandlerInvoker<TMessage> _inner = null!;
        private TMessage _message = default!;
        private ConsumerIdentity _consumer = null!;
        private bool _inUse;
        private int _handlersRunning;

        public override object Message => _message!;

        public override Type MessageType => typeof(TMessage);

        public void Enter(MessageHandlerInvoker<TMessage> inner, TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken)
        {
            // The invoker and the consumer are the last message's as a rule: written only when they change (no write barrier).
            if (!ReferenceEquals(_inner, inner))
            {
                _inner = inner;
            }

            if (!ReferenceEquals(_consumer, consumer))
            {
                _consumer = consumer;
            }

            _message = message;
            _inUse = true;
            Enter(envelope, consumer.Source, consumer.ConsumerGroup, inner.HandlerName, consumer.Services, cancellationToken);
        }

        public new void Exit()
        {
            _inUse = false;
            _message = default!;
            base.Exit();
        }

        /// <summary>Gets how many handler calls made through this context have not completed.</summary>
        public int HandlersRunning => Volatile.Read(ref _handlersRunning);

        internal override ValueTask InvokeHandlerAsync()
        {
            if (!_inUse)
            {
                throw new InvalidOperationException(
                    $"A consume filter called next for a '{typeof(TMessage).Name}' message after the task it returned had completed. A filter must await next (or return its task) and must not keep the context.");
            }

            var pending = _inner.InvokeAsync(_message, EnvelopeRef, _consumer, CancellationToken);
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
