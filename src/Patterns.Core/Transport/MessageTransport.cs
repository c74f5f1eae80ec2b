using Patterns.Messaging;

namespace Patterns.Transport;

/// <summary>
/// The transport SPI: the one contract every messaging pattern is written against. Send to a queue,
/// publish to a topic, subscribe a consumer group to a queue or topic pattern, and settle each delivery
/// (ack, retry, dead-letter) through the <see cref="Settlement"/> its handler returns.
/// </summary>
/// <remarks>
/// <para>
/// Implementations must be thread-safe. A transport is done when it passes the transport conformance suite
/// (<c>tests/Patterns.Conformance</c>), not when it compiles.
/// </para>
/// <para>
/// Delivery: a message published to a topic reaches every subscription (consumer group) whose pattern
/// matches it, once per group; a message sent to a queue reaches exactly one consumer. In-process transports
/// deliver exactly once; brokers deliver at least once. Messages with the same
/// <see cref="Envelope.PartitionKey"/> are handled in the order they were sent within one consumer group.
/// </para>
/// </remarks>
public abstract class MessageTransport : IAsyncDisposable
{
    /// <summary>Gets the value of the <c>messaging.system</c> telemetry attribute for this transport.</summary>
    public abstract string SystemName { get; }

    /// <summary>Gets a value indicating whether messages stay inside this process, so bodies travel by reference and request-response may dispatch inline.</summary>
    public abstract bool IsInProcess { get; }

    /// <summary>Gets the largest <see cref="Envelope.Payload"/> the transport accepts, in bytes.</summary>
    public abstract int MaxPayloadBytes { get; }

    /// <summary>Declares a point-to-point queue. Calling it again with the same name changes nothing.</summary>
    /// <param name="queue">The queue name.</param>
    /// <param name="settings">Capacity and full mode.</param>
    /// <param name="cancellationToken">Cancels the declaration.</param>
    /// <returns>A task that completes when the queue exists.</returns>
    public abstract ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default);

    /// <summary>Sends a message to a queue, where exactly one consumer will handle it.</summary>
    /// <param name="queue">The queue name.</param>
    /// <param name="envelope">The message.</param>
    /// <param name="cancellationToken">Cancels waiting for space in a full queue.</param>
    /// <returns>A task that completes when the transport has accepted the message.</returns>
    /// <exception cref="QueueFullException">The queue is full and rejects new messages.</exception>
    /// <exception cref="MessageTooLargeException">The payload is larger than <see cref="MaxPayloadBytes"/>.</exception>
    /// <exception cref="ArgumentException">The envelope has no message id, or neither a body nor a payload.</exception>
    /// <exception cref="TransportUnavailableException">The transport could not reach its broker in time.</exception>
    public abstract ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default);

    /// <summary>Publishes a message to a topic; every subscription whose pattern matches receives it.</summary>
    /// <param name="topic">The topic (no wildcards).</param>
    /// <param name="envelope">The message.</param>
    /// <param name="cancellationToken">Cancels waiting for space in a full subscription buffer.</param>
    /// <returns><see langword="true"/> when at least one subscription received the message; <see langword="false"/> when nobody subscribes (a no-op).</returns>
    /// <exception cref="QueueFullException">A subscription's buffer is full and rejects new messages.</exception>
    /// <exception cref="MessageTooLargeException">The payload is larger than <see cref="MaxPayloadBytes"/>.</exception>
    /// <exception cref="TransportUnavailableException">The transport could not reach its broker in time.</exception>
    public abstract ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default);

    /// <summary>Starts consuming for one consumer group.</summary>
    /// <param name="request">What to consume and how.</param>
    /// <param name="handler">Called for each delivery; its <see cref="Settlement"/> settles the message.</param>
    /// <param name="cancellationToken">Cancels starting.</param>
    /// <returns>The running subscription; stop it to drain.</returns>
    public abstract ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default);

    /// <summary>Reads messages from a queue's dead-letter queue without removing them.</summary>
    /// <param name="queue">The queue (or subscription consumer group) whose dead letters to read.</param>
    /// <param name="maxCount">The most messages to return.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The oldest dead letters first.</returns>
    public abstract ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default);

    /// <summary>Moves messages from a queue's dead-letter queue back to the queue, oldest first, with their delivery count reset.</summary>
    /// <param name="queue">The queue (or subscription consumer group).</param>
    /// <param name="maxCount">The most messages to move.</param>
    /// <param name="cancellationToken">Cancels the replay.</param>
    /// <returns>How many messages were moved.</returns>
    public abstract ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default);

    /// <summary>Deletes every message in a queue's dead-letter queue.</summary>
    /// <param name="queue">The queue (or subscription consumer group).</param>
    /// <param name="cancellationToken">Cancels the purge.</param>
    /// <returns>How many messages were deleted.</returns>
    public abstract ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default);

    /// <summary>Stops the transport and releases its resources. Subscriptions still running are stopped without draining.</summary>
    /// <returns>A task that completes when the transport is stopped.</returns>
    public abstract ValueTask DisposeAsync();

    /// <summary>Reports the health of each connection this transport holds; an in-process transport holds none and reports an empty list.</summary>
    /// <returns>One entry per connection: degraded while its broker is unreachable.</returns>
    public virtual IReadOnlyList<ComponentHealth> GetConnectionHealth() => [];

    /// <summary>Gets the option that sets <see cref="MaxPayloadBytes"/>, named in <see cref="MessageTooLargeException"/>.</summary>
    protected virtual string MaxPayloadBytesOption => $"{GetType().Name}.MaxPayloadBytes";

    /// <summary>Checks an envelope that is about to be sent, with clear errors for what is wrong.</summary>
    /// <param name="destination">Where it is going, for the error message.</param>
    /// <param name="envelope">The envelope.</param>
    /// <exception cref="ArgumentException">The envelope has no id, or no body and no payload.</exception>
    /// <exception cref="MessageTooLargeException">The payload is too large.</exception>
    protected void ValidateOutgoing(string destination, in Envelope envelope)
    {
        if (envelope.MessageId == Guid.Empty)
        {
            throw new ArgumentException($"The message to '{destination}' has no MessageId; every envelope needs a unique id.", nameof(envelope));
        }

        if (envelope.Body is null && envelope.PayloadLength == 0)
        {
            throw new ArgumentException($"The message to '{destination}' has neither a Body nor a Payload.", nameof(envelope));
        }

        if (envelope.PayloadLength > MaxPayloadBytes)
        {
            throw new MessageTooLargeException(destination, envelope.PayloadLength, MaxPayloadBytes, MaxPayloadBytesOption);
        }
    }
}
