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
}
