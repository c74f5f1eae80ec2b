namespace Patterns.RequestResponse;

/// <summary>Options of the request client.</summary>
public sealed class RequestResponseOptions
{
    /// <summary>Gets or sets how long a request waits for its response when the call gives no timeout.</summary>
    /// <value>
    /// Default 30 seconds. <see cref="Timeout.InfiniteTimeSpan"/> for no limit; otherwise positive and at most
    /// 4,294,967,294 ms (about 49.7 days), the longest a timer can wait.
    /// </value>
    public TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The longest finite request timeout: the longest a timer can wait.</summary>
    internal static readonly TimeSpan MaxTimeout = TimeSpan.FromMilliseconds(uint.MaxValue - 1);

    /// <summary>What a request timeout may be.</summary>
    internal const string TimeoutRangeMessage =
        "A request timeout must be positive and at most 4,294,967,294 ms (about 49.7 days, the longest a timer can wait), or Timeout.InfiniteTimeSpan.";

    /// <summary>Gets or sets a value indicating whether, on an in-process transport, a request calls its handler directly instead of travelling as a message.</summary>
    /// <value>Default <see langword="true"/>.</value>
    public bool PreferInProcessDispatch { get; set; } = true;

    /// <summary>Gets or sets the queue-name prefix for requests travelling over a transport; a request type's queue is <c>{prefix}{request type name}</c>.</summary>
    /// <value>Default <c>requests.</c>.</value>
    public string RequestQueuePrefix { get; set; } = "requests.";

    /// <summary>Gets or sets how many requests of one type are handled at once when requests travel over a transport.</summary>
    /// <value>Default 16.</value>
    [System.ComponentModel.DataAnnotations.Range(1, 1024)]
    public int TransportConcurrency { get; set; } = 16;
}
