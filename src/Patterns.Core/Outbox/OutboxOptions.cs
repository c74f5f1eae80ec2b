using System.ComponentModel.DataAnnotations;

namespace Patterns.Outbox;

/// <summary>Options of the transactional outbox and its relay.</summary>
public sealed class OutboxOptions
{
    /// <summary>Gets or sets how many outbox messages the relay reads from the store, hands to the transport and removes at a time (its own process's messages come to it in memory and are removed a batch at a time, or when it waits).</summary>
    /// <value>Default 100; between 1 and 10,000.</value>
    [Range(1, 10_000)]
    public int BatchSize { get; set; } = 100;

    /// <summary>
    /// Gets or sets how long the relay's process owns the outbox after its last lease renewal. One relay runs at a time
    /// across every process sharing the store; a standby takes over within about 4/3 of this time after the owner dies.
    /// </summary>
    /// <value>Default 15 seconds; between 1 second and 1 hour.</value>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>Gets or sets the first delay before the relay tries a failed hand-over to the transport again; it doubles up to <see cref="MaxRetryDelay"/>.</summary>
    /// <value>Default 200 milliseconds.</value>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Gets or sets the longest delay between two attempts at handing a message to the transport.</summary>
    /// <value>Default 30 seconds.</value>
    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Gets or sets how many times the relay tries a message the transport refuses for a reason other than being
    /// unavailable (an undeclared queue, a payload over the transport's limit) before it moves the message to
    /// <see cref="DeadLetterCollection"/>. A transport that is unavailable is retried without limit.
    /// </summary>
    /// <value>Default 10; between 1 and 1,000.</value>
    [Range(1, 1_000)]
    public int MaxAttempts { get; set; } = 10;

    /// <summary>Gets or sets the document collection where messages the relay cannot hand over are recorded, with the reason.</summary>
    /// <value>Default <c>patterns.outbox-dead-letters</c>.</value>
    [Required]
    public string DeadLetterCollection { get; set; } = "patterns.outbox-dead-letters";

    /// <summary>Gets or sets a value indicating whether this process runs the relay (it still stores outbox messages when not).</summary>
    /// <value>Default <see langword="true"/>.</value>
    public bool RunRelay { get; set; } = true;
}
