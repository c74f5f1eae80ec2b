using System.Runtime.ExceptionServices;
using Polly;

namespace Patterns.Streaming;

/// <summary>Applies a stage's <see cref="FailurePolicy"/> when its user code throws on an element.</summary>
internal sealed class StageGuard
{
    private readonly RunContext _run;
    private readonly FailurePolicy _policy;
    private readonly ResiliencePipeline? _pipeline;

    public StageGuard(ChainContext context, string stageId, FailurePolicy? policy)
    {
        _run = context.Run;
        StageId = stageId;
        _policy = policy ?? context.Run.Options.DefaultFailurePolicy;
        _pipeline = _run.BuildPipeline(_policy);
    }

    public string StageId { get; }

    public CancellationToken Token => _run.AbortToken;

    /// <summary>
    /// Handles a failure of <paramref name="attempt"/> on <paramref name="item"/>: retries it (Retry), records the item in
    /// the dead-letter output and returns <see langword="false"/> (Resume), or rethrows (Stop).
    /// </summary>
    public async ValueTask<(bool Ok, TOut Value)> RecoverAsync<TIn, TOut>(TIn item, Exception failure, Func<TIn, CancellationToken, ValueTask<TOut>> attempt)
    {
        var policy = _policy;
        var last = failure;
        if (_pipeline is not null)
        {
            var state = new RetryState<TIn, TOut>(item, failure, attempt);
            try
            {
                var value = await _pipeline.ExecuteAsync(static (s, ct) => s.RunAsync(ct), state, _run.AbortToken).ConfigureAwait(false);
                return (true, value);
            }
            catch (Exception ex)
            {
                last = ex;
                policy = _policy.WhenExhausted!;
            }
        }

        if (policy.Action == FailureAction.Stop || (last is OperationCanceledException && _run.AbortToken.IsCancellationRequested))
        {
            ExceptionDispatchInfo.Throw(last);
        }

        await _run.DeadLetterAsync(StageId, item, last).ConfigureAwait(false);
        return (false, default!);
    }

    /// <summary>The first call replays the failure that already happened, so Polly counts it as the first attempt.</summary>
    private sealed class RetryState<TIn, TOut>(TIn item, Exception failure, Func<TIn, CancellationToken, ValueTask<TOut>> attempt)
    {
        private Exception? _first = failure;

        public ValueTask<TOut> RunAsync(CancellationToken cancellationToken)
        {
            if (_first is { } first)
            {
                _first = null;
                ExceptionDispatchInfo.Throw(first);
            }

            return attempt(item, cancellationToken);
        }
    }
}
