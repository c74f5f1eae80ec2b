using System.Text.Json.Serialization;

namespace Patterns.Orchestration.History;

/// <summary>An activity's <see cref="ActivityOptions"/> as recorded with its scheduling event and carried by its task message.</summary>
public sealed record ActivitySettings
{
    /// <summary>Gets the attempt timeout in milliseconds.</summary>
    [JsonPropertyName("t")]
    public long StartToCloseMs { get; init; }

    /// <summary>Gets the heartbeat timeout in milliseconds, or 0 for none.</summary>
    [JsonPropertyName("h")]
    public long HeartbeatMs { get; init; }

    /// <summary>Gets the number of attempts.</summary>
    [JsonPropertyName("a")]
    public int MaxAttempts { get; init; }

    /// <summary>Gets the first retry delay in milliseconds.</summary>
    [JsonPropertyName("i")]
    public long InitialIntervalMs { get; init; }

    /// <summary>Gets the backoff coefficient.</summary>
    [JsonPropertyName("b")]
    public double BackoffCoefficient { get; init; }

    /// <summary>Gets the longest retry delay in milliseconds.</summary>
    [JsonPropertyName("m")]
    public long MaxIntervalMs { get; init; }

    /// <summary>Gets exception type names that are never retried.</summary>
    [JsonPropertyName("n")]
    public IReadOnlyList<string>? NonRetryable { get; init; }

    /// <summary>Gets the settings for <paramref name="options"/>; null stands for the defaults.</summary>
    /// <param name="options">The options, or null.</param>
    /// <returns>The settings, or null for the defaults.</returns>
    public static ActivitySettings? From(ActivityOptions? options) => options is null ? null : new ActivitySettings
    {
        StartToCloseMs = (long)options.StartToCloseTimeout.TotalMilliseconds,
        HeartbeatMs = (long)(options.HeartbeatTimeout?.TotalMilliseconds ?? 0),
        MaxAttempts = options.Retry.MaxAttempts,
        InitialIntervalMs = (long)options.Retry.InitialInterval.TotalMilliseconds,
        BackoffCoefficient = options.Retry.BackoffCoefficient,
        MaxIntervalMs = (long)options.Retry.MaxInterval.TotalMilliseconds,
        NonRetryable = options.Retry.NonRetryableErrorTypes.Count == 0 ? null : options.Retry.NonRetryableErrorTypes,
    };

    /// <summary>Gets the options these settings stand for.</summary>
    /// <returns>The options.</returns>
    public ActivityOptions ToOptions() => new()
    {
        StartToCloseTimeout = TimeSpan.FromMilliseconds(StartToCloseMs),
        HeartbeatTimeout = HeartbeatMs > 0 ? TimeSpan.FromMilliseconds(HeartbeatMs) : null,
        Retry = new RetryPolicy
        {
            MaxAttempts = MaxAttempts,
            InitialInterval = TimeSpan.FromMilliseconds(InitialIntervalMs),
            BackoffCoefficient = BackoffCoefficient,
            MaxInterval = TimeSpan.FromMilliseconds(MaxIntervalMs),
            NonRetryableErrorTypes = NonRetryable ?? [],
        },
    };
}
