using System.ComponentModel.DataAnnotations;
using Patterns.Resilience;
using Polly;
using Polly.Retry;

namespace Patterns.Batching;

/// <summary>What adding an item does when the batcher already holds <see cref="BatchOptions.Capacity"/> items.</summary>
public enum BatchFullMode
{
    /// <summary>The producer waits for space (back-pressure). The default.</summary>
    Wait,

    /// <summary>The new item is dropped: the add returns <see langword="false"/>, and the drop is counted and logged.</summary>
    DropNewest,

    /// <summary>The add fails at once with <see cref="Transport.QueueFullException"/>.</summary>
    Reject,
}

/// <summary>
/// When a batch is flushed, how much a batcher buffers, how many batches are handled at once, and how failed
/// items are retried.
/// </summary>
/// <remarks>
/// A batch is flushed on whichever comes first: <see cref="MaxCount"/> items, <see cref="MaxSize"/> in total size,
/// <see cref="MaxAge"/> since its first item, an explicit flush, or completion (including host shutdown).
/// </remarks>
public class BatchOptions : HandlerResilienceOptions
{
    /// <summary>Initializes a new instance of the <see cref="BatchOptions"/> class with the defaults.</summary>
    public BatchOptions()
    {
        Retry = new RetryStrategyOptions
        {
            MaxRetryAttempts = 3,
            Delay = TimeSpan.FromMilliseconds(200),
            BackoffType = DelayBackoffType.Exponential,
            UseJitter = true,
        };
    }

    /// <summary>Gets or sets the most items in one batch.</summary>
    /// <value>Default 100.</value>
    [Range(1, 1_000_000)]
    public int MaxCount { get; set; } = 100;

    /// <summary>
    /// Gets or sets the most total size of one batch, measured by the batcher's size function (for example bytes);
    /// <see langword="null"/> for no size limit. An item that alone is larger than the limit goes in a batch of its own.
    /// </summary>
    /// <value>Default <see langword="null"/>. Transport consumers measure the serialized payload unless given a size function.</value>
    [Range(1, long.MaxValue)]
    public long? MaxSize { get; set; }

    /// <summary>Gets or sets the longest a batch stays open after its first item; <see cref="Timeout.InfiniteTimeSpan"/> to wait for the other limits.</summary>
    /// <value>Default 1 second, read from the batcher's <see cref="TimeProvider"/>.</value>
    public TimeSpan MaxAge { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Gets or sets the most items the batcher holds: in open batches, waiting, and being handled.</summary>
    /// <value>Default 1024; at least <see cref="MaxCount"/>. Transport consumers use it as the subscription's buffer.</value>
    [Range(1, 100_000_000)]
    public int Capacity { get; set; } = 1024;

    /// <summary>Gets or sets what adding an item does when the batcher is full.</summary>
    /// <value>Default <see cref="BatchFullMode.Wait"/>: the producer waits.</value>
    public BatchFullMode FullMode { get; set; } = BatchFullMode.Wait;

    /// <summary>
    /// Gets or sets how many batches are handled at once. With a key selector, one key's batches always go to the
    /// same handler worker, so they are handled in order; without one, batches are handled in order only at 1.
    /// </summary>
    /// <value>Default 1.</value>
    [Range(1, 1024)]
    public int HandlerConcurrency { get; set; } = 1;
}
