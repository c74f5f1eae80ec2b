namespace Patterns.RabbitMq;

/// <summary>
/// The messages a consumer of this transport returned to the broker by a plain requeue (nack with requeue, or leaving
/// them unacknowledged on a channel that then closed) where it meant to hand them back uncounted: a release or a
/// deferral whose copy could not be published (the drain deadline had passed, the broker refused the copy, the publish
/// failed, or the channel the message came on had closed), and deliveries it received but never handed to a handler
/// (the drain deadline had passed, or their channel had closed). AMQP 0-9-1 cannot change a message's headers on a requeue,
/// and marks it redelivered, which the transport counts as a delivery; so when such a message comes again to a
/// consumer of this transport, its count is set back to the one it was handed back with, and a release gets its mark.
/// </summary>
/// <remarks>
/// Kept in memory, per transport (shared by its subscriptions, so a new subscription after a stop finds what the old
/// one returned), keyed by the consumer group's queue and message id. It does not survive a restart of the process,
/// and a copy taken by a consumer in another process is counted; both are bounded to one extra count per requeue. Only
/// the last <see cref="Capacity"/> returns are kept (one taken already still holds its place until it is the oldest):
/// older ones are forgotten, and their copies, if they come, are counted. A message handed back this way more than
/// <see cref="MaxReturnsPerMessage"/> times while it is remembered is counted from then on, so a copy the broker keeps
/// refusing cannot loop uncounted for ever: it reaches its consumer's delivery limit as before.
/// </remarks>
internal sealed class UncountedReturns
{
    /// <summary>The most entries kept.</summary>
    public const int Capacity = 10_000;

    /// <summary>How many plain requeues of one message are remembered as uncounted before its copies count again.</summary>
    public const int MaxReturnsPerMessage = 10;

    private readonly Lock _gate = new();
    private readonly Dictionary<(string Queue, Guid MessageId), Entry> _entries = [];
    private readonly Queue<((string Queue, Guid MessageId) Key, long Sequence)> _order = new();
    private long _sequence;
    private int _pending;
    private volatile int _count;

    /// <summary>Gets how many returns wait for their copy.</summary>
    public int Count => _count;

    /// <summary>Remembers that <paramref name="messageId"/> went back to <paramref name="queue"/> by a plain requeue.</summary>
    /// <param name="queue">The consumer group's queue.</param>
    /// <param name="messageId">The message.</param>
    /// <param name="deliveryCount">The count the copy that comes again must show.</param>
    /// <param name="released">Whether it must carry the release mark.</param>
    /// <returns><see langword="false"/> when the message was returned this way too often already: its copy counts.</returns>
    public bool Add(string queue, Guid messageId, int deliveryCount, bool released)
    {
        lock (_gate)
        {
            var key = (queue, messageId);
            var returns = 1;
            if (_entries.TryGetValue(key, out var previous))
            {
                returns = previous.Returns + 1;
                if (previous.Pending)
                {
                    _pending--;
                }
            }

            var pending = returns <= MaxReturnsPerMessage;
            var sequence = ++_sequence;
            _entries[key] = new Entry(deliveryCount, released, sequence, returns, pending);
            if (pending)
            {
                _pending++;
            }

            _order.Enqueue((key, sequence));
            while (_order.Count > Capacity)
            {
                var (oldest, at) = _order.Dequeue();
                if (_entries.TryGetValue(oldest, out var entry) && entry.Sequence == at)
                {
                    _entries.Remove(oldest);
                    if (entry.Pending)
                    {
                        _pending--;
                    }
                }
            }

            _count = _pending;
            return pending;
        }
    }

    /// <summary>Takes what was remembered for a redelivered message, if anything.</summary>
    public bool TryTake(string queue, Guid messageId, out int deliveryCount, out bool released)
    {
        deliveryCount = 0;
        released = false;
        if (_count == 0)
        {
            return false;
        }

        lock (_gate)
        {
            var key = (queue, messageId);
            if (!_entries.TryGetValue(key, out var entry) || !entry.Pending)
            {
                return false;
            }

            // Kept, taken, until it is the oldest: a message returned again finds how often it was.
            _entries[key] = entry with { Pending = false };
            _pending--;
            _count = _pending;
            deliveryCount = entry.DeliveryCount;
            released = entry.Released;
            return true;
        }
    }

    private readonly record struct Entry(int DeliveryCount, bool Released, long Sequence, int Returns, bool Pending);
}
