using Patterns.Transport;

namespace Patterns.Hosting;

/// <summary>
/// A consumer's view of its host's stop. It tells whether the host is stopping (so that a handler's
/// <see cref="Messaging.HandlerStoppedException"/> is honoured only then), and lets the consumer stop taking deliveries
/// once its handler gave a message up for the stop: on a broker, the released message would otherwise come straight back
/// to this consumer, be released again, and so on until the consumer is stopped in its turn, a loop of deliveries for as
/// long as the host's other services take to stop. Stopped, the consumer leaves it on the broker for another process.
/// </summary>
internal sealed class ConsumerStop(Func<bool> hostStopping)
{
    private TransportSubscription? _subscription;
    private int _stopTaking;

    /// <summary>Gets whether the host that runs the consumer has begun to stop.</summary>
    public bool HostStopping => hostStopping();

    /// <summary>Sets the subscription the consumer's deliveries come from, once it exists.</summary>
    public void Bind(TransportSubscription subscription)
    {
        Volatile.Write(ref _subscription, subscription);
        if (Volatile.Read(ref _stopTaking) != 0)
        {
            subscription.StopTakingDeliveries();
        }
    }

    /// <summary>
    /// Stops the subscription taking new deliveries, once (see <see cref="TransportSubscription.StopTakingDeliveries"/>):
    /// the host's own stop of the subscription later drains it under its deadline.
    /// </summary>
    public void StopTakingDeliveries()
    {
        if (Interlocked.Exchange(ref _stopTaking, 1) == 0 && Volatile.Read(ref _subscription) is { } subscription)
        {
            subscription.StopTakingDeliveries();
        }
    }
}
