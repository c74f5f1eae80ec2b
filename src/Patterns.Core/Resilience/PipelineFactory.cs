using System.Diagnostics.CodeAnalysis;
using Polly;
using Polly.Timeout;

namespace Patterns.Resilience;

internal static class PipelineFactory
{
    /// <summary>Builds the pipeline, or returns <see langword="null"/> when nothing is configured (the fast path).</summary>
    [UnconditionalSuppressMessage("Trimming", "IL2026", Justification = "AddStrategy validates the options by data annotations; the concurrency-limit options type declares none.")]
    public static ResiliencePipeline? Create(HandlerResilienceOptions options, TimeProvider timeProvider)
    {
        if (!options.HasStrategies)
        {
            return null;
        }

        var builder = new ResiliencePipelineBuilder { TimeProvider = timeProvider };
        if (options.MaxConcurrentCalls is { } permits)
        {
            builder.AddStrategy(_ => new ConcurrencyLimitStrategy(permits, options.MaxQueuedCalls), new ConcurrencyLimitStrategyOptions());
        }

        if (options.Retry is { } retry)
        {
            builder.AddRetry(retry);
        }

        if (options.CircuitBreaker is { } breaker)
        {
            builder.AddCircuitBreaker(breaker);
        }

        if (options.AttemptTimeout is { } timeout)
        {
            builder.AddTimeout(new TimeoutStrategyOptions { Timeout = timeout });
        }

        options.ConfigurePipeline?.Invoke(builder);
        return builder.Build();
    }

    private sealed class ConcurrencyLimitStrategyOptions : ResilienceStrategyOptions
    {
        public ConcurrencyLimitStrategyOptions() => Name = "ConcurrencyLimit";
    }
}
