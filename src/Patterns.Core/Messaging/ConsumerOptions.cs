using System.ComponentModel.DataAnnotations;
using Patterns.Resilience;
using Patterns.Transport;

namespace Patterns.Messaging;

/// <summary>Options of one pub/sub subscription or queue consumer.</summary>
public sealed class ConsumerOptions : HandlerResilienceOptions
{
    /// <summary>Initializes a new instance of the <see cref="ConsumerOptions"/> class with the defaults.</summary>
    public ConsumerOptions()
    {
        Retry = PipelineFactory.DefaultRetry();
    }

    /// <summary>
    /// Gets or sets the consumer group. For a subscription, each group receives its own copy of every message;
    /// consumers in one group compete. It also names the subscription's dead-letter queue.
    /// </summary>
    /// <value>Subscriptions: <c>{topic}:{handler type}</c>. Queue consumers: the queue name.</value>
    public string? ConsumerGroup { get; set; }

    /// <summary>Gets or sets how many messages are handled at once. Messages with the same partition key are still handled one after another, in order.</summary>
    /// <value>Default 1.</value>
    [Range(1, 1024)]
    public int Concurrency { get; set; } = 1;

    /// <summary>Gets or sets how many messages may wait in this subscription's buffer (subscriptions only; a queue's capacity is set on the queue).</summary>
    /// <value>Default 1024.</value>
    [Range(1, 10_000_000)]
    public int Capacity { get; set; } = 1024;

    /// <summary>Gets or sets what a publish does when this subscription's buffer is full (subscriptions only).</summary>
    /// <value>Default <see cref="QueueFullMode.Wait"/>.</value>
    public QueueFullMode FullMode { get; set; } = QueueFullMode.Wait;

    /// <summary>Gets or sets how many times a message that still fails after the in-process retries is handed back to the transport for redelivery before it is dead-lettered.</summary>
    /// <value>Default 0: dead-letter after the in-process retries.</value>
    [Range(0, 1000)]
    public int MaxRedeliveries { get; set; }

    /// <summary>Gets or sets how long the transport waits before a redelivery.</summary>
    /// <value>Default 5 seconds.</value>
    public TimeSpan RedeliveryDelay { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Gets or sets the capacity of this consumer's dead-letter queue (subscriptions only).</summary>
    /// <value>Default 10,000; the oldest dead letters are discarded, and logged, past it.</value>
    [Range(0, 10_000_000)]
    public int DeadLetterCapacity { get; set; } = 10_000;
}
