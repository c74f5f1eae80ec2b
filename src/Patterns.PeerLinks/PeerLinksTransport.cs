using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using System.Net;
using Grpc.AspNetCore.Server.Model;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.ServiceDiscovery;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.PeerLinks.Links;
using Patterns.PeerLinks.Wire;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.PeerLinks;

/// <summary>
/// The broker-less transport: this node listens on a Kestrel endpoint and links to its peers over long-lived gRPC
/// bidirectional streams. Every messaging pattern runs across the nodes unchanged.
/// </summary>
/// <remarks>
/// <para>
/// Model: each node keeps its queues and subscription groups in memory, exactly as the in-memory transport does, and
/// settles on the sending side: a subscription on a peer appears here as a consumer of the same queue or group whose
/// concurrency is the peer's credit and whose handler forwards the message and returns the peer's settlement. So a
/// published message reaches each consumer group once, a queued message reaches exactly one consumer among all nodes,
/// partition-key order holds per group, and retries and dead letters follow the one kernel path.
/// </para>
/// <para>
/// Delivery is in memory: what a node holds when it crashes (its queues, its dead letters, messages it was sending) is
/// lost. A broken link replays its unacknowledged messages on reconnect (nothing lost or duplicated); when a peer is
/// declared down or restarts, the messages in flight to it are delivered again to another consumer, so a handler may
/// see such a message twice (at least once).
/// </para>
/// </remarks>
public sealed class PeerLinksTransport : MessageTransport
{
    private readonly MessageTransport _local;
    private readonly ConcurrentDictionary<string, byte> _declared = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<long, LocalSubscription> _subscriptions = new();
    private readonly ConcurrentDictionary<(string Node, Guid Session), PeerSession> _sessions = new();
    private readonly ServiceEndpointResolver? _discovery;

    // Replaced (never changed in place) when the node starts or service discovery adds or removes peers; readers
    // iterate whichever list they read.
    private volatile IReadOnlyList<PeerLink> _links = [];
    private readonly Lock _linksGate = new();
    private readonly CancellationTokenSource _stopping = new();
    private Task _refreshing = Task.CompletedTask;
    private readonly Lock _announceGate = new();
    private long _announceVersion;
    private long _nextSubscriptionId;
    private WebApplication? _server;
    private ITimer? _reaper;
    private int _disposed;
    private Task? _leaving;
    private volatile bool _left;

    internal PeerLinksTransport(PeerLinksOptions options, IMessageSerializer serializer, TimeProvider timeProvider, ILoggerFactory loggerFactory, ServiceEndpointResolver? discovery = null)
    {
        _discovery = discovery;
        Options = options;
        Serializer = serializer;
        TimeProvider = timeProvider;
        LoggerFactory = loggerFactory;
        Logger = loggerFactory.CreateLogger("Patterns.PeerLinks");
        Security = new LinkSecurity(options);
        NodeId = options.NodeId;
        _local = InMemoryTransport.Create(new InMemoryTransportOptions { MaxPayloadBytes = options.MaxMessageBytes }, timeProvider, loggerFactory);
        if (discovery is null)
        {
            _links = [.. options.Peers.Select(peer => new PeerLink(this, peer))];
        }
    }

    /// <summary>Gets this node's id.</summary>
    public string NodeId { get; }

    /// <summary>Gets where this node listens, with the port actually bound; <see langword="null"/> until started.</summary>
    public Uri? ListenUri { get; private set; }

    /// <summary>Gets this node's peers and their state.</summary>
    public PeerMembership Membership { get; } = new();

    /// <inheritdoc />
    public override string SystemName => "patterns.peerlinks";

    /// <inheritdoc />
    public override bool IsInProcess => false;

    /// <inheritdoc />
    public override int MaxPayloadBytes => Options.MaxMessageBytes;

    /// <inheritdoc />
    protected override string MaxPayloadBytesOption => "PeerLinksOptions.MaxMessageBytes";

    internal PeerLinksOptions Options { get; }

    internal IMessageSerializer Serializer { get; }

    internal TimeProvider TimeProvider { get; }

    internal ILoggerFactory LoggerFactory { get; }

    internal ILogger Logger { get; }

    internal LinkSecurity Security { get; }

    internal Guid Incarnation { get; } = Guid.NewGuid();

    internal MessageTransport Local => _local;

    internal IReadOnlyList<PeerLink> Links => _links;

    /// <summary>Gets the sessions of the peers linked to this node (the tests read what each has settled and had acknowledged).</summary>
    internal ICollection<PeerSession> Sessions => _sessions.Values;

    /// <summary>Creates a node, starts its listener and begins linking to its peers.</summary>
    /// <param name="options">The node's options; validated here.</param>
    /// <param name="serializer">Turns in-process bodies into bytes for peers; JSON when <see langword="null"/>.</param>
    /// <param name="timeProvider">The clock for heartbeats, back-off and redeliveries; <see cref="TimeProvider.System"/> when <see langword="null"/>.</param>
    /// <param name="loggerFactory">Where it logs; nowhere when <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels starting the listener.</param>
    /// <returns>The started node.</returns>
    /// <exception cref="OptionsValidationException">The options are invalid; the message lists every problem.</exception>
    public static async Task<PeerLinksTransport> StartAsync(
        PeerLinksOptions options,
        IMessageSerializer? serializer = null,
        TimeProvider? timeProvider = null,
        ILoggerFactory? loggerFactory = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var result = new PeerLinksOptionsValidator().Validate(null, options);
        if (result.Failed)
        {
            throw new OptionsValidationException(string.Empty, typeof(PeerLinksOptions), result.Failures);
        }

        var node = new PeerLinksTransport(options, serializer ?? new JsonMessageSerializer(), timeProvider ?? TimeProvider.System, loggerFactory ?? NullLoggerFactory.Instance);
        await node.StartAsync(cancellationToken).ConfigureAwait(false);
        return node;
    }

    /// <summary>
    /// Starts the listener and the links; a second call changes nothing. A leave that overtakes the start wins: the
    /// listener the start brought up is stopped again, no link starts, and the start throws (whether it was decided is
    /// checked under the same lock as the leave's start, so a stop racing the start never leaves a listener running).
    /// </summary>
    internal async Task StartAsync(CancellationToken cancellationToken)
    {
        lock (_linksGate)
        {
            // Before the started check: a node that had started and then left keeps its (stopped) listener.
            ThrowIfLeft();
            if (_server is not null)
            {
                return;
            }
        }

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.Replace(ServiceDescriptor.Singleton(LoggerFactory));
        builder.WebHost.ConfigureKestrel(ConfigureKestrel);
        builder.Services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = FrameBatch.MaxBytes;
            o.MaxSendMessageSize = FrameBatch.MaxBytes;
        });
        builder.Services.AddSingleton(new LinkService(this));
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IServiceMethodProvider<LinkService>, LinkServiceMethods>());
        var app = builder.Build();
        app.MapGrpcService<LinkService>();
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        bool left;
        bool already;
        lock (_linksGate)
        {
            left = _leaving is not null;
            already = !left && _server is not null;
            if (!left && !already)
            {
                // The leave reads these after it is decided (under this lock), so it sees them and stops them.
                _server = app;
                var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
                ListenUri = new Uri(bound.Replace("[::]", "localhost", StringComparison.Ordinal).Replace("0.0.0.0", "localhost", StringComparison.Ordinal));
                _reaper = TimeProvider.CreateTimer(static s => ((PeerLinksTransport)s!).ReapSessions(), this, Options.ReconnectGrace, Options.ReconnectGrace);
            }
        }

        if (left || already)
        {
            // Left while the listener started (or another start got there first): this listener is nobody's to stop.
            await StopListenerAsync(app, CancellationToken.None).ConfigureAwait(false);
            ThrowIfLeft();
            return;
        }

        PeerLinksLog.Listening(Logger, NodeId, ListenUri!.ToString());
        IReadOnlyList<PeerLink>? resolved = null;
        if (_discovery is not null)
        {
            var peers = await PeerDiscovery.ResolveAsync(_discovery, Options.Peers, Logger, log: true, cancellationToken).ConfigureAwait(false);
            resolved = [.. peers!.Select(peer => new PeerLink(this, peer))]; // at start a failed lookup dials the name as written
        }

        IReadOnlyList<PeerLink> links;
        lock (_linksGate)
        {
            // A leave decided meanwhile closes the links it finds: none may start after it looked.
            ThrowIfLeft();
            if (resolved is not null)
            {
                _links = resolved;
            }

            links = _links;
            if (_discovery is not null)
            {
                _refreshing = RefreshPeersAsync(_discovery, _stopping.Token);
            }
        }

        foreach (var link in links)
        {
            link.Start();
        }
    }

    private void ThrowIfLeft()
    {
        if (_leaving is not null)
        {
            throw new InvalidOperationException($"Node {NodeId} has stopped and left its peers; a stopped node does not start again (start a new host or node with the same node id to rejoin).");
        }
    }

    /// <summary>Resolves the peers again every <see cref="PeerLinksOptions.DiscoveryRefreshInterval"/> and applies the difference.</summary>
    private async Task RefreshPeersAsync(ServiceEndpointResolver discovery, CancellationToken cancellationToken)
    {
        try
        {
            using var timer = new PeriodicTimer(Options.DiscoveryRefreshInterval, TimeProvider);
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                try
                {
                    var peers = await PeerDiscovery.ResolveAsync(discovery, Options.Peers, Logger, log: false, cancellationToken).ConfigureAwait(false);
                    if (peers is null)
                    {
                        // A lookup failed or found nothing: the links stay as they are until a lookup succeeds.
                        PeerLinksLog.RefreshFailed(Logger, "a lookup failed or found no endpoint");
                        continue;
                    }

                    await ApplyPeersAsync(peers).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    // Never the end of the refresh: the next tick tries again.
                    PeerLinksLog.RefreshFailed(Logger, ex.Message);
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The node stops.
        }
    }

    /// <summary>Links the peers that are new in <paramref name="peers"/> and unlinks those no longer in it.</summary>
    internal async Task ApplyPeersAsync(IReadOnlyList<Uri> peers)
    {
        List<PeerLink> added;
        List<PeerLink> removed;
        lock (_linksGate)
        {
            if (_leaving is not null)
            {
                // The leave closes the links it finds: none may be added or started after it looked.
                return;
            }

            var wanted = peers.ToHashSet();
            var current = _links;
            var known = current.Select(l => l.Address).ToHashSet();
            removed = [.. current.Where(l => !wanted.Contains(l.Address))];
            added = [.. peers.Where(p => !known.Contains(p)).Select(p => new PeerLink(this, p))];
            if (removed.Count == 0 && added.Count == 0)
            {
                return;
            }

            _links = [.. current.Where(l => wanted.Contains(l.Address)), .. added];
        }

        // Each link on its own: a failure (an application's peer-change handler that throws) must not leave the
        // remaining links started but unknown, or removed but still running.
        foreach (var link in added)
        {
            PeerLinksLog.PeerAppeared(Logger, link.Address);
            try
            {
                link.Start();
            }
            catch (Exception ex)
            {
                PeerLinksLog.RefreshFailed(Logger, $"starting the link to {link.Address}: {ex.Message}");
            }
        }

        foreach (var link in removed)
        {
            PeerLinksLog.PeerVanished(Logger, link.Address);
            try
            {
                await link.DisposeAsync().ConfigureAwait(false);
                Membership.Remove(link.Address, TimeProvider.GetUtcNow(), "no longer listed by service discovery");
            }
            catch (Exception ex)
            {
                PeerLinksLog.RefreshFailed(Logger, $"removing the link to {link.Address}: {ex.Message}");
            }
        }
    }

    /// <inheritdoc />
    public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(queue);
        _declared[queue] = 0;
        return _local.DeclareQueueAsync(queue, settings, cancellationToken);
    }

    /// <inheritdoc />
    /// <exception cref="QueueNotFoundException">The queue is not declared on this node and no peer consumes it (a request to a handler that no running node hosts fails here, fast).</exception>
    /// <exception cref="TransportUnavailableException">The queue is not declared on this node, no peer that is up consumes it, and a peer that consumed it since its link last came up is down or reconnecting.</exception>
    public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(queue);
        ValidateOutgoing(queue, envelope);
        if (!_declared.ContainsKey(queue) && !HasRemoteConsumer(queue))
        {
            throw (Exception?)UnreachableConsumers(queue) ?? new QueueNotFoundException(
                queue,
                $"Queue '{queue}' has no consumer on this node or on any peer that is up (node {NodeId}, peers: {string.Join(", ", _links.Select(l => $"{l.Address} {l.State}"))}). Declare it here to buffer messages until a consumer appears.");
        }

        return _local.SendAsync(queue, envelope, cancellationToken);
    }

    /// <inheritdoc />
    public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(topic);
        ValidateOutgoing(topic, envelope);
        return _local.PublishAsync(topic, envelope, cancellationToken);
    }

    /// <inheritdoc />
    /// <remarks>The returned subscription is known to every peer that is up: a message they send next can reach it.</remarks>
    public override async ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(handler);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var subscription = new LocalSubscription(this, Interlocked.Increment(ref _nextSubscriptionId), request, handler);
        subscription.Local = await _local.SubscribeAsync(request, handler, cancellationToken).ConfigureAwait(false);
        if (request.Address.Kind == AddressKind.Queue)
        {
            _declared[request.Address.Name] = 0;
        }

        _subscriptions[subscription.Id] = subscription;
        subscription.Start();
        await AnnounceAsync(cancellationToken).ConfigureAwait(false);
        return subscription;
    }

    /// <inheritdoc />
    public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
        _local.PeekDeadLettersAsync(queue, maxCount, cancellationToken);

    /// <inheritdoc />
    public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
        _local.ReplayDeadLettersAsync(queue, maxCount, cancellationToken);

    /// <inheritdoc />
    public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) =>
        _local.PurgeDeadLettersAsync(queue, cancellationToken);

    /// <summary>Gets whether this node is leaving its peers or has left them (see <see cref="LeaveAsync"/>).</summary>
    internal bool HasLeft => _left;

    /// <inheritdoc />
    /// <remarks>
    /// Leaves the mesh (see <see cref="LeaveAsync"/>), then disposes the node's in-memory queues, whatever the leave did:
    /// a step of the leave that fails does not keep the others, or the rest of the disposal, from running; the failure
    /// is thrown at the end.
    /// </remarks>
    public override async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        try
        {
            await LeaveAsync().ConfigureAwait(false);
        }
        finally
        {
            await _local.DisposeAsync().ConfigureAwait(false);
            _stopping.Dispose();
        }
    }

    /// <summary>
    /// Leaves the mesh (the host stops, or the node is disposed): a graceful stop (see <see cref="StopGracefullyAsync"/>),
    /// then every peer's calls end with the leaving status (<see cref="LinkService.LeavingTrailer"/>), so each peer
    /// marks this node down at once, hands back what it had in flight here and forgets its consumers; then the links
    /// close, all at once, and the listener stops (its port is free for a new node). Calls that arrive meanwhile are
    /// refused the same way. Each wait is bounded (<see cref="LeaveBounds"/>), and none outlasts
    /// <paramref name="stopToken"/> (the host's stop token): once it is cancelled the leave waits for nothing more,
    /// still ending the peers' calls, closing the links and stopping the listener. Every step runs even when an earlier
    /// one failed; the failures are thrown at the end. Once only: later calls wait for the first.
    /// </summary>
    internal Task LeaveAsync(CancellationToken stopToken = default)
    {
        lock (_linksGate)
        {
            return _leaving ??= LeaveCoreAsync(stopToken);
        }
    }

    /// <summary>Gets or sets the bounds of a leave's waits (the tests set longer ones to see the stop token honoured).</summary>
    internal LeaveBounds Bounds { get; set; } = LeaveBounds.Default;

    private async Task LeaveCoreAsync(CancellationToken stopToken)
    {
        await Task.Yield(); // never under the lock
        List<Exception>? failures = null;
        async Task Step(Func<Task> step)
        {
            try
            {
                await step().ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                (failures ??= []).Add(ex);
            }
        }

        // Read once the leave is decided: a start that has not set them by then never will (it stops its own listener).
        var reaper = _reaper;
        var server = _server;
        await Step(async () =>
        {
            if (reaper is not null)
            {
                await reaper.DisposeAsync().ConfigureAwait(false);
            }
        }).ConfigureAwait(false);
        await Step(() => _stopping.CancelAsync()).ConfigureAwait(false);
        await PeerSession.Quietly(_refreshing).ConfigureAwait(false);
        await Step(() => StopGracefullyAsync(stopToken)).ConfigureAwait(false);
        _left = true;
        await Step(() => Task.WhenAll(_sessions.Values.Select(s => s.CloseAsync()))).ConfigureAwait(false);
        await Step(() => CloseLinksAsync(stopToken)).ConfigureAwait(false);
        if (server is not null)
        {
            await Step(() => StopListenerAsync(server, stopToken)).ConfigureAwait(false);
        }

        if (ListenUri is not null)
        {
            PeerLinksLog.Left(Logger, NodeId);
        }

        if (failures is { Count: 1 })
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failures[0]);
        }

        if (failures is not null)
        {
            throw new AggregateException($"Node {NodeId} left its peers, but {failures.Count} steps of the leave failed.", failures);
        }
    }

    /// <summary>Closes every link at once, all within one bound and no longer than <paramref name="stopToken"/>.</summary>
    private async Task CloseLinksAsync(CancellationToken stopToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopToken);
        deadline.CancelAfter(Bounds.Links);
        var closing = Task.WhenAll(_links.Select(link => link.CloseAsync(deadline.Token)));
        try
        {
            await closing.WaitAsync(deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            // Each link cancelled what still ran when the deadline passed; the leave waits no longer for them.
            Logger.LogWarning("The links of node {Node} did not all close within {Bound} or before the host's stop token; leaving without waiting for them.", NodeId, Bounds.Links);
        }
    }

    /// <summary>Stops a listener, cutting the streams that do not end within the bound or before <paramref name="stopToken"/>.</summary>
    private async Task StopListenerAsync(WebApplication server, CancellationToken stopToken)
    {
        using var quick = CancellationTokenSource.CreateLinkedTokenSource(stopToken);
        quick.CancelAfter(Bounds.Listener);
        try
        {
            await server.StopAsync(quick.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Streams that do not end within the grace are cut.
        }
        finally
        {
            await server.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// A graceful stop: the subscriptions still running stop first (peers stop routing here and drain what they had
    /// routed), then the settlements of everything handled here reach their senders before the links close. Without it a
    /// message handled just before the stop was settled only after the link had closed, and its sender delivered it
    /// again (seen as a flaky restart test: the restarted node first received the message handled before the stop).
    /// Bounded in real time, so a stop never depends on a peer or a test clock, and no longer than
    /// <paramref name="stopToken"/>: once it is cancelled, the subscriptions are told to stop at once and the leave goes on.
    /// </summary>
    private async Task StopGracefullyAsync(CancellationToken stopToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopToken);
        deadline.CancelAfter(Bounds.Graceful);
        try
        {
            await Task.WhenAll(_subscriptions.Values.Select(s => PeerSession.Quietly(s.StopAsync(deadline.Token)))).WaitAsync(stopToken).ConfigureAwait(false);
            await Task.WhenAll(_sessions.Values.Select(s => s.FlushSettlementsAsync(deadline.Token))).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stopToken.IsCancellationRequested)
        {
            // The host's stop token: its handlers were told to stop; what they still settle is delivered again elsewhere.
        }
    }

    /// <summary>Tells every attached peer the current subscriptions and waits until they applied them (or dropped).</summary>
    internal async Task AnnounceAsync(CancellationToken cancellationToken)
    {
        List<Task> confirmations = [];
        long version;
        lock (_announceGate)
        {
            version = ++_announceVersion;
            var frame = Frames.Announce(version, Snapshot());
            foreach (var session in _sessions.Values)
            {
                if (session.IsAttached)
                {
                    confirmations.Add(session.PushAnnouncement(version, frame));
                }
            }
        }

        if (confirmations.Count == 0)
        {
            return;
        }

        var all = Task.WhenAll(confirmations);
        try
        {
            await all.WaitAsync(Options.AnnounceTimeout, TimeProvider, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            PeerLinksLog.AnnounceTimedOut(Logger, version, Options.AnnounceTimeout, string.Join(", ", _sessions.Values.Where(s => s.IsAttached).Select(s => s.NodeId)));
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // A stop whose drain deadline passed: peers finish draining on their own.
        }
    }

    /// <summary>Registers a control connection; returns the subscriptions it starts from, atomically with announcements.</summary>
    internal (long Version, IReadOnlyList<SubscriptionInfo> Subscriptions) Attach(PeerSession session, Action attach)
    {
        lock (_announceGate)
        {
            attach();
            return (_announceVersion, Snapshot());
        }
    }

    internal PeerSession GetOrCreateSession(string node, Guid session, out bool resumed)
    {
        var created = false;
        var result = _sessions.GetOrAdd((node, session), key =>
        {
            created = true;
            return new PeerSession(this, key.Node, key.Session);
        });
        resumed = !created;
        if (created)
        {
            // The peer started a new session: its older ones are over.
            foreach (var key in _sessions.Keys)
            {
                if (key.Node == node && key.Session != session)
                {
                    _sessions.TryRemove(key, out _);
                }
            }
        }

        return result;
    }

    internal bool TryGetSession(string node, Guid session, [NotNullWhen(true)] out PeerSession? found) => _sessions.TryGetValue((node, session), out found);

    internal bool TryGetSubscription(long id, [NotNullWhen(true)] out LocalSubscription? subscription) => _subscriptions.TryGetValue(id, out subscription);

    internal void Unregister(LocalSubscription subscription) => _subscriptions.TryRemove(subscription.Id, out _);

    /// <summary>
    /// The error of a send to a queue that no node that is up consumes, when peers that consumed it since their link last came
    /// up are down or reconnecting: the consumers are out of reach rather than absent (null when no such peer is known).
    /// </summary>
    private TransportUnavailableException? UnreachableConsumers(string queue)
    {
        List<PeerLink>? gone = null;
        foreach (var link in _links)
        {
            if (link.ConsumedWhileUp(queue))
            {
                (gone ??= []).Add(link);
            }
        }

        return gone is null
            ? null
            : new TransportUnavailableException(
                $"Queue '{queue}' has no consumer on this node or on any peer that is up; the peers that consumed it cannot be reached now "
                + $"({string.Join(", ", gone.Select(l => $"{l.RemoteNodeId ?? "?"} at {l.Address}: {l.State}, {l.Reason}"))}). Retry once they are back.");
    }

    private bool HasRemoteConsumer(string queue)
    {
        foreach (var link in _links)
        {
            if (link.HasQueueConsumer(queue))
            {
                return true;
            }
        }

        return false;
    }

    private List<SubscriptionInfo> Snapshot()
    {
        var list = new List<SubscriptionInfo>();
        foreach (var s in _subscriptions.Values)
        {
            if (s.Announced)
            {
                var r = s.Request;
                // A subscription of concurrency 1 gets one message at a time, so it sees a queue in send order (as the
                // conformance suite asserts); prefetch is for subscriptions that handle messages in parallel anyway.
                var credit = r.Temporary ? Options.TemporaryCredit : r.Concurrency == 1 ? 1 : r.Concurrency + Math.Min(r.Capacity, Options.Prefetch);
                list.Add(new SubscriptionInfo(s.Id, r.Address.Kind, r.Address.Name, r.ConsumerGroup, credit, r.Temporary, r.Capacity, r.FullMode));
            }
        }

        return list;
    }

    private void ReapSessions()
    {
        var now = TimeProvider.GetUtcNow();
        foreach (var (key, session) in _sessions)
        {
            if (!session.IsAttached && now - session.DetachedAt > Options.ReconnectGrace * 2)
            {
                _sessions.TryRemove(key, out _);
            }
        }
    }

    private void ConfigureKestrel(KestrelServerOptions kestrel)
    {
        var uri = Options.ListenUri;
        var address = uri.Host is "localhost" ? IPAddress.Loopback : uri.Host is "*" or "+" ? IPAddress.Any : IPAddress.Parse(uri.Host);
        kestrel.Limits.Http2.InitialStreamWindowSize = 4 * 1024 * 1024;
        kestrel.Limits.Http2.InitialConnectionWindowSize = 8 * 1024 * 1024;
        kestrel.Listen(address, uri.Port, listen =>
        {
            listen.Protocols = HttpProtocols.Http2;
            if (uri.Scheme == Uri.UriSchemeHttps)
            {
                listen.UseHttps(https =>
                {
                    https.ServerCertificate = Options.ServerCertificate;
                    https.ClientCertificateMode = Options.RequireClientCertificate ? ClientCertificateMode.RequireCertificate : ClientCertificateMode.NoCertificate;
                    if (Options.RequireClientCertificate)
                    {
                        https.ClientCertificateValidation = (certificate, chain, errors) =>
                        {
                            var ok = Security.ValidateCertificate(certificate, chain, errors);
                            if (!ok)
                            {
                                PeerLinksLog.Refused(Logger, "TLS", certificate?.Subject ?? "(no certificate)", $"client certificate rejected ({errors})");
                            }

                            return ok;
                        };
                    }
                });
            }
        });
    }
}

/// <summary>The bounds of a leave's waits: the graceful stop, closing the links (all at once), stopping the listener.</summary>
internal sealed record LeaveBounds(TimeSpan Graceful, TimeSpan Links, TimeSpan Listener)
{
    public static LeaveBounds Default { get; } = new(TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(2));
}
