using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace Patterns.Consuming;

/// <summary>Builds the delegate that runs the registered consume filters, in registration order, around a terminal call.</summary>
internal static class ConsumeFilterChain
{
    /// <summary>
    /// Chains <paramref name="filters"/> from index <paramref name="start"/> on around <paramref name="terminal"/>: the
    /// first registered filter runs outermost. <paramref name="link"/>, when given, makes the step that calls a filter with
    /// the rest of the chain (by default, the plain call).
    /// </summary>
    public static ConsumeDelegate Build(
        IReadOnlyList<IConsumeFilter> filters, ConsumeDelegate terminal, int start = 0, Func<IConsumeFilter, ConsumeDelegate, ConsumeDelegate>? link = null)
    {
        link ??= static (filter, rest) => context => filter.InvokeAsync(context, rest);
        var next = terminal;
        for (var i = filters.Count - 1; i >= start; i--)
        {
            next = link(filters[i], next);
        }

        return next;
    }

    /// <summary>
    /// Passes on the task of a step that completed at once, at the cost of one compare (a completed task with no object
    /// behind it, which a filter that returns its <c>next</c>'s result gets from a synchronous handler), and gives one that
    /// may still run to the context to count (<see cref="ConsumeContext.Track"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ValueTask Check(ValueTask pending, ConsumeContext context) => pending == default ? default : CheckTask(pending, context);

    /// <summary>The out-of-line rest of <see cref="Check"/>: a task object, complete or still running.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ValueTask CheckTask(ValueTask pending, ConsumeContext context) => pending.IsCompleted ? pending : context.Track(pending);

    /// <summary>
    /// Refuses a context a filter passed its <c>next</c> that is not one of this pipeline's own (a filter that kept the
    /// context of an outer message of another type): each pipeline ends in a type test of its own sealed context type and
    /// calls this when it fails, so another message's handler never runs with it.
    /// </summary>
    /// <param name="context">The context passed to next.</param>
    /// <param name="messageType">The message type of the pipeline it was passed to (the batch type for a batch pipeline).</param>
    /// <returns>Never returns.</returns>
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static ValueTask ThrowForeignContext(ConsumeContext context, Type messageType) =>
        throw new InvalidOperationException(
            $"A consume filter passed next the context of a '{Describe(context.MessageType)}' message in the pipeline of a '{Describe(messageType)}' message: next must be given the context the filter received.");

    /// <summary>A type's name as C# spells it (<c>Batch&lt;Job&gt;</c>, not <c>Batch`1</c>).</summary>
    private static string Describe(Type type)
    {
        if (!type.IsGenericType)
        {
            return type.Name;
        }

        var name = type.Name;
        var tick = name.IndexOf('`', StringComparison.Ordinal);
        return $"{(tick < 0 ? name : name[..tick])}<{string.Join(", ", type.GetGenericArguments().Select(Describe))}>";
    }

    /// <summary>A filter's call with the rest of the chain, counted while it runs: its delegate is the <c>next</c> the filter before it gets.</summary>
    internal sealed class CountedStep(IConsumeFilter filter, ConsumeDelegate rest)
    {
        private readonly IConsumeFilter _filter = filter;
        private readonly ConsumeDelegate _rest = rest;

        /// <remarks>
        /// Not inlined on purpose: a profile-guided build otherwise inlines each step into the filter before it (whose call
        /// of <c>next</c> it sees through), and the merged task copies it makes cost a stalled 16-byte load per step.
        /// </remarks>
        [MethodImpl(MethodImplOptions.NoInlining)]
        public ValueTask Invoke(ConsumeContext context) => Check(_filter.InvokeAsync(context, _rest), context);
    }
}
