using System.Diagnostics.CodeAnalysis;
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
/// in use while a message travels in it. A message takes it when it is free, and makes a new one when it is busy (a handler
/// that consumes another message of the same type inline); that new one becomes the thread's once its message is done. A
/// message whose pipeline goes asynchronous, or whose context stays in use after its pipeline returned, takes its context
/// out of the thread's slot; the context is parked on the thread its message finishes on. So a message whose filters and
/// handler complete synchronously touches the thread's slot once, to read it.
/// <para>
/// A context stays in use until its pipeline has returned and every call of <c>next</c> made through it (each later filter
/// with its code after <c>await next</c>, and the handler) has completed: a filter that a timeout filter gave up waiting for
/// still runs with its own message. The last of them frees the context. That is why a filter must call <c>next</c> before
/// its own task completes and must not keep the context beyond that task, as <see cref="ConsumeContext"/> says: once every
/// call is done, the context is cleared and carries the next message.
/// </para>
/// </remarks>
internal sealed class FilteredHandlerInvoker<TMessage> : MessageHandlerInvoker<TMessage>
{
    /// <summary>This message type's slot in <see cref="FreeContexts"/>: only its contexts are kept there.</summary>
    private static readonly int s_slot = FreeContexts.NewSlot();

    /// <summary>
    /// The end of the pipeline: the handler call, counted while it runs. <see cref="ConsumeDelegate"/> is public, so a filter
    /// may pass its <c>next</c> any context: one of another message type is refused (Context is sealed, so the check is one
    /// compare), never read as this type's.
    /// </summary>
    private static readonly ConsumeDelegate s_handler = static context => context is Context own ? own.CallHandler() : ConsumeFilterChain.ThrowForeignContext(context, typeof(TMessage));

    /// <summary>A step of the pipeline: a filter's call with the rest of the chain, counted while it runs.</summary>
    private static readonly Func<IConsumeFilter, ConsumeDelegate, ConsumeDelegate> s_link =
        static (filter, rest) => new ConsumeFilterChain.CountedStep(filter, rest).Invoke;

    private readonly MessageHandlerInvoker<TMessage> _inner;
    private readonly string _handlerName;
    private readonly IConsumeFilter _first;
    private readonly ConsumeDelegate _afterFirst;
    private readonly int _slot = s_slot;

    public FilteredHandlerInvoker(MessageHandlerInvoker<TMessage> inner, IReadOnlyList<IConsumeFilter> filters)
    {
        _inner = inner;
        _handlerName = inner.HandlerName;

        // The first filter is called directly (the pipeline's own call); the rest is the counted chain it gets as next.
        _first = filters[0];
        _afterFirst = ConsumeFilterChain.Build(filters, s_handler, start: 1, s_link);
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
            context.End();
            throw;
        }

        if (pending != default && !pending.IsCompletedSuccessfully)
        {
            // The message finishes elsewhere: its context leaves this thread's slot now, so this thread's next message does
            // not find it busy and make a new one, and goes to the slot of the thread it finishes on.
            context.Detach();
            return AwaitThenReleaseAsync(pending, context);
        }

        // The caller still takes the result (a pooled task source is released by that, not here).
        context.End();
        return pending;
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
        private bool _held;

        /// <summary>The pipeline's own call (1 while it runs) plus every call of next made through this context still running; 0 when free.</summary>
        private int _calls;

        public override object Message => _message!;

        public override Type MessageType => typeof(TMessage);

        /// <summary>Gets a value indicating whether a message travels in this context (read by the thread whose slot holds it, written by any).</summary>
        public bool InUse => Volatile.Read(ref _calls) != 0;

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
            _calls = 1;
        }

        /// <summary>
        /// Ends a pipeline that returned on the thread it started on. With no call of next still running (the rule), the
        /// context is freed in place; otherwise (a filter gave up waiting for one, for example on a timeout) it leaves the
        /// thread's slot, so the slot keeps no message alive, and the last of those calls frees it.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void End()
        {
            // Nothing but a running call counted through this context can raise the count once the pipeline returned.
            if (Volatile.Read(ref _calls) == 1)
            {
                Free();
            }
            else
            {
                EndWithCallsRunning();
            }
        }

        /// <summary>Drops the pipeline's own call, or a counted call of next: the last one frees the context.</summary>
        public void Release()
        {
            if (Interlocked.Decrement(ref _calls) == 0)
            {
                Free();
            }
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

        /// <summary>Counts a call of next while it runs (one that completed at once is not passed here).</summary>
        internal override ValueTask Track(ValueTask pending)
        {
            Interlocked.Increment(ref _calls);
            return CountedAsync(pending);
        }

        /// <summary>The pipeline's last step: the handler's call, counted while it runs.</summary>
        public ValueTask CallHandler()
        {
            // Best effort: a call of next after the pipeline completed finds the count at zero as a rule.
            if (Volatile.Read(ref _calls) == 0)
            {
                ThrowNextAfterCompletion();
            }

            return ConsumeFilterChain.Check(_inner.InvokeAsync(_message, EnvelopeRef, _consumer, CancellationToken), this);
        }

        [DoesNotReturn]
        [MethodImpl(MethodImplOptions.NoInlining)]
        private static void ThrowNextAfterCompletion() =>
            throw new InvalidOperationException(
                $"A consume filter called next for a '{typeof(TMessage).Name}' message after the task it returned had completed. A filter must await next (or return its task) and must not keep the context.");

        [MethodImpl(MethodImplOptions.NoInlining)]
        private void EndWithCallsRunning()
        {
            // Out of the slot before the count can reach zero, so the thread that frees it parks it.
            Detach();
            Release();
        }

        private void Free()
        {
            _message = default!;
            Exit();
            Volatile.Write(ref _calls, 0);
            if (!_held)
            {
                // A context made because the slot was empty or busy, or taken out of it, takes the slot of the thread it finishes on.
                _held = true;
                FreeContexts.Set(slot, this);
            }
        }

        private async ValueTask CountedAsync(ValueTask pending)
        {
            try
            {
                await pending.ConfigureAwait(false);
            }
            finally
            {
                Release();
            }
        }
    }
}
