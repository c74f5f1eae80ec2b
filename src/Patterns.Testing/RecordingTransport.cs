using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.Testing;

/// <summary>Wraps the application's transport and records its traffic into a <see cref="PatternsTestHarness"/>.</summary>
internal sealed class RecordingTransport(MessageTransport inner, PatternsTestHarness harness) : MessageTransport
{
    public override string SystemName => inner.SystemName;

    public override bool IsInProcess => inner.IsInProcess;

    public override int MaxPayloadBytes => inner.MaxPayloadBytes;

    public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) =>
        inner.DeclareQueueAsync(queue, settings, cancellationToken);

    public override async ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default)
    {
        await inner.SendAsync(queue, envelope, cancellationToken).ConfigureAwait(false);
        harness.RecordSent(TransportAddress.Queue(queue), envelope);
    }

    public override async ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default)
    {
        var routed = await inner.PublishAsync(topic, envelope, cancellationToken).ConfigureAwait(false);
        harness.RecordSent(TransportAddress.Topic(topic), envelope);
        return routed;
    }

    public override ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(handler);
        var group = request.ConsumerGroup;
        return inner.SubscribeAsync(request, async (envelope, ct) =>
        {
            var settlement = await handler(envelope, ct).ConfigureAwait(false);
            harness.RecordDelivery(group, envelope, settlement);
            return settlement;
        }, cancellationToken);
    }

    public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
        inner.PeekDeadLettersAsync(queue, maxCount, cancellationToken);

    public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
        inner.ReplayDeadLettersAsync(queue, maxCount, cancellationToken);

    public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) =>
        inner.PurgeDeadLettersAsync(queue, cancellationToken);

    public override ValueTask DisposeAsync() => inner.DisposeAsync();
}
