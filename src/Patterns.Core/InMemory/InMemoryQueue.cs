using System.Threading.Channels;
using Patterns.Messaging;
using Patterns.Telemetry;
using Patterns.Transport;

namespace Patterns.InMemory;

/// <summary>
/// One queue (a point-to-point queue, or one subscription group's copy of a topic). Messages are routed,
/// as they are sent, to one bounded lane per consumer worker: by partition key when there is one (so a
/// key's messages stay in order on one worker), otherwise to the next lane in turn, or when it is full to one with
/// space (from the lane that last had some). No dispatcher
/// thread sits in between, so a message costs one channel write and one read.
/// </summary>
internal sealed class InMemoryQueue
{
    private readonly InMemoryMessageTransport _transport;
    private readonly Lock _gate = new();
    private readonly LinkedList<DeadLetterMessage> _deadLetters = new();
    private readonly List<InMemorySubscription> _subscriptions = [];
    private readonly HashSet<DelayedRedelivery> _delayed = [];
    private volatile Lane[] _lanes;
    private int _roundRobin;

    // The lane that last took a message after the one whose turn it was had no room (see EnqueueAsync).
    private int _roomHint;
    private volatile bool _closed;

    public InMemoryQueue(string name, int capacity, QueueFullMode fullMode, int deadLetterCapacity, InMemoryMessageTransport transport)
    {
        Name = name;
        Capacity = capacity;
        FullMode = fullMode;
        DeadLetterCapacity = deadLetterCapacity;
        _transport = transport;
        _lanes = [new Lane(capacity, owner: null)];
    }

    public string Name { get; }

    public InMemoryMessageTransport Transport => _transport;

    public int Capacity { get; }

    public QueueFullMode FullMode { get; }

    public int DeadLetterCapacity { get; }

    public ValueTask EnqueueAsync(Envelope envelope, CancellationToken cancellationToken)
    {
        var lanes = _lanes;
        Lane lane;
        if (lanes.Length == 1)
        {
            lane = lanes[0];
            if (lane.TryWrite(envelope))
            {
                return default;
            }
        }
        else if (envelope.PartitionKey is { } key)
        {
            lane = lanes[PartitionHash.Partition(key, lanes.Length)];
            if (lane.TryWrite(envelope))
            {
                return default;
            }
        }
        else
        {
            var start = (int)((uint)Interlocked.Increment(ref _roundRobin) % (uint)lanes.Length);
            lane = lanes[start];
            if (lane.TryWrite(envelope))
            {
                return default;
            }

            // The lane whose turn it is is full: look for room from the lane that last took a message this way, not from
            // the next in turn. When every lane is nearly full (senders faster than the consumers) a scan from the next
            // lane probed about 30 full lanes per send on a peer link's 320; the lane that last had room usually has more
            // (its worker just took its batch), so a consumer that makes room quickly gets the messages, as before.
            var from = (int)((uint)Volatile.Read(ref _roomHint) % (uint)lanes.Length);
            for (var i = 0; i < lanes.Length; i++)
            {
                var index = (from + i) % lanes.Length;
                if (index == start)
                {
                    continue;
                }

                if (lanes[index].TryWrite(envelope))
                {
                    if (index != from)
                    {
                        Volatile.Write(ref _roomHint, index);
                    }

                    return default;
                }
            }
        }

        return EnqueueSlowAsync(envelope, lane, lanes, cancellationToken);
    }

    private async ValueTask EnqueueSlowAsync(Envelope envelope, Lane lane, Lane[] lanes, CancellationToken cancellationToken)
    {
        while (true)
        {
            if (_closed)
            {
                throw new ObjectDisposedException(nameof(InMemoryTransport), $"The in-memory transport is stopped; queue '{Name}' accepts no more messages.");
            }

            if (!ReferenceEquals(lanes, _lanes))
            {
                // Consumers attached or detached since this send started: route again.
                await EnqueueAsync(envelope, cancellationToken).ConfigureAwait(false);
                return;
            }

            if (FullMode == QueueFullMode.Reject)
            {
                if (lane.TryWrite(envelope))
                {
                    return;
                }

                if (ReferenceEquals(lanes, _lanes) && !lane.IsCompleted)
                {
                    throw new QueueFullException(Name, Capacity);
                }

                continue;
            }

            try
            {
                await lane.WriteAsync(envelope, cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (ChannelClosedException)
            {
                // The lane's consumer detached while we waited; the loop routes again.
                await Task.Yield();
            }
        }
    }

    public void Attach(InMemorySubscription subscription)
    {
        lock (_gate)
        {
            if (_closed)
            {
                throw new ObjectDisposedException(nameof(InMemoryTransport));
            }

            var current = _lanes;
            var workers = subscription.Workers;
            var totalWorkers = workers;
            foreach (var s in _subscriptions)
            {
                totalWorkers += s.Workers;
            }

            var laneCapacity = Math.Max(1, (Capacity + totalWorkers - 1) / totalWorkers);
            var newLanes = new Lane[workers];
            var next = new List<Lane>(current.Length + workers);
            for (var i = 0; i < workers; i++)
            {
                // Messages buffered while nobody consumed stay in order: the first worker adopts that lane.
                // It keeps what it holds but takes the bound of a worker's lane: left at the whole queue's bound, one
                // worker would buffer most of the queue behind its one handler while the others starve (a batch
                // consumer then waits out MaxAge for every message of that lane).
                if (i == 0 && current.Length == 1 && current[0].Owner is null)
                {
                    current[0].Owner = subscription;
                    current[0].SetCapacity(laneCapacity);
                    newLanes[0] = current[0];
                }
                else
                {
                    newLanes[i] = new Lane(laneCapacity, subscription);
                }
            }

            // The queue's bound is shared by every worker of every subscription: the lanes already there shrink to
            // the new share, so one more consumer does not raise how much the queue buffers.
            foreach (var lane in current)
            {
                if (lane.Owner is not null && !ReferenceEquals(lane.Owner, subscription))
                {
                    lane.SetCapacity(laneCapacity);
                    next.Add(lane);
                }
            }

            next.AddRange(newLanes);
            _subscriptions.Add(subscription);
            subscription.Lanes = newLanes;
            _lanes = Interleave(next);
        }
    }

    /// <summary>
    /// Orders lanes so that neighbours belong to different consumers: messages without a partition key go to the next
    /// lane with space, so consecutive messages spread over the consumers instead of filling one consumer's lanes first.
    /// </summary>
    private static Lane[] Interleave(List<Lane> lanes)
    {
        var byOwner = lanes.GroupBy(l => l.Owner).Select(g => g.ToArray()).ToArray();
        if (byOwner.Length < 2)
        {
            return [.. lanes];
        }

        var result = new Lane[lanes.Count];
        var n = 0;
        for (var round = 0; n < result.Length; round++)
        {
            foreach (var group in byOwner)
            {
                if (round < group.Length)
                {
                    result[n++] = group[round];
                }
            }
        }

        return result;
    }

    public void Detach(InMemorySubscription subscription)
    {
        bool delete;
        lock (_gate)
        {
            if (!_subscriptions.Remove(subscription))
            {
                return;
            }

            var remaining = _lanes.Where(l => !ReferenceEquals(l.Owner, subscription)).ToArray();
            var last = remaining.Length == 0;
            if (last)
            {
                // Unbind before the new, unread lane is installed, so a publish routed after this point finds
                // no group rather than a buffer nobody reads.
                _transport.OnLastConsumerDetached(this);
            }

            // A temporary queue lives as long as its subscription, as on a broker: it goes, with what is left in it.
            delete = last && subscription.Request.Temporary;
            _lanes = last ? [new Lane(Capacity, owner: null)] : remaining;
            if (!last)
            {
                // The workers that stay share the queue's bound again.
                var share = Math.Max(1, (Capacity + remaining.Length - 1) / remaining.Length);
                foreach (var lane in remaining)
                {
                    lane.SetCapacity(share);
                }
            }

            foreach (var lane in subscription.Lanes)
            {
                lane.Complete();
            }
        }

        if (delete)
        {
            _transport.RemoveQueue(this);
            Close();
        }
    }

    public void Close()
    {
        lock (_gate)
        {
            _closed = true;
            foreach (var lane in _lanes)
            {
                lane.Complete();
            }

            var dropped = 0;
            foreach (var lane in _lanes)
            {
                if (lane.Owner is null)
                {
                    dropped += lane.Clear();
                }
            }

            if (dropped > 0)
            {
                RecordDropped(dropped);
            }

            // Delayed redeliveries whose timers have not fired would otherwise vanish without a trace.
            if (_delayed.Count > 0)
            {
                foreach (var pending in _delayed)
                {
                    pending.Timer?.Dispose();
                }

                var lost = _delayed.Count;
                _delayed.Clear();
                PatternsTelemetry.Dropped.Add(lost, PatternsTelemetry.Tags(_transport.SystemName, Name));
                InMemoryLog.DelayedRedeliveriesLost(_transport.Logger, lost, Name);
            }
        }
    }

    public void Retry(Envelope envelope, in Settlement settlement)
    {
        var redelivery = settlement.NextDelivery(envelope);
        var delay = settlement.Delay;
        if (delay <= TimeSpan.Zero)
        {
            _ = RedeliverAsync(redelivery);
            return;
        }

        var state = new DelayedRedelivery(this, redelivery);
        lock (_gate)
        {
            if (_closed)
            {
                RecordDropped(1);
                return;
            }

            // Tracked before its timer exists, so neither Close nor the timer can miss it: whichever takes it
            // from the set first (Fire to redeliver, Close to report it lost) is the only one that acts.
            _delayed.Add(state);
        }

        state.Timer = _transport.TimeProvider.CreateTimer(static s => ((DelayedRedelivery)s!).Fire(), state, delay, Timeout.InfiniteTimeSpan);
    }

    public void DeadLetter(Envelope envelope, in Settlement settlement)
    {
        var message = DeadLetterMessage.Create(envelope, Name, settlement, _transport.TimeProvider.GetUtcNow());
        var exception = settlement.Exception;
        var reason = message.Reason;

        var evicted = 0;
        lock (_gate)
        {
            _deadLetters.AddLast(message);
            while (_deadLetters.Count > DeadLetterCapacity)
            {
                _deadLetters.RemoveFirst();
                evicted++;
            }
        }

        PatternsTelemetry.DeadLettered.Add(1, PatternsTelemetry.Tags(_transport.SystemName, Name));
        InMemoryLog.DeadLettered(_transport.Logger, envelope.MessageId, Name, reason, exception);
        if (evicted > 0)
        {
            InMemoryLog.DeadLetterEvicted(_transport.Logger, evicted, Name, DeadLetterCapacity);
            PatternsTelemetry.Dropped.Add(evicted, PatternsTelemetry.Tags(_transport.SystemName, Name));
        }
    }

    public IReadOnlyList<DeadLetterMessage> PeekDeadLetters(int maxCount)
    {
        lock (_gate)
        {
            return _deadLetters.Take(maxCount).ToArray();
        }
    }

    public int PurgeDeadLetters()
    {
        lock (_gate)
        {
            var count = _deadLetters.Count;
            _deadLetters.Clear();
            return count;
        }
    }

    public async ValueTask<int> ReplayDeadLettersAsync(int maxCount, CancellationToken cancellationToken)
    {
        var replayed = 0;
        while (replayed < maxCount)
        {
            DeadLetterMessage? next;
            lock (_gate)
            {
                next = _deadLetters.First?.Value;
                if (next is null)
                {
                    break;
                }

                _deadLetters.RemoveFirst();
            }

            var envelope = DeadLetterMessage.ForReplay(next.Envelope);
            try
            {
                await EnqueueAsync(envelope, cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                lock (_gate)
                {
                    _deadLetters.AddFirst(next);
                }

                throw;
            }

            replayed++;
        }

        return replayed;
    }

    /// <summary>Counts dropped messages in the metric only, for callers that logged them one by one.</summary>
    internal void RecordDroppedQuietly(int count) =>
        PatternsTelemetry.Dropped.Add(count, PatternsTelemetry.Tags(_transport.SystemName, Name));

    internal void RecordDropped(int count)
    {
        PatternsTelemetry.Dropped.Add(count, PatternsTelemetry.Tags(_transport.SystemName, Name));
        InMemoryLog.MessagesDropped(_transport.Logger, count, Name);
    }

    private async Task RedeliverAsync(Envelope envelope)
    {
        try
        {
            await EnqueueAsync(envelope, CancellationToken.None).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            RecordDropped(1);
        }
        catch (Exception ex)
        {
            // A Reject-mode queue that is full refuses the redelivery: the message goes to the dead-letter queue
            // rather than being lost.
            DeadLetter(envelope, Settlement.DeadLetter($"The redelivery could not be queued: {ex.Message}", ex));
        }
    }

    private bool TryTakeDelayed(DelayedRedelivery redelivery)
    {
        lock (_gate)
        {
            return _delayed.Remove(redelivery);
        }
    }

    private sealed class DelayedRedelivery(InMemoryQueue queue, Envelope envelope)
    {
        public ITimer? Timer { get; set; }

        public void Fire()
        {
            // Close may have taken it already (and reported it lost).
            if (!queue.TryTakeDelayed(this))
            {
                return;
            }

            Timer?.Dispose();
            _ = queue.RedeliverAsync(envelope);
        }
    }
}
