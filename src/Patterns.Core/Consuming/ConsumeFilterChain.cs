using System.Runtime.CompilerServices;

namespace Patterns.Consuming;

/// <summary>Builds the delegate that runs the registered consume filters, in registration order, around a terminal call.</summary>
internal static class ConsumeFilterChain
{
    /// <summary>The end of every pipeline: the context's handler.</summary>
    public static readonly ConsumeDelegate Handler = static context => context.InvokeHandlerAsync();

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
