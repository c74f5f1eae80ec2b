using Patterns.Hosting;

namespace Patterns.Messaging;

/// <summary>
/// What a handler knows about the message it handles, and a way to send follow-up messages that carry
/// the conversation on (same correlation id, this message as their cause).
/// </summary>
/// <remarks>A value type, so handing it to a handler allocates nothing. Valid until the handler's task completes.</remarks>
public readonly struct MessageContext
{
    private readonly MessageBus? _bus;

    internal MessageContext(in Envelope envelope, string source, string consumerGroup, IServiceProvider services, MessageBus bus)
    {
        Envelope = envelope;
        Source = source;
        ConsumerGroup = consumerGroup;
        Services = services;
        _bus = bus;
    }

    /// <summary>Gets the envelope the message arrived in.</summary>
    public Envelope Envelope { get; }

    /// <summary>Gets the topic pattern or queue the message was consumed from.</summary>
    public string Source { get; }

    /// <summary>Gets the consumer group that is handling the message.</summary>
    public string ConsumerGroup { get; }

    /// <summary>Gets the services of the handler's scope.</summary>
    public IServiceProvider Services { get; }

    /// <summary>Gets the message id.</summary>
    public Guid MessageId => Envelope.MessageId;

    /// <summary>Gets the correlation id, if any.</summary>
    public Guid? CorrelationId => Envelope.CorrelationId;

    /// <summary>Gets how many times the message was delivered before.</summary>
    public int DeliveryCount => Envelope.DeliveryCount;

    /// <summary>Publishes a follow-up message to a topic, continuing this message's conversation.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="topic">The topic; the message type's name when <see langword="null"/>.</param>
    /// <param name="message">The message.</param>
    /// <param name="cancellationToken">Cancels waiting for buffer space.</param>
    /// <returns>A task that completes when the transport has accepted the message.</returns>
    public ValueTask PublishAsync<TMessage>(string? topic, TMessage message, CancellationToken cancellationToken = default)
        where TMessage : notnull =>
        Bus.PublishCoreAsync(topic, message, FollowUp(), cancellationToken);

    /// <summary>Sends a follow-up message to a queue, continuing this message's conversation.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="queue">The queue.</param>
    /// <param name="message">The message.</param>
    /// <param name="cancellationToken">Cancels waiting for queue space.</param>
    /// <returns>A task that completes when the transport has accepted the message.</returns>
    public ValueTask SendAsync<TMessage>(string queue, TMessage message, CancellationToken cancellationToken = default)
        where TMessage : notnull =>
        Bus.SendAsync(queue, message, FollowUp(), cancellationToken);

    private MessageBus Bus => _bus ?? throw new InvalidOperationException("This MessageContext was not created by Patterns.");

    internal MessageOptions FollowUp() => new()
    {
        CorrelationId = Envelope.CorrelationId ?? Envelope.MessageId,
        CausationId = Envelope.MessageId,
    };
}
