namespace Patterns.Orchestration;

/// <summary>
/// A saga's compensations: register one after each step succeeds; on failure, <see cref="CompensateAsync"/> runs them in
/// reverse order (the last step is undone first). Compensations are workflow code, so they are durable and replayed
/// like the steps themselves.
/// </summary>
/// <example>
/// <code>
/// var saga = new CompensationScope();
/// try
/// {
///     await ctx.CallActivityAsync("ReserveStock", order);
///     saga.Add(() => ctx.CallActivityAsync("ReleaseStock", order));
///     await ctx.CallActivityAsync("Charge", order);
///     saga.Add(() => ctx.CallActivityAsync("Refund", order));
/// }
/// catch (ActivityFailureException)
/// {
///     await saga.CompensateAsync();
///     throw;
/// }
/// </code>
/// </example>
public sealed class CompensationScope
{
    private readonly List<Func<Task>> _compensations = [];

    /// <summary>Gets how many compensations are registered and not yet run.</summary>
    public int Count => _compensations.Count;

    /// <summary>Registers the compensation of the step that just succeeded.</summary>
    /// <param name="compensation">Undoes the step; usually an activity call.</param>
    public void Add(Func<Task> compensation)
    {
        ArgumentNullException.ThrowIfNull(compensation);
        _compensations.Add(compensation);
    }

    /// <summary>Runs the registered compensations in reverse order, one at a time, and forgets them.</summary>
    /// <returns>A task that completes when every compensation has run.</returns>
    /// <exception cref="AggregateException">Some compensations failed; the others still ran.</exception>
    public async Task CompensateAsync()
    {
        List<Exception>? errors = null;
        for (var i = _compensations.Count - 1; i >= 0; i--)
        {
            try
            {
                await _compensations[i]().ConfigureAwait(true);
            }
            catch (Exception ex) when (ex is not WorkflowDeterminismException and not NonDeterminismException)
            {
                (errors ??= []).Add(ex);
            }
        }

        _compensations.Clear();
        if (errors is not null)
        {
            throw new AggregateException("Some compensations failed; the others ran.", errors);
        }
    }
}
