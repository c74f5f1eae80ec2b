namespace Patterns.RabbitMq;

/// <summary>The default inbox: a bounded set of message ids per consumer group that forgets the oldest first. It lives as long as the process.</summary>
internal sealed class InMemoryInboxStore(int capacity) : IInboxStore
{
    private readonly Dictionary<string, Group> _groups = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    public ValueTask<bool> HasHandledAsync(string consumerGroup, Guid messageId, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            return new(_groups.TryGetValue(consumerGroup, out var group) && group.Ids.Contains(messageId));
        }
    }

    public ValueTask MarkHandledAsync(string consumerGroup, Guid messageId, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            if (!_groups.TryGetValue(consumerGroup, out var group))
            {
                group = new Group();
                _groups.Add(consumerGroup, group);
            }

            if (group.Ids.Add(messageId))
            {
                group.Order.Enqueue(messageId);
                while (group.Order.Count > capacity)
                {
                    group.Ids.Remove(group.Order.Dequeue());
                }
            }
        }

        return default;
    }

    private sealed class Group
    {
        public HashSet<Guid> Ids { get; } = [];

        public Queue<Guid> Order { get; } = new();
    }
}
