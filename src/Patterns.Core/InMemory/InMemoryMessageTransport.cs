using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.InMemory;

internal sealed class InMemoryMessageTransport : MessageTransport, IDisposable
{
    private const int MaxRouteCacheEntries = 10_000;

    private readonly ConcurrentDictionary<string, InMemoryQueue> _queues = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, TopicRoute> _routes = new(StringComparer.Ordinal);
    private volatile TopicRoute? _lastRoute;

    // Bumped under _gate by every bind and unbind. A cached route is used only while its version is current, so a
    // route that a publish read just before a bind or unbind, and cached just after it, is never used again.
    private int _routeVersion;
    private readonly List<(string Pattern, InMemoryQueue Queue)> _bindings = [];
    private readonly Lock _gate = new();
    private readonly InMemoryTransportOptions _options;
    private volatile bool _disposed;
    private volatile IdleWait[] _drains = [];

    public InMemoryMessageTransport(InMemoryTransportOptions options, TimeProvider timeProvider, ILogger logger)
    {
        _options = options;
        TimeProvider = timeProvider;
        Logger = logger;
    }

    public override string SystemName => "patterns.inmemory";

    public override bool IsInProcess => true;

    public override int MaxPayloadBytes => _options.MaxPayloadBytes;

    protected override string MaxPayloadBytesOption => "InMemoryTransportOptions.MaxPayloadBytes";

    internal TimeProvider TimeProvider { get; }

    internal ILogger Logger { get; }

    /// <summary>Gets the drains waiting for their subscriptions to go idle; almost always none.</summary>
    internal IdleWait[] Drains => _drains;

    public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(queue);
        ArgumentNullException.ThrowIfNull(settings);
        ThrowIfDisposed();
        GetOrCreateQueue(queue, settings.Capacity, settings.FullMode, settings.DeadLetterCapacity);
        return default;
    }

    public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(queue);
        ThrowIfDisposed();
        ValidateOutgoing(queue, envelope);
        if (!_queues.TryGetValue(queue, out var target))
        {
            throw new QueueNotFoundException(
                queue,
                $"Queue '{queue}' does not exist. Declare it (AddMessageQueue(q => q.AddQueue(\"{queue}\"))) or subscribe a consumer to it before sending.");
        }

        return target.EnqueueAsync(envelope, cancellationToken);
    }

    public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(topic);
        ThrowIfDisposed();
        ValidateOutgoing(topic, envelope);
        var targets = Route(topic);
        switch (targets.Length)
        {
            case 0:
                return new ValueTask<bool>(false);
            case 1:
                var single = targets[0].EnqueueAsync(envelope, cancellationToken);
                return single.IsCompletedSuccessfully ? new ValueTask<bool>(true) : AwaitOne(single);
            default:
                return PublishToManyAsync(targets, envelope, cancellationToken);
        }

        static async ValueTask<bool> AwaitOne(ValueTask pending)
        {
            await pending.ConfigureAwait(false);
            return true;
        }
    }

    public override ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(handler);
        ArgumentOutOfRangeException.ThrowIfLessThan(request.Concurrency, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(request.Capacity, 1);
        ThrowIfDisposed();

        InMemoryQueue queue;
        if (request.Address.Kind == AddressKind.Topic)
        {
            if (TopicPattern.Validate(request.Address.Name, allowWildcards: true) is { } problem)
            {
                throw new ArgumentException(problem, nameof(request));
            }

            queue = GetOrCreateQueue(request.QueueName, request.Capacity, request.FullMode, request.DeadLetterCapacity);
            Bind(request.Address.Name, queue);
        }
        else
        {
            queue = GetOrCreateQueue(request.QueueName, request.Capacity, request.FullMode, request.DeadLetterCapacity);
        }

        var subscription = new InMemorySubscription(queue, request, handler);
        queue.Attach(subscription);
        subscription.Start();
        return new ValueTask<TransportSubscription>(subscription);
    }

    public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        return new(GetExistingQueue(queue).PeekDeadLetters(maxCount));
    }

    public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        ThrowIfDisposed();
        return GetExistingQueue(queue).ReplayDeadLettersAsync(maxCount, cancellationToken);
    }

    public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) =>
        new(GetExistingQueue(queue).PurgeDeadLetters());

    public override ValueTask DisposeAsync()
    {
        Dispose();
        return default;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (var queue in _queues.Values)
        {
            queue.Close();
        }
    }

    /// <summary>Forgets a temporary queue whose subscription stopped, so sends to it fail as sends to a missing queue do.</summary>
    internal void RemoveQueue(InMemoryQueue queue) => _queues.TryRemove(new KeyValuePair<string, InMemoryQueue>(queue.Name, queue));

    /// <summary>Called by the queue under its own lock, so no publish can route to the group between its last detach and this unbind.</summary>
    internal void OnLastConsumerDetached(InMemoryQueue queue)
    {
        // A subscription group with no consumer left stops receiving publications, so a full buffer
        // nobody reads can never block publishers. Point-to-point queues keep buffering (back-pressure).
        // Lock order: a queue's lock, then this transport's; nothing takes them the other way round.
        lock (_gate)
        {
            if (_bindings.RemoveAll(b => ReferenceEquals(b.Queue, queue)) > 0)
            {
                ClearRoutes();
            }
        }
    }

    /// <summary>Waits until <paramref name="subscriptions"/> are all idle at once, or the deadline passes.</summary>
    internal async Task WaitUntilIdleAsync(InMemorySubscription[] subscriptions, CancellationToken deadline)
    {
        var wait = new IdleWait(subscriptions);
        lock (_gate)
        {
            _drains = [.. _drains, wait];
        }

        try
        {
            wait.Check();
            await wait.Idle.WaitAsync(deadline).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            // The deadline passed first: the caller stops the subscriptions anyway, cancelling what still runs.
        }
        finally
        {
            lock (_gate)
            {
                _drains = [.. _drains.Where(d => !ReferenceEquals(d, wait))];
            }
        }
    }

    private static async ValueTask<bool> PublishToManyAsync(InMemoryQueue[] targets, Envelope envelope, CancellationToken cancellationToken)
    {
        foreach (var target in targets)
        {
            await target.EnqueueAsync(envelope, cancellationToken).ConfigureAwait(false);
        }

        return true;
    }

    private InMemoryQueue[] Route(string topic)
    {
        // Publishers usually reuse one topic string: compare references before hashing.
        var version = Volatile.Read(ref _routeVersion);
        if (_lastRoute is { } last && ReferenceEquals(last.Topic, topic) && last.Version == version)
        {
            return last.Queues;
        }

        if (_routes.TryGetValue(topic, out var cached) && cached.Version == version)
        {
            _lastRoute = cached;
            return cached.Queues;
        }

        if (TopicPattern.Validate(topic, allowWildcards: false) is { } problem)
        {
            throw new ArgumentException(problem, nameof(topic));
        }

        lock (_gate)
        {
            var matches = new List<InMemoryQueue>();
            foreach (var (pattern, queue) in _bindings)
            {
                if (TopicPattern.IsMatch(pattern, topic) && !matches.Contains(queue))
                {
                    matches.Add(queue);
                }
            }

            var route = new TopicRoute(topic, [.. matches], _routeVersion);
            if (_routes.Count >= MaxRouteCacheEntries)
            {
                _routes.Clear();
            }

            _routes[topic] = route;
            return route.Queues;
        }
    }

    // Under _gate, after the bindings changed.
    private void ClearRoutes()
    {
        Volatile.Write(ref _routeVersion, _routeVersion + 1);
        _routes.Clear();
        _lastRoute = null;
    }

    private void Bind(string pattern, InMemoryQueue queue)
    {
        lock (_gate)
        {
            foreach (var (existingPattern, existingQueue) in _bindings)
            {
                if (ReferenceEquals(existingQueue, queue))
                {
                    if (!string.Equals(existingPattern, pattern, StringComparison.Ordinal))
                    {
                        throw new InvalidOperationException(
                            $"Consumer group '{queue.Name}' already subscribes to topic '{existingPattern}', so it cannot also subscribe to '{pattern}'. Give the subscription its own consumer group.");
                    }

                    return;
                }
            }

            _bindings.Add((pattern, queue));
            ClearRoutes();
        }
    }

    private InMemoryQueue GetOrCreateQueue(string name, int capacity, QueueFullMode fullMode, int deadLetterCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(deadLetterCapacity, 0);
        return _queues.GetOrAdd(name, static (n, s) => new InMemoryQueue(n, s.capacity, s.fullMode, s.deadLetterCapacity, s.transport), (capacity, fullMode, deadLetterCapacity, transport: this));
    }

    private InMemoryQueue GetExistingQueue(string queue)
    {
        ArgumentNullException.ThrowIfNull(queue);
        return _queues.TryGetValue(queue, out var q)
            ? q
            : throw new QueueNotFoundException(queue, $"Queue '{queue}' does not exist, so it has no dead-letter queue.");
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>One drain's wait for a set of subscriptions to be idle at the same moment.</summary>
    internal sealed class IdleWait(InMemorySubscription[] subscriptions)
    {
        private readonly TaskCompletionSource _idle = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _transitions;

        public Task Idle => _idle.Task;

        /// <summary>Called by a worker that ran dry, before it parks.</summary>
        public void CountTransition() => Interlocked.Increment(ref _transitions);

        /// <summary>
        /// Completes the wait if every subscription is idle. A worker that went idle during the scan (after finishing
        /// a handler that may have woken a lane scanned earlier) changes the count, so the scan does not count;
        /// that worker checks again itself once parked.
        /// </summary>
        public void Check()
        {
            if (_idle.Task.IsCompleted)
            {
                return;
            }

            var before = Volatile.Read(ref _transitions);
            foreach (var subscription in subscriptions)
            {
                if (!subscription.IsIdle)
                {
                    return;
                }
            }

            if (Volatile.Read(ref _transitions) == before)
            {
                _idle.TrySetResult();
            }
        }
    }

    private sealed record TopicRoute(string Topic, InMemoryQueue[] Queues, int Version);
}
