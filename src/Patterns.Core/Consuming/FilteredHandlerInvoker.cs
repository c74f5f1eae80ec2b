using System.Runtime.CompilerServices;
using Patterns.Hosting;
using Patterns.Messaging;

namespace Patterns.Consuming;

/// <summary>
/// Runs a consumer's handler inside the registered consume filters. The chain of delegates is built once per consumer;
/// a message costs a call per filter. Consumers without filters never get one of these.
/// </summary>
/// <remarks>
/// The context a message travels in is reused: each thread keeps one for each message type (in <see cref="FreeContexts"/>),
/// marked in use while a message travels in it. A message takes it when it is free, and makes a new one when it is busy
/// (a handler that consumes another message of the same type inline); that new one becomes the thread's once its message
/// is done. A message whose pipeline goes asynchronous, or whose context stays in use after its pipeline returned, takes
/// its context out of the thread's slot; the context is parked on the thread its message finishes on. So a message whose filters and handler
/// complete synchronously touches the thread's slot once, to read it. That is why a filter must not keep the context
/// beyond the task it returns, as <see cref="ConsumeContext"/> says: once that task completes, the context is cleared and
/// carries the next message.
/// </remarks>
internal sealed class FilteredHandlerInvoker<TMessage> : MessageHandlerInvoker<TMessage>
{
    /// <summary>This message type's slot in <see cref="FreeContexts"/>: only its contexts are kept there.</summary>
    private static readonly int s_slot = FreeContexts.NewSlot();

    private readonly MessageHandlerInvoker<TMessage> _inner;
    private readonly string _handlerName;
    private readonly IConsumeFilter _first;
    private readonly ConsumeDelegate _afterFirst;
    private readonly int _slot = s_slot;

    public FilteredHandlerInvoker(MessageHandlerInvoker<TMessage> inner, IReadOnlyList<IConsumeFilter> filters)
    {
        _inner = inner;
        _handlerName = inner.HandlerName;

        // The first filter is called directly; the rest is the delegate chain it gets as next.
        _first = filters[0];
        _afterFirst = ConsumeFilterChain.Build(filters, ConsumeFilterChain.Handler, start: 1);
    }

    public override string HandlerName => _handlerName;

    /// <summary>Wraps <paramref name="inner"/> in the filters, or returns it as it is when there are none.</summary>
    public static MessageHandlerInvoker<TMessage> Wrap(MessageHandlerInvoker<TMessage> inner, IReadOnlyList<IConsumeFilter> filters) =>
        filters.Count == 0 ? inner : new FilteredHandlerInvoker<TMessage>(inner, filters);

    public override ValueTask InvokeAsync(TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken)
    {
        var slot = _slot;
        var context = FreeContexts.Get(slot) is { } held && !Unsafe.As<Context>(held).InUse ? Unsafe.As<Context>(held) : new Context(slot);
        context.Enter(_inner, _handlerName, message, envelope, consumer, cancellationToken);
        ValueTask pending;
        try
        {
            pending = _first.InvokeAsync(context, _afterFirst);
        }
        catch
        {
            End(context);
            throw;
        }

        if (!pending.IsCompletedSuccessfully)
        {
            // The message finishes elsewhere: its context leaves this thread's slot now, so this thread's next message does
            // not find it busy and make a new one, and goes to the slot of the thread it finishes on.
            context.Detach();
            return AwaitThenReleaseAsync(pending, context);
        }

        // The caller still takes the result (a pooled task source is released by that, not here).
        End(context);
        return pending;
    }

    /// <summary>
    /// Ends a message whose pipeline returned on this thread. A context that stays in use (a call it made still runs) leaves
    /// the thread's slot, so the slot does not keep its message alive and the thread's next message does not find it busy.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void End(Context context)
    {
        if (!context.Release())
        {
            context.Detach();
        }
    }

    private static async ValueTask AwaitThenReleaseAsync(ValueTask pending, Context context)
    {
        try
        {
            await pending.ConfigureAwait(false);
        }
        finally
        {
            context.Release();
        }
    }

    private sealed class Context(int slot) : ConsumeContext
    {
        private MessageHandlerInvoker<TMessage> _inner = null!;
        private TMessage _message = default!;
        private ConsumerIdentity _consumer = null!;
        private bool _inUse;
        private bool _held;
        private int _handlersRunning;

        public override object Message => _message!;

        public override Type MessageType => typeof(TMessage);

        /// <summary>Gets a value indicating whether a message travels in this context (read by the thread whose slot holds it, written by any).</summary>
        public bool InUse => Volatile.Read(ref _inUse);

        public void Enter(MessageHandlerInvoker<TMessage> inner, string handlerName, TMessage message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken)
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
            Enter(envelope, consumer.Source, consumer.ConsumerGroup, handlerName, consumer.Services, cancellationToken);
            _inUse = true;
        }

        /// <summary>
        /// Ends the message's trip: the context is cleared and free for the next message of its thread, unless a handler
        /// call made through it still runs (a filter gave up waiting for it, for example on a timeout, and filter code may
        /// still read the context): then it keeps its message and stays in use, and the next message makes a new one.
        /// </summary>
        /// <returns>Whether the context was freed.</returns>
        public bool Release()
        {
            if (HandlersRunning != 0)
            {
                return false;
            }

            _message = default!;
            Exit();
            Volatile.Write(ref _inUse, false);
            if (!_held)
            {
                // A context made because the slot was empty or busy takes the slot of the thread it finishes on.
                _held = true;
                FreeContexts.Set(slot, this);
            }

            return true;
        }

        /// <summary>Takes this context out of the slot that holds it, if it is this thread's; its release parks it where it finishes.</summary>
        public void Detach()
        {
            if (_held)
            {
                _held = false;
                if (ReferenceEquals(FreeContexts.Get(slot), this))
                {
                    FreeContexts.Clear(slot);
                }
            }
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
