namespace Patterns.Consuming;

/// <summary>Builds the delegate that runs the registered consume filters, in registration order, around a terminal call.</summary>
internal static class ConsumeFilterChain
{
    /// <summary>The end of every pipeline: the context's handler.</summary>
    public static readonly ConsumeDelegate Handler = static context => context.InvokeHandlerAsync();

    /// <summary>
    /// Chains <paramref name="filters"/> from index <paramref name="start"/> on around <paramref name="terminal"/>: the
    /// first registered filter runs outermost.
    /// </summary>
    public static ConsumeDelegate Build(IReadOnlyList<IConsumeFilter> filters, ConsumeDelegate terminal, int start = 0)
    {
        var next = terminal;
        for (var i = filters.Count - 1; i >= start; i--)
        {
            var filter = filters[i];
            var rest = next;
            next = context => filter.InvokeAsync(context, rest);
        }

        return next;
    }
}
