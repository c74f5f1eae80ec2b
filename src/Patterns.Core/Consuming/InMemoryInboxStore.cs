using Patterns.Storage;

namespace Patterns.Consuming;

/// <summary>
/// The default inbox when no <see cref="IInboxStore"/> is registered: a bounded set of message ids per consumer that
/// forgets the oldest first. It lives as long as the process.
/// </summary>
internal sealed class InMemoryInboxStore(int capacity, TimeProvider timeProvider) : IInboxStore
{
    private readonly Dictionary<string, Consumer> _consumers = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    public ValueTask<bool> ContainsAsync(string consumer, string messageId, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            return new(_consumers.TryGetValue(consumer, out var entries) && entries.Ids.ContainsKey(messageId));
        }
    }

    public ValueTask<bool> TryMarkHandledAsync(string consumer, string messageId, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            if (!_consumers.TryGetValue(consumer, out var entries))
            {
                entries = new Consumer();
                _consumers.Add(consumer, entries);
            }

            if (!entries.Ids.TryAdd(messageId, timeProvider.GetUtcNow()))
            {
                return new(false);
            }

            entries.Order.Enqueue(messageId);
            while (entries.Order.Count > capacity)
            {
                entries.Ids.Remove(entries.Order.Dequeue());
            }

            return new(true);
        }
    }

    public ValueTask<long> PruneAsync(DateTimeOffset olderThan, CancellationToken cancellationToken = default)
    {
        long removed = 0;
        lock (_gate)
        {
            foreach (var entries in _consumers.Values)
            {
                // Ids are marked in time order, so the old ones are at the front.
                while (entries.Order.TryPeek(out var oldest) && entries.Ids[oldest] < olderThan)
                {
                    entries.Ids.Remove(entries.Order.Dequeue());
                    removed++;
                }
            }
        }

        return new(removed);
    }

    private sealed class Consumer
    {
        public Dictionary<string, DateTimeOffset> Ids { get; } = new(StringComparer.Ordinal);

        public Queue<string> Order { get; } = new();
    }
}
