using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.InMemory;
using Patterns.RequestResponse;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Hosting;

/// <summary>
/// Starts every registered consumer with the host and drains them, within a deadline, when it stops. As the host begins
/// to stop (before any hosted service's <see cref="IHostedService.StopAsync"/>), its in-memory consumers keep what their
/// handlers release until they are unbound, so that a message released by a component that stopped first does not come
/// straight back to it.
/// </summary>
internal sealed class MessagingHostedService : IHostedLifecycleService
{
    private readonly IOptions<MessagingTopology> _topology;
    private readonly IServiceProvider _services;
    private readonly MessageBus _bus;
    private readonly RequestClient _requestClient;
    private readonly IMessageSerializer _serializer;
    private readonly IOptions<PatternsOptions> _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly List<TransportSubscription> _subscriptions = [];
    private volatile bool _hostStopping;
    private volatile HostPhase _phase;

    public MessagingHostedService(
        IOptions<MessagingTopology> topology,
        IServiceProvider services,
        MessageBus bus,
        RequestClient requestClient,
        IMessageSerializer serializer,
        IOptions<PatternsOptions> options,
        ILoggerFactory loggerFactory)
    {
        _topology = topology;
        _services = services;
        _bus = bus;
        _requestClient = requestClient;
        _serializer = serializer;
        _options = options;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<MessagingHostedService>();
    }

    private enum HostPhase
    {
        NotStarted,
        Starting,
        Running,
        Stopped,
    }

    /// <summary>Reports each consumer of this host: degraded before the host started, after it stopped, and for each consumer its transport reports as not taking messages.</summary>
    internal IReadOnlyList<ComponentHealth> GetConsumerHealth()
    {
        switch (_phase)
        {
            case HostPhase.NotStarted:
            case HostPhase.Starting:
                return [ComponentHealth.Degraded("consumers", "The host has not started, so no consumer is taking messages yet.")];
            case HostPhase.Stopped:
                return [ComponentHealth.Degraded("consumers", "The host has stopped its consumers.")];
        }

        TransportSubscription[] subscriptions;
        lock (_subscriptions)
        {
            subscriptions = [.. _subscriptions];
        }

        var health = new ComponentHealth[subscriptions.Length];
        for (var i = 0; i < subscriptions.Length; i++)
        {
            health[i] = subscriptions[i].GetHealth();
        }

        return health;
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _phase = HostPhase.Starting;
        var transport = _bus.Transport;
        var topology = _topology.Value;
        var requestOptions = _requestClient.Options;
        EnsureSerializable(transport, topology);
        foreach (var queue in topology.Queues)
        {
            await transport.DeclareQueueAsync(queue.Name, new QueueSettings
            {
                Capacity = queue.Options.Capacity,
                FullMode = queue.Options.FullMode,
                DeadLetterCapacity = queue.Options.DeadLetterCapacity,
            }, cancellationToken).ConfigureAwait(false);
        }

        try
        {
            foreach (var registration in topology.Consumers)
            {
                _bus.Registry.GetName(registration.MessageType);
                var group = registration.ConsumerGroup;
                var logger = _loggerFactory.CreateLogger("Patterns.Consumers." + group);
                var stop = new ConsumerStop(() => _hostStopping);
                var handler = registration.CreateHandler(new ConsumerFactoryContext(_services, _bus, _serializer, logger, registration.Address, group, stop));
                var request = new SubscriptionRequest
                {
                    Address = new TransportAddress(registration.Kind, registration.Address),
                    ConsumerGroup = group,
                    Concurrency = registration.Options.Concurrency,
                    Capacity = registration.Options.Capacity,
                    FullMode = registration.Options.FullMode,
                    DeadLetterCapacity = registration.Options.DeadLetterCapacity,
                };
                var subscription = await _bus.SubscribeAsync(request, handler, cancellationToken).ConfigureAwait(false);
                stop.Bind(subscription);
                Track(subscription);
            }

            if (!(transport.IsInProcess && requestOptions.PreferInProcessDispatch))
            {
                foreach (var entry in _requestClient.Entries)
                {
                    var queue = requestOptions.RequestQueuePrefix + _bus.Registry.GetName(entry.RequestType);
                    var logger = _loggerFactory.CreateLogger("Patterns.Requests." + entry.HandlerName);
                    var request = new SubscriptionRequest
                    {
                        Address = TransportAddress.Queue(queue),
                        ConsumerGroup = queue,
                        Concurrency = requestOptions.TransportConcurrency,
                    };
                    Track(await _bus.SubscribeAsync(request, entry.CreateResponder(_bus, _serializer, logger), cancellationToken).ConfigureAwait(false));
                }
            }
        }
        catch
        {
            await StopSubscriptionsAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);
            throw;
        }

        _phase = HostPhase.Running;
        _bus.HostStarted = true;
        HostingLog.Started(_logger, _subscriptions.Count, transport.SystemName);
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Gets whether the host has begun to stop (set before any hosted service stops): from then on a handler's
    /// <see cref="Messaging.HandlerStoppedException"/> releases its message; before, it is a failed delivery.
    /// </summary>
    internal bool HostStopping => _hostStopping;

    public Task StoppingAsync(CancellationToken cancellationToken)
    {
        _hostStopping = true;
        lock (_subscriptions)
        {
            foreach (var subscription in _subscriptions)
            {
                subscription.BeginDrain();
            }
        }

        return Task.CompletedTask;
    }

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _phase = HostPhase.Stopped;
        await StoppingAsync(cancellationToken).ConfigureAwait(false);
        var timeout = _options.Value.ShutdownTimeout;
        HostingLog.Draining(_logger, _subscriptions.Count, timeout);
        using var deadline = new CancellationTokenSource(timeout, _bus.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token, cancellationToken);
        await StopSubscriptionsAsync(linked.Token).ConfigureAwait(false);
        await _requestClient.StopAsync(linked.Token).ConfigureAwait(false);
    }

    /// <summary>Gets the consumers running now (for tests).</summary>
    internal IReadOnlyList<TransportSubscription> Subscriptions
    {
        get
        {
            lock (_subscriptions)
            {
                return [.. _subscriptions];
            }
        }
    }

    /// <summary>
    /// On a transport that serializes, fails the start naming every message type the JSON serializer has no metadata for
    /// (under NativeAOT or trimming, a type missing from the JsonSerializerContext), instead of failing at the first message.
    /// </summary>
    private void EnsureSerializable(MessageTransport transport, MessagingTopology topology)
    {
        if (transport.IsInProcess || _serializer is not JsonMessageSerializer json)
        {
            return;
        }

        var missing = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var consumer in topology.Consumers)
        {
            Check(consumer.MessageType);
        }

        foreach (var handler in topology.RequestHandlers)
        {
            Check(handler.RequestType);
            Check(handler.ResponseType);
        }

        if (missing.Count > 0)
        {
            throw new InvalidOperationException(
                $"The JSON serializer has no metadata for {string.Join(", ", missing.Select(t => $"'{t}'"))}, which transport '{transport.SystemName}' must serialize. "
                + "Add [JsonSerializable(typeof(...))] for each to a JsonSerializerContext and pass it with UseSystemTextJson(context) (NativeAOT and trimmed apps cannot serialize by reflection).");
        }

        void Check(Type type)
        {
            if (!json.HasMetadataFor(type))
            {
                missing.Add(type.FullName ?? type.Name);
            }
        }
    }

    private void Track(TransportSubscription subscription)
    {
        lock (_subscriptions)
        {
            _subscriptions.Add(subscription);
        }
    }

    private async Task StopSubscriptionsAsync(CancellationToken deadline)
    {
        // In-process groups stay bound until every consumer of this host is idle at once, so follow-ups that draining
        // handlers publish still reach the groups that are stopping too. Only then does each stop (and unbind).
        await InMemorySubscription.WaitUntilIdleAsync(_subscriptions, deadline).ConfigureAwait(false);
        var stopping = new Task[_subscriptions.Count];
        for (var i = 0; i < stopping.Length; i++)
        {
            stopping[i] = _subscriptions[i].StopAsync(deadline);
        }

        await Task.WhenAll(stopping).ConfigureAwait(false);
        lock (_subscriptions)
        {
            _subscriptions.Clear();
        }
    }
}
