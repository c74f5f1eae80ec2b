using System.Buffers;
using System.Collections.Concurrent;
using System.Net.Security;
using System.Net.Sockets;
using System.Threading.Tasks.Sources;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.Logging;
using Patterns.PeerLinks.Wire;
using Patterns.Transport;

namespace Patterns.PeerLinks.Links;

/// <summary>
/// This node's link to one peer. It dials the peer's control and bulk streams (two HTTP/2 connections, so bulk
/// traffic never holds up control frames), mirrors the peer's subscriptions as local in-memory subscriptions whose
/// handler forwards each message to the peer and returns the peer's settlement, and reconnects with jittered
/// back-off, replaying what the peer had not acknowledged.
/// </summary>
internal sealed partial class PeerLink : IAsyncDisposable
{
    private readonly PeerLinksTransport _transport;
    private readonly PeerLinksOptions _options;
    private readonly GrpcChannel _controlChannel;
    private readonly GrpcChannel _bulkChannel;
    private readonly LinkWriter _controlWriter = LinkWriter.ForControl();
    private readonly LinkWriter _bulkWriter = LinkWriter.ForBulk();
    private readonly OutboundSequence _data;
    // Deliveries forwarded and waiting for their settlement, by data sequence number. Added under the sequence's own
    // lock (OnAssigned), taken by the control reader once per gRPC message for all the settlements it carried.
    private readonly Dictionary<long, PendingDelivery> _pending = [];
    private readonly Lock _pendingGate = new();
    private readonly List<SettlementRecord> _settled = [];
    private readonly ConcurrentDictionary<long, Proxy> _proxies = new();
    private readonly ConcurrentDictionary<string, int> _queueConsumers = new(StringComparer.Ordinal);
    // The queues the peer consumed at some point since the link last came up: while it is not up, a send to one of them
    // that no other node takes is refused as unavailable (it may come back), not as addressed to no consumer at all.
    private readonly ConcurrentDictionary<string, byte> _queuesConsumedSinceUp = new(StringComparer.Ordinal);
    private static readonly TimeSpan StopBound = TimeSpan.FromSeconds(10);
    private readonly SemaphoreSlim _announceGate = new(1, 1);
    private readonly CancellationTokenSource _stopping = new();
    private InboundSequence _settlements;
    private Guid _session = Guid.NewGuid();
    private readonly Lock _sessionGate = new();
    private Guid _remoteIncarnation;
    private Guid _appliedIncarnation;
    private long _appliedVersion = -1;
    private bool _sessionUsed;
    private long _lastHeard;
    private Task _running = Task.CompletedTask;
    private readonly Lock _lifecycle = new();
    private bool _closed;

    // Made once: a method group passed as a delegate allocates one at every call (once per settlement received).
    private readonly FrameReceived _onControlFrame;
    private readonly MessageReceived _onSettlement;
    private readonly MessageReceived _onAckRun;

    public PeerLink(PeerLinksTransport transport, Uri address)
    {
        _transport = transport;
        _options = transport.Options;
        Address = address;
        _data = new OutboundSequence(_options.ReplayBufferBytes, _bulkWriter.Wake, OnAssigned);
        _bulkWriter.Sequence = _data;
        _settlements = new InboundSequence(FrameLimits.MaxChunkBytes);
        _controlChannel = CreateChannel();
        _bulkChannel = CreateChannel();
        State = PeerState.Connecting;
        _onControlFrame = OnControlFrame;
        _onSettlement = OnSettlement;
        _onAckRun = OnAckRun;
    }

    public Uri Address { get; }

    private ControlProbe? _probe;

    public PeerState State { get; private set; }

    /// <summary>Gets why the link is in its <see cref="State"/> (null when up).</summary>
    public string? Reason { get; private set; }

    public string? RemoteNodeId { get; private set; }

    /// <summary>Gets the bytes held unacknowledged on this link (the replay buffer).</summary>
    public long BufferedBytes => _data.Bytes;

    /// <summary>Gets the most bytes this link ever held unacknowledged at once.</summary>
    public long PeakBufferedBytes => _data.PeakBytes;

    /// <summary>Gets the bytes the bulk stream has written (all connections).</summary>
    internal long BulkBytesWritten => _bulkWriter.BytesWritten;

    /// <summary>Gets the writers of the control and the bulk stream (the tests check which kind each is).</summary>
    internal (LinkWriter Control, LinkWriter Bulk) Writers => (_controlWriter, _bulkWriter);

    /// <summary>Gets the link's window in bytes.</summary>
    public long ReplayCapacity => _data.Capacity;

    /// <summary>
    /// Gets the current session (changed only by <see cref="LoseSessionAsync"/>, under <c>_sessionGate</c>, which also
    /// covers a proxy's check of its session and the queuing of its message: see <see cref="ForwardAsync"/>).
    /// </summary>
    private Guid CurrentSession
    {
        get
        {
            lock (_sessionGate)
            {
                return _session;
            }
        }
    }

    public bool HasQueueConsumer(string queue) => _queueConsumers.TryGetValue(queue, out var n) && n > 0;

    /// <summary>
    /// Gets whether the peer consumed <paramref name="queue"/> since the link last came up and the link is not up now: the
    /// consumer is out of reach (the peer stopped, crashed or is cut off) rather than unknown.
    /// </summary>
    public bool ConsumedWhileUp(string queue) => State != PeerState.Up && _queuesConsumedSinceUp.ContainsKey(queue);

    /// <summary>Starts dialling the peer; a link already closed (the node left meanwhile) does not start.</summary>
    public void Start()
    {
        lock (_lifecycle)
        {
            if (_closed)
            {
                return;
            }

            Report(PeerState.Connecting, "not linked yet");
            _running = Task.Run(RunAsync);
        }
    }

    public ValueTask DisposeAsync() => new(CloseAsync(CancellationToken.None));

    /// <summary>
    /// Closes the link: ends its connection, hands back what it had in flight and disposes its channels. Each wait is
    /// bounded (<see cref="StopBound"/>), and none outlasts <paramref name="stopToken"/>: once it is cancelled, what still
    /// runs is cancelled and abandoned.
    /// </summary>
    public async Task CloseAsync(CancellationToken stopToken)
    {
        Task running;
        lock (_lifecycle)
        {
            if (_closed)
            {
                return;
            }

            _closed = true;
            running = _running;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        try
        {
            // The connection ends at once on cancellation; the bound only keeps a stuck call from holding the stop.
            await PeerSession.Quietly(running).WaitAsync(StopBound, stopToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            _transport.Logger.LogWarning("The link to {Address} did not end within {Bound} of the stop; stopping without it.", Address, StopBound);
        }
        catch (OperationCanceledException) when (stopToken.IsCancellationRequested)
        {
            _transport.Logger.LogWarning("The link to {Address} had not ended when the host's stop token was cancelled; stopping without it.", Address);
        }

        try
        {
            await LoseSessionAsync("the node is stopping", stopToken).ConfigureAwait(false);
        }
        finally
        {
            _controlChannel.Dispose();
            _bulkChannel.Dispose();
            if (running.IsCompleted)
            {
                // An abandoned connection still reads the token: kept for it otherwise.
                _stopping.Dispose();
            }
        }
    }

    private async Task RunAsync()
    {
        var attempt = 0;
        long? brokenSince = null;
        while (!_stopping.IsCancellationRequested)
        {
            string reason;
            var refused = false;
            var left = false;
            try
            {
                await ConnectAndRunAsync().ConfigureAwait(false);
                reason = "the peer closed the link";
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
            {
                return;
            }
            catch (RpcException ex) when (IsLeaving(ex))
            {
                // A graceful stop of the peer: down at once, without dialling it for the reconnect grace first.
                reason = $"{RemoteNodeId ?? Address.ToString()} left (it stopped)";
                left = true;
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Unauthenticated)
            {
                reason = $"refused: {ex.Status.Detail}";
                PeerLinksLog.RefusedByPeer(_transport.Logger, Address, ex.Status.Detail);
                refused = true;
            }
            catch (Exception ex)
            {
                reason = Describe(ex);
                refused = IsRefused(ex);
            }

            var wasUp = State == PeerState.Up;
            if (wasUp)
            {
                attempt = 0;
                brokenSince = null;
                if (!left)
                {
                    Report(PeerState.Connecting, reason);
                }
            }

            brokenSince ??= _transport.TimeProvider.GetTimestamp();
            if (State != PeerState.Down && (refused || left || _transport.TimeProvider.GetElapsedTime(brokenSince.Value) > _options.ReconnectGrace))
            {
                PeerLinksLog.PeerDown(_transport.Logger, Address, reason);
                await LoseSessionAsync(reason).ConfigureAwait(false);
                Report(PeerState.Down, reason);
            }

            var delay = Backoff(attempt++);
            if (wasUp)
            {
                PeerLinksLog.LinkBroken(_transport.Logger, Address, reason, delay);
            }
            else
            {
                PeerLinksLog.RetryFailed(_transport.Logger, Address, reason, delay);
            }

            try
            {
                await Task.Delay(delay, _transport.TimeProvider, _stopping.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private TimeSpan Backoff(int attempt)
    {
        var ceiling = Math.Min(_options.MaxReconnectDelay.TotalMilliseconds, _options.FirstReconnectDelay.TotalMilliseconds * Math.Pow(2, Math.Min(attempt, 20)));
        return TimeSpan.FromMilliseconds(ceiling * (0.5 + (Random.Shared.NextDouble() / 2)));
    }

    private async Task ConnectAndRunAsync()
    {
        using var connection = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
        var token = connection.Token;
        var headers = _transport.Security.Headers(_transport.NodeId, _session);
        using var control = _controlChannel.CreateCallInvoker().AsyncDuplexStreamingCall(LinkService.Control, null, new CallOptions(headers, cancellationToken: token));
        await WriteSingleAsync(control.RequestStream, Frames.Hello(new Hello(_transport.NodeId, _session, _settlements.LastReceived, _options.Protocol)), token).ConfigureAwait(false);
        if (!await control.ResponseStream.MoveNext(token).ConfigureAwait(false))
        {
            throw new IOException("The peer closed the link before answering the hello.");
        }

        var ack = ReadHelloAck(control.ResponseStream.Current);
        if (_sessionUsed && (!ack.Resumed || ack.Incarnation != _remoteIncarnation))
        {
            await LoseSessionAsync(ack.Incarnation != _remoteIncarnation ? $"{ack.NodeId} restarted" : $"{ack.NodeId} no longer knows this link's session").ConfigureAwait(false);
            throw new IOException("The session was lost; starting a new one.");
        }

        _remoteIncarnation = ack.Incarnation;
        RemoteNodeId = ack.NodeId;
        _sessionUsed = true;
        _settlements.ResetPartial();
        _settled.Clear();
        try
        {
            _data.Rewind(ack.LastReceived);
        }
        catch (MalformedFrameException ex)
        {
            PeerLinksLog.Malformed(_transport.Logger, "control", ack.NodeId, ex.Message);
            throw;
        }

        _controlWriter.ClearControl();
        Touch();
        var reading = ReadControlAsync(control.ResponseStream, token);
        var controlWriting = _controlWriter.RunAsync(control.RequestStream, token);
        await ApplyAnnouncementAsync(ack.Incarnation, ack.Version, ack.Subscriptions, token, linking: true).ConfigureAwait(false);
        using var bulk = _bulkChannel.CreateCallInvoker().AsyncDuplexStreamingCall(LinkService.Bulk, null, new CallOptions(headers, cancellationToken: token));
        var bulkWriting = _bulkWriter.RunAsync(bulk.RequestStream, token);
        var bulkReading = DrainAsync(bulk.ResponseStream, token);
        var heartbeat = HeartbeatAsync(token);
        PeerLinksLog.LinkUp(_transport.Logger, Address, ack.NodeId, ack.Resumed ? " (resumed, replaying unacknowledged messages)" : string.Empty);
        Report(PeerState.Up, null);
        var all = new[] { reading, controlWriting, bulkWriting, bulkReading, heartbeat };
        var first = await Task.WhenAny(all).ConfigureAwait(false);
        await connection.CancelAsync().ConfigureAwait(false);
        foreach (var task in all)
        {
            await PeerSession.Quietly(task).ConfigureAwait(false);
        }

        // The peer ends both calls when it leaves; whichever ended first, the leaving status wins over the other's end.
        foreach (var task in all)
        {
            if (task.Exception?.InnerException is RpcException rpc && IsLeaving(rpc))
            {
                throw rpc;
            }
        }

        await first.ConfigureAwait(false);
    }

    private static HelloAck ReadHelloAck(FrameBatch batch)
    {
        try
        {
            HelloAck? ack = null;
            Frames.Parse(batch.Span, (type, body) =>
            {
                if (type != FrameType.HelloAck || ack is not null)
                {
                    throw new MalformedFrameException($"a {type} frame instead of the hello acknowledgement");
                }

                ack = Frames.ReadHelloAck(body);
            });
            return ack ?? throw new MalformedFrameException("an empty first message");
        }
        finally
        {
            batch.Return();
        }
    }

    private static async Task WriteSingleAsync(IClientStreamWriter<FrameBatch> stream, byte[] frame, CancellationToken cancellationToken)
    {
        var batch = FrameBatch.Rent();
        try
        {
            frame.CopyTo(batch.Buffer, 0);
            batch.Length = frame.Length;
            await stream.WriteAsync(batch, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            batch.Return();
        }
    }

    private async Task ReadControlAsync(IAsyncStreamReader<FrameBatch> responses, CancellationToken cancellationToken)
    {
        try
        {
            while (await responses.MoveNext(cancellationToken).ConfigureAwait(false))
            {
                var batch = responses.Current;
                try
                {
                    Touch();
                    Frames.Parse(batch.Span, _onControlFrame);
                }
                finally
                {
                    batch.Return();

                    // Also after a malformed frame: the settlements read whole before it count as received (the peer
                    // does not send them again), so their deliveries complete now and none is left for a later session.
                    CompleteSettled();
                }

                _controlWriter.Acknowledge(_settlements.LastReceived);
            }
        }
        catch (MalformedFrameException ex)
        {
            PeerLinksLog.Malformed(_transport.Logger, "control", RemoteNodeId ?? Address.ToString(), ex.Message);
            throw;
        }
    }

    private static async Task DrainAsync(IAsyncStreamReader<FrameBatch> responses, CancellationToken cancellationToken)
    {
        while (await responses.MoveNext(cancellationToken).ConfigureAwait(false))
        {
            responses.Current.Return();
        }
    }

    private async Task HeartbeatAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(_options.HeartbeatInterval, _transport.TimeProvider);
        while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
        {
            if (_transport.TimeProvider.GetElapsedTime(Volatile.Read(ref _lastHeard)) > _options.HeartbeatTimeout)
            {
                throw new TimeoutException($"No frame from the peer for longer than the heartbeat timeout ({_options.HeartbeatTimeout}).");
            }

            _controlWriter.Enqueue(Frames.Int64Frame(FrameType.Ping, _transport.TimeProvider.GetTimestamp()));
        }
    }

    /// <summary>
    /// Sends a ping on the control stream and returns the time until its pong: the control stream's round trip, which a
    /// busy bulk stream should not delay (measured by the control-stream benchmark). One probe at a time.
    /// </summary>
    internal Task<TimeSpan> ProbeControlAsync()
    {
        var probe = new ControlProbe(_transport.TimeProvider.GetTimestamp());
        if (Interlocked.CompareExchange(ref _probe, probe, null) is not null)
        {
            throw new InvalidOperationException("A control-stream probe is already running on this link.");
        }

        if (ControlTrace.Enabled)
        {
            ControlTrace.Begin(probe.Stamp);
        }

        _controlWriter.Enqueue(Frames.Int64Frame(FrameType.Ping, probe.Stamp));
        return probe.Done.Task;
    }

    private void OnControlFrame(FrameType type, ReadOnlySpan<byte> body)
    {
        switch (type)
        {
            case FrameType.Pong:
                var stamp = Frames.ReadInt64(body);
                if (ControlTrace.Enabled)
                {
                    ControlTrace.Mark(6, stamp);
                }

                if (Volatile.Read(ref _probe) is { } probe && probe.Stamp == stamp && Interlocked.CompareExchange(ref _probe, null, probe) == probe)
                {
                    probe.Done.TrySetResult(_transport.TimeProvider.GetElapsedTime(stamp));
                }

                break;
            case FrameType.Ack:
                _data.Ack(Frames.ReadInt64(body));
                break;
            case FrameType.Settlement:
                _settlements.Accept(body, _onSettlement);
                break;
            case FrameType.Settlements when _options.Protocol >= LinkProtocol.V2:
                _settlements.Accept(body, _onAckRun);
                break;
            case FrameType.Announce:
                var (version, subscriptions) = Frames.ReadAnnounce(body);
                _ = ApplyAnnouncementAsync(_remoteIncarnation, version, subscriptions, _stopping.Token);
                break;
            default:
                throw new MalformedFrameException($"a {type} frame on the control stream");
        }
    }

    private void OnSettlement(long seq, long subscription, ReadOnlySpan<byte> head, ReadOnlySequence<byte> payload) =>
        _settled.Add(Frames.ReadSettlement(head));

    private void OnAckRun(long seq, long subscription, ReadOnlySpan<byte> head, ReadOnlySequence<byte> payload) =>
        Frames.ReadAckRun(head, _settled);

    /// <summary>Completes the deliveries whose settlements the last gRPC message carried: one lock for all of them.</summary>
    private void CompleteSettled()
    {
        if (_settled.Count == 0)
        {
            return;
        }

        var count = _settled.Count;

        // The deliveries, and the records only when one is more than a plain acknowledgement (8 bytes per settlement
        // in the common case, rather than a copy of every record).
        var found = new PendingDelivery?[count];
        SettlementRecord[]? records = null;
        lock (_pendingGate)
        {
            for (var i = 0; i < count; i++)
            {
                var record = _settled[i];
                found[i] = _pending.Remove(record.DataSeq, out var pending) ? pending : null;
                if (!record.IsPlainAck)
                {
                    (records ??= new SettlementRecord[count])[i] = record;
                }
            }
        }

        _settled.Clear();

        // The waiting handlers continue on the thread pool, a few work items per message rather than one per settlement:
        // each item resumes its share of them in turn (each goes on to forward its next message), off the reader.
        var parts = Math.Clamp(count / 16, 1, Environment.ProcessorCount);
        var size = (count + parts - 1) / parts;
        for (var start = 0; start < count; start += size)
        {
            ThreadPool.UnsafeQueueUserWorkItem(new SettledRun(found, records, start, Math.Min(start + size, count)), preferLocal: false);
        }
    }

    /// <summary>A share of one gRPC message's settlements, completed on one thread-pool thread.</summary>
    private sealed class SettledRun(PendingDelivery?[] found, SettlementRecord[]? records, int start, int end) : IThreadPoolWorkItem
    {
        public void Execute()
        {
            for (var i = start; i < end; i++)
            {
                if (found[i] is not { } pending)
                {
                    continue;
                }

                if (records is not null && !records[i].IsEmpty)
                {
                    pending.Complete(records[i], inline: true);
                }
                else
                {
                    pending.CompleteAck(inline: true);
                }
            }
        }
    }

    private void OnAssigned(OutEntry entry)
    {
        if (entry is PendingDelivery pending)
        {
            lock (_pendingGate)
            {
                _pending[entry.Seq] = pending;
            }
        }
    }

    private void Touch() => Volatile.Write(ref _lastHeard, _transport.TimeProvider.GetTimestamp());

    /// <summary>The peer's session is gone (it restarted, the grace passed, or this node stops): everything in flight is handed back.</summary>
    private async Task LoseSessionAsync(string reason, CancellationToken stopToken = default)
    {
        lock (_sessionGate)
        {
            _session = Guid.NewGuid();
        }

        _sessionUsed = false;
        _settlements = new InboundSequence(FrameLimits.MaxChunkBytes);

        // The control writer's acknowledgement counted the old session's settlements: written first on the new session's
        // first connection, it acknowledged numbers the peer's new session had not sent yet (closed as malformed), or,
        // once it had, settlements this end had not received (dropped from the peer's replay buffer).
        _controlWriter.ResetAcknowledgement();

        // Settlements of the old session must never complete deliveries of the new one (sequence numbers restart at 1).
        _settled.Clear();
        var failure = new TransportUnavailableException($"The link to {Address} lost its session ({reason}); the message is delivered again.");
        var proxies = _proxies.Values.ToArray();
        _proxies.Clear();
        _queueConsumers.Clear();
        foreach (var proxy in proxies)
        {
            proxy.Dead = failure;
        }

        FailInFlight(failure);

        // Bounded: past the deadline the proxies cancel what still runs and abandon it (their messages stay queued here).
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopToken);
        deadline.CancelAfter(StopBound);
        var stopping = Task.WhenAll(proxies.Select(p => p.Subscription!.StopAsync(deadline.Token)));
        while (!stopping.IsCompleted)
        {
            if (stopToken.IsCancellationRequested)
            {
                // The host's stop token: the proxies were told to stop at once; the leave waits no longer for them.
                FailInFlight(failure);
                _ = PeerSession.Quietly(stopping);
                return;
            }

            // A handler that read the proxy as alive just before it died may still queue a message: hand it back too.
            await Task.WhenAny(stopping, Task.Delay(TimeSpan.FromMilliseconds(20), _transport.TimeProvider, stopToken)).ConfigureAwait(false);
            FailInFlight(failure);
        }

        await stopping.ConfigureAwait(false);
    }

    private void FailInFlight(Exception failure)
    {
        _data.Reset(failure);
        PendingDelivery[] failed;
        lock (_pendingGate)
        {
            failed = [.. _pending.Values];
            _pending.Clear();
        }

        foreach (var pending in failed)
        {
            pending.Fail(failure);
        }
    }

    private void Report(PeerState state, string? reason)
    {
        Reason = reason;
        State = state;
        _transport.Membership.Set(new PeerInfo(Address, RemoteNodeId, state, _transport.TimeProvider.GetUtcNow(), reason));
    }

    private GrpcChannel CreateChannel()
    {
        var handler = new SocketsHttpHandler
        {
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            ConnectTimeout = _options.HeartbeatTimeout,
            EnableMultipleHttp2Connections = false,
            InitialHttp2StreamWindowSize = 4 * 1024 * 1024,
        };
        if (Address.Scheme == Uri.UriSchemeHttps)
        {
            handler.SslOptions = new SslClientAuthenticationOptions
            {
                ClientCertificates = _options.ClientCertificate is { } certificate ? [certificate] : null,
                RemoteCertificateValidationCallback = (_, certificate, chain, errors) =>
                    _transport.Security.ValidateCertificate(certificate as System.Security.Cryptography.X509Certificates.X509Certificate2, chain, errors),
            };
        }

        return GrpcChannel.ForAddress(Address, new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxReceiveMessageSize = FrameBatch.MaxBytes,
            MaxSendMessageSize = FrameBatch.MaxBytes,
            LoggerFactory = _transport.LoggerFactory,
        });
    }

    private static bool IsRefused(Exception ex)
    {
        for (var e = ex; e is not null; e = e.InnerException)
        {
            if (e is SocketException { SocketErrorCode: SocketError.ConnectionRefused })
            {
                return true;
            }
        }

        return ex is RpcException { StatusCode: StatusCode.Unavailable } rpc && rpc.Status.DebugException is { } inner && IsRefused(inner);
    }

    private static bool IsLeaving(RpcException ex) => ex.Trailers.Get(LinkService.LeavingTrailer) is not null;

    private static string Describe(Exception ex) => ex is RpcException rpc ? $"{rpc.StatusCode}: {rpc.Status.Detail}" : ex.Message;

    /// <summary>
    /// A message forwarded to the peer, waiting for its settlement: the link's queue entry itself (one object per message)
    /// and the value task the proxy's handler returns, without a task, a completion source or a cancellation promise per
    /// message. Continuations run on the thread pool, so the control reader only hands settlements on.
    /// </summary>
    private sealed class PendingDelivery : OutEntry, IValueTaskSource<Settlement>
    {
        private ManualResetValueTaskSourceCore<Settlement> _core = new() { RunContinuationsAsynchronously = true };
        private CancellationTokenRegistration _cancellation;
        private int _done;

        public PendingDelivery(long subscription, byte[] head, ReadOnlySequence<byte> payload, CancellationToken cancellationToken)
            : base(FrameType.Data, subscription, head, payload)
        {
            if (cancellationToken.CanBeCanceled)
            {
                _cancellation = cancellationToken.UnsafeRegister(static (s, token) => ((PendingDelivery)s!).Cancel(token), this);
            }
        }

        public ValueTask<Settlement> Task => new(this, _core.Version);

        /// <summary>Sets the settlement; <paramref name="inline"/> resumes the waiting handler on this thread (a thread-pool thread).</summary>
        public void Complete(in SettlementRecord record, bool inline)
        {
            Exception? exception = record.ExceptionType is { } type ? new RemoteHandlerException(type, record.ExceptionMessage ?? string.Empty) : null;
            Set(record.Kind switch
            {
                SettlementKind.Ack => Settlement.Ack,
                SettlementKind.Retry when record.Deferred && record.Delay <= TimeSpan.Zero => Settlement.Release(record.Reason ?? "released by the remote node"),
                SettlementKind.Retry when record.Deferred => Settlement.Defer(record.Delay, record.Reason ?? "put off by the remote node"),
                SettlementKind.Retry => Settlement.Retry(record.Delay, exception),
                _ => Settlement.DeadLetter(record.Reason ?? "dead-lettered by the remote handler", exception),
            }, inline);
        }

        /// <summary>Sets a plain acknowledgement (see <see cref="Complete"/>).</summary>
        public void CompleteAck(bool inline) => Set(Settlement.Ack, inline);

        public void Fail(Exception reason) => Set(Settlement.Retry(TimeSpan.Zero, reason), inline: false);

        public Settlement GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);

        private void Set(in Settlement settlement, bool inline)
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                _cancellation.Dispose();
                _core.RunContinuationsAsynchronously = !inline;
                _core.SetResult(settlement);
            }
        }

        private void Cancel(CancellationToken token)
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                _core.SetException(new OperationCanceledException(token));
            }
        }
    }

    private sealed record ControlProbe(long Stamp)
    {
        public TaskCompletionSource<TimeSpan> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
