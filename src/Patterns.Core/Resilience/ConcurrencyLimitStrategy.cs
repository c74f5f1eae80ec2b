using Polly;

namespace Patterns.Resilience;

/// <summary>
/// A Polly strategy that lets at most N calls run at once and at most M wait; further calls are rejected.
/// (Polly's own concurrency limiter lives in Polly.RateLimiting, which Core does not depend on.)
/// </summary>
internal sealed class ConcurrencyLimitStrategy(int permits, int queue) : ResilienceStrategy, IDisposable
{
    private readonly SemaphoreSlim _permits = new(permits, permits);
    private int _waiting;

    protected override async ValueTask<Outcome<TResult>> ExecuteCore<TResult, TState>(
        Func<ResilienceContext, TState, ValueTask<Outcome<TResult>>> callback,
        ResilienceContext context,
        TState state)
    {
        if (!_permits.Wait(0))
        {
            if (Interlocked.Increment(ref _waiting) > queue)
            {
                Interlocked.Decrement(ref _waiting);
                return Outcome.FromException<TResult>(new ConcurrencyLimitExceededException(
                    $"The concurrency limit of {permits} running and {queue} queued calls is reached."));
            }

            try
            {
                await _permits.WaitAsync(context.CancellationToken).ConfigureAwait(context.ContinueOnCapturedContext);
            }
            catch (OperationCanceledException ex)
            {
                return Outcome.FromException<TResult>(ex);
            }
            finally
            {
                Interlocked.Decrement(ref _waiting);
            }
        }

        try
        {
            return await callback(context, state).ConfigureAwait(context.ContinueOnCapturedContext);
        }
        finally
        {
            _permits.Release();
        }
    }

    public void Dispose() => _permits.Dispose();
}
