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
}
