namespace Patterns.Transport;

/// <summary>Everything a transport needs to start consuming for one consumer group.</summary>
public sealed record SubscriptionRequest
{
    /// <summary>Gets the queue, or the topic pattern, to consume from.</summary>
    public required TransportAddress Address { get; init; }

    /// <summary>
    /// Gets the consumer group. Consumers in one group compete for messages; for a topic, each group
    /// receives its own copy of every message. The group also names the group's queue and dead-letter queue.
    /// </summary>
    public required string ConsumerGroup { get; init; }

    /// <summary>Gets how many messages this subscription handles at once.</summary>
    /// <value>Default 1.</value>
    public int Concurrency { get; init; } = 1;

    /// <summary>Gets how many messages may be buffered (or prefetched) for this subscription.</summary>
    /// <value>Default 1024.</value>
    public int Capacity { get; init; } = 1024;

    /// <summary>Gets what a publish does when this subscription's buffer is full.</summary>
    /// <value>Default <see cref="QueueFullMode.Wait"/>.</value>
    public QueueFullMode FullMode { get; init; } = QueueFullMode.Wait;

    /// <summary>Gets the capacity of the group's dead-letter queue, where the transport bounds it.</summary>
    /// <value>Default 10,000.</value>
    public int DeadLetterCapacity { get; init; } = 10_000;

    /// <summary>
    /// Gets a value indicating whether the group's queue belongs to this subscription alone and lives only as long
    /// as it (a reply queue, for example). A broker declares such a queue exclusive and non-durable, without a
    /// dead-letter queue, and deletes it, with any messages in it, when the subscription stops or the connection
    /// under it drops. The in-memory transport deletes it too when the subscription stops.
    /// </summary>
    /// <value>Default <see langword="false"/>.</value>
    public bool Temporary { get; init; }

    /// <summary>
    /// Gets a callback the transport invokes when it loses the connection under this subscription. Deliveries stop
    /// until the connection is back; messages already delivered but not yet settled are delivered again (durable
    /// queues) or lost (<see cref="Temporary"/> queues). The argument says what happened. The callback must not
    /// throw or block. In-process transports never call it.
    /// </summary>
    /// <value>Default <see langword="null"/>: nobody is told.</value>
    public Action<Exception>? ConnectionLost { get; init; }

    /// <summary>
    /// Gets a value indicating whether the handler takes each delivery at once and settles it later, together with
    /// others (a batch consumer: a delivery's settlement waits for its batch to fill). A transport whose workers take
    /// their next delivery only once the previous one is settled then hands out the next one meanwhile, keeping up to
    /// <see cref="Concurrency"/> deliveries unsettled, as a broker's prefetch does: otherwise messages queued behind a
    /// worker's unsettled delivery could never join the batch it waits for.
    /// </summary>
    internal bool SettlesLater { get; init; }

    /// <summary>Gets the name of the queue that holds this group's messages.</summary>
    public string QueueName => Address.Kind == AddressKind.Queue ? Address.Name : ConsumerGroup;
}
