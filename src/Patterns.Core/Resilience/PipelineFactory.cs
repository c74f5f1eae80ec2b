using System.Diagnostics.CodeAnalysis;
using Polly;
using Polly.Retry;
using Polly.Timeout;

namespace Patterns.Resilience;

internal static class PipelineFactory
{
    /// <summary>The retry every consumer and subscription starts with: 3 retries, exponential backoff from 200 ms, with jitter.</summary>
    public static RetryStrategyOptions DefaultRetry() => new()
    {
        MaxRetryAttempts = 3,
        Delay = TimeSpan.FromMilliseconds(200),
        BackoffType = DelayBackoffType.Exponential,
        UseJitter = true,
    };

    /// <summary>Builds the pipeline, or returns <see langword="null"/> when nothing is configured (the fast path).</summary>
    /// <param name="options">The strategies.</param>
    /// <param name="timeProvider">The clock for every delay and timeout.</param>
    /// <param name="onRetry">Also told of every retry.</param>
    /// <param name="callers">
    /// How many callers can call at once when that is bounded (a consumer's workers): so many may always wait for a
    /// concurrency permit, so the limit delays them instead of rejecting (and dead-lettering) their messages.
    /// </param>
    public static ResiliencePipeline? Create(HandlerResilienceOptions options, TimeProvider timeProvider, Action<OnRetryArguments<object>>? onRetry = null, int callers = 0)
    {
        if (!options.HasStrategies)
        {
            return null;
        }

        var builder = new ResiliencePipelineBuilder { TimeProvider = timeProvider };
        if (options.MaxConcurrentCalls is { } permits)
        {
            AddConcurrencyLimit(builder, new ConcurrencyLimitStrategy(permits, Math.Max(options.MaxQueuedCalls, callers)));
        }

        if (options.Retry is { } retry)
        {
            builder.AddRetry(onRetry is null ? retry : WithRetryHook(retry, onRetry));
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

    /// <summary>Adds <paramref name="limiter"/> to a pipeline; one limiter may serve several pipelines, which then share its permits.</summary>
    [UnconditionalSuppressMessage("Trimming", "IL2026", Justification = "AddStrategy validates the options by data annotations; the concurrency-limit options type declares none.")]
    public static TBuilder AddConcurrencyLimit<TBuilder>(TBuilder builder, ConcurrencyLimitStrategy limiter)
        where TBuilder : ResiliencePipelineBuilderBase =>
        builder.AddStrategy(_ => limiter, new ConcurrencyLimitStrategyOptions());

    /// <summary>A copy of the user's retry options whose OnRetry also reports to Patterns (telemetry, logs); the user's options are not changed.</summary>
    private static RetryStrategyOptions WithRetryHook(RetryStrategyOptions retry, Action<OnRetryArguments<object>> onRetry)
    {
        var userHook = retry.OnRetry;
        return new RetryStrategyOptions
        {
            Name = retry.Name,
            MaxRetryAttempts = retry.MaxRetryAttempts,
            BackoffType = retry.BackoffType,
            UseJitter = retry.UseJitter,
            Delay = retry.Delay,
            MaxDelay = retry.MaxDelay,
            // A message already handled (its inbox entry exists) is settled, not retried; one whose handler stopped because
            // its host stops is released, not retried (thrown while the host is not stopping, it counts as a failed
            // delivery, still not retried in process: a retry would only stop again).
            ShouldHandle = args => args.Outcome.Exception is Storage.DuplicateMessageException or Messaging.HandlerStoppedException ? PredicateResult.False() : retry.ShouldHandle(args),
            DelayGenerator = retry.DelayGenerator,
            Randomizer = retry.Randomizer,
            OnRetry = args =>
            {
                onRetry(args);
                return userHook is null ? default : userHook(args);
            },
        };
    }

    private sealed class ConcurrencyLimitStrategyOptions : ResilienceStrategyOptions
    {
        public ConcurrencyLimitStrategyOptions() => Name = "ConcurrencyLimit";
    }
}
