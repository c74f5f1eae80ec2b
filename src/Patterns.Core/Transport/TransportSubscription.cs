namespace Patterns.Transport;

/// <summary>A running consumer group on a <see cref="MessageTransport"/>.</summary>
public abstract class TransportSubscription : IAsyncDisposable
{
    /// <summary>Gets what this subscription consumes.</summary>
    public abstract SubscriptionRequest Request { get; }

    /// <summary>
    /// Stops taking new messages and drains: messages already handed to this subscription are handled
    /// until <paramref name="drainDeadline"/> is cancelled, after which running handlers are cancelled and
    /// what is left is given back to the transport (brokers) or dropped and logged (in-process).
    /// </summary>
    /// <param name="drainDeadline">Cancelled when draining must end.</param>
    /// <returns>A task that completes when every handler has returned.</returns>
    public abstract Task StopAsync(CancellationToken drainDeadline);

    /// <summary>
    /// Stops taking new messages, without waiting and without a deadline, because a handler gave a message up for its
    /// host's stop (see <see cref="Messaging.HandlerStoppedException"/>): a broker would otherwise hand the released message
    /// straight back. <see cref="StopAsync"/> still drains, under its deadline, later. Nothing by default (the in-memory
    /// transport holds such releases until the subscription is unbound instead).
    /// </summary>
    internal virtual void StopTakingDeliveries()
    {
    }

    /// <summary>
    /// Tells this subscription that its host has begun to stop (before any hosted service stops), while it is still bound.
    /// Nothing by default; the in-memory transport then keeps what a handler releases until the subscription is unbound,
    /// since a message handed straight back would come back to this same subscription, whose handler is stopping.
    /// </summary>
    internal virtual void BeginDrain()
    {
    }

    /// <summary>Reports whether this consumer is taking messages. A transport reports a consumer that stopped, lost its channel or is re-subscribing as degraded.</summary>
    /// <returns>Its health; healthy by default.</returns>
    public virtual ComponentHealth GetHealth() => ComponentHealth.Healthy(Request.ConsumerGroup, "consuming");

    /// <summary>Stops without draining.</summary>
    /// <returns>A task that completes when every handler has returned.</returns>
    public virtual async ValueTask DisposeAsync()
    {
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync().ConfigureAwait(false);
        await StopAsync(cts.Token).ConfigureAwait(false);
        GC.SuppressFinalize(this);
    }
}
