using System.ComponentModel.DataAnnotations;

namespace Patterns.Batching;

/// <summary>Options of a batch consumer of a queue or a pub/sub subscription.</summary>
/// <remarks>
/// The consumer keeps up to <see cref="BatchOptions.MaxCount"/> × (<see cref="BatchOptions.HandlerConcurrency"/> + 1)
/// deliveries in flight, so one batch fills while others are handled. Each message is settled when its batch
/// is done: acknowledged, or (when its item failed after the in-process retries) redelivered up to
/// <see cref="MaxRedeliveries"/> times and then dead-lettered.
/// </remarks>
public sealed class BatchConsumerOptions : BatchOptions
{
    /// <summary>Gets or sets the consumer group; it also names the dead-letter queue of a subscription.</summary>
    /// <value>Queues: the queue name. Subscriptions: <c>{topic}:{handler type}</c>.</value>
    public string? ConsumerGroup { get; set; }

    /// <summary>Gets or sets how many times a message whose item still fails after the in-process retries is handed back to the transport before it is dead-lettered.</summary>
    /// <value>Default 0.</value>
    [Range(0, 1000)]
    public int MaxRedeliveries { get; set; }

    /// <summary>Gets or sets how long the transport waits before a redelivery.</summary>
    /// <value>Default 5 seconds.</value>
    public TimeSpan RedeliveryDelay { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Gets or sets the capacity of the subscription's dead-letter queue (subscriptions only).</summary>
    /// <value>Default 10,000.</value>
    [Range(0, 10_000_000)]
    public int DeadLetterCapacity { get; set; } = 10_000;
}
