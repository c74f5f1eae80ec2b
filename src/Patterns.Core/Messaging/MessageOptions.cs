namespace Patterns.Messaging;

/// <summary>Per-message settings for a publish or send. A value type: passing it allocates nothing.</summary>
public readonly record struct MessageOptions
{
    /// <summary>Gets the partition key: messages with the same key are handled in order within a consumer group.</summary>
    public string? PartitionKey { get; init; }

    /// <summary>Gets the correlation id; a new conversation when <see langword="null"/>.</summary>
    public Guid? CorrelationId { get; init; }

    /// <summary>Gets the id of the message that caused this one.</summary>
    public Guid? CausationId { get; init; }

    /// <summary>Gets the message id to use; a new one when <see langword="null"/>.</summary>
    public Guid? MessageId { get; init; }

    /// <summary>Gets extra headers.</summary>
    public IReadOnlyDictionary<string, string>? Headers { get; init; }

    /// <summary>
    /// Gets when the message may be handled, at the earliest (scheduled send). The transport accepts it at once; the
    /// consumer puts it off until then, so it is as durable as the transport's delayed redelivery (on RabbitMQ, a delay
    /// queue with publisher confirms; in-memory, a timer on the host's <see cref="TimeProvider"/>).
    /// </summary>
    /// <value><see langword="null"/>: handled as soon as possible. Set either this or <see cref="Delay"/>, not both.</value>
    public DateTimeOffset? DeliverAt { get; init; }

    /// <summary>Gets how long after sending the message may be handled, at the earliest (delayed send); see <see cref="DeliverAt"/>.</summary>
    /// <value><see langword="null"/>: handled as soon as possible. Must not be negative.</value>
    public TimeSpan? Delay { get; init; }

    /// <summary>
    /// Gets how long the message stays worth handling, from when it is sent. A consumer that receives it later dead-letters
    /// it with the reason <c>expired</c> (<see cref="EnvelopeHeaders.ExpiredReason"/>) and never hands it to a handler; a
    /// handler that is still running at the deadline sees its token cancelled.
    /// </summary>
    /// <value><see langword="null"/>: never expires. Must be positive.</value>
    public TimeSpan? TimeToLive { get; init; }

    /// <summary>Gets a value indicating whether scheduling or a time to live is set, so the envelope needs their headers.</summary>
    internal bool IsTimed => DeliverAt is not null || Delay is not null || TimeToLive is not null;
}
