using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.RabbitMq;

/// <summary>Creates the RabbitMQ transport.</summary>
/// <remarks>
/// <para>
/// Topology (declared idempotently, the first time it is needed): a queue is a durable queue with a dead-letter
/// exchange and queue (<c>q.dlx</c>, <c>q.dlq</c>); pub/sub topics are routing keys on one topic exchange, and each
/// subscription's consumer group is a durable queue bound to it with the subscription's pattern. Delayed
/// redeliveries wait in per-delay retry queues (<c>q.retry.5s</c>) whose messages expire back into <c>q</c>.
/// </para>
/// <para>
/// Guarantees: with publisher confirms (the default), a send or publish completes only when the broker has the
/// message (persistent messages in durable queues survive a broker restart); a message is acknowledged only after
/// its handler settled it, so a consumer that dies mid-message has it delivered again (at-least-once). The
/// connection, its channels and consumers recover on their own after a broker restart; sends wait for that, up to
/// <see cref="RabbitMqTransportOptions.ReconnectTimeout"/>.
/// </para>
/// </remarks>
public static class RabbitMqTransport
{
    /// <summary>Creates a RabbitMQ transport. It connects on first use.</summary>
    /// <param name="options">Its options; validated here.</param>
    /// <param name="serializer">Turns message bodies into bytes; JSON when <see langword="null"/>.</param>
    /// <param name="timeProvider">The clock for retries and timestamps; <see cref="TimeProvider.System"/> when <see langword="null"/>.</param>
    /// <param name="loggerFactory">Where it logs; nowhere when <see langword="null"/>.</param>
    /// <returns>The transport.</returns>
    /// <exception cref="OptionsValidationException">The options are invalid; the message lists every problem.</exception>
    public static MessageTransport Create(
        RabbitMqTransportOptions options,
        IMessageSerializer? serializer = null,
        TimeProvider? timeProvider = null,
        ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var result = new RabbitMqTransportOptionsValidator().Validate(null, options);
        if (result.Failed)
        {
            throw new OptionsValidationException(string.Empty, typeof(RabbitMqTransportOptions), result.Failures);
        }

        return new RabbitMqMessageTransport(
            options,
            serializer ?? new JsonMessageSerializer(),
            timeProvider ?? TimeProvider.System,
            loggerFactory ?? NullLoggerFactory.Instance);
    }

    /// <summary>
    /// Deletes a consumer group that no code uses any more (renamed or removed) from the broker: its queue, with the messages
    /// it collected, and its retry, dead-letter and delay queues and dead-letter exchange. A group's queue stays on the broker
    /// after the code that declared it is gone and keeps collecting its topics; this is the clean-up.
    /// </summary>
    /// <param name="transport">A RabbitMQ transport (from <see cref="Create"/> or <c>UseRabbitMq</c>).</param>
    /// <param name="consumerGroup">The group's name, as in <c>ConsumerOptions.ConsumerGroup</c> (without <see cref="RabbitMqTransportOptions.NamePrefix"/>).</param>
    /// <param name="cancellationToken">Cancels the deletion.</param>
    /// <returns>How many messages were deleted with the group's queue and retry queue (dead letters are not counted).</returns>
    /// <exception cref="ArgumentException"><paramref name="transport"/> is not a RabbitMQ transport.</exception>
    /// <exception cref="InvalidOperationException">A consumer still consumes from the group's queue; nothing was deleted.</exception>
    public static async Task<long> DeleteConsumerGroupAsync(MessageTransport transport, string consumerGroup, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(consumerGroup);
        if (transport is not RabbitMqMessageTransport rabbit)
        {
            throw new ArgumentException($"DeleteConsumerGroupAsync needs the RabbitMQ transport, not '{transport?.GetType().Name ?? "null"}'.", nameof(transport));
        }

        var connection = await rabbit.ConsumeConnection.GetAsync(cancellationToken).ConfigureAwait(false);
        return await rabbit.Topology.DeleteGroupAsync(connection, consumerGroup, cancellationToken).ConfigureAwait(false);
    }
}
