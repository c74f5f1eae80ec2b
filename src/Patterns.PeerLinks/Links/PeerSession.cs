using System.Buffers;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Patterns.PeerLinks.Wire;
using Patterns.Transport;

namespace Patterns.PeerLinks.Links;

/// <summary>
/// The listening end of one peer's link to this node: it receives the peer's deliveries (bulk stream), settles them
/// back in sequence (control stream), answers heartbeats and pushes this node's subscription changes. It outlives a
/// connection, so a reconnect within the grace resumes where the last one stopped.
/// </summary>
internal sealed class PeerSession
{
    private readonly PeerLinksTransport _transport;
    private readonly LinkWriter _writer = LinkWriter.ForControl();
    private readonly OutboundSequence _settlements;
    private readonly InboundSequence _data;
    private readonly Lock _gate = new();
    private readonly List<(long Version, TaskCompletionSource Done)> _announceWaiters = [];
    private CancellationTokenSource? _control;
    private Task _bulk = Task.CompletedTask;
    private CancellationTokenSource? _bulkCancel;
    private long _lastHeard;
    private long _acknowledgedVersion;
    private int _protocol;

    // Deliveries parsed from the bulk message being read, for one subscription: handed over together (read loop only).
    private readonly List<RemoteDelivery> _arrived = [];
    private LocalSubscription? _arrivedFor;

    // The frame and message callbacks, made once: a method group passed as a delegate allocates one at every call,
    // which was once per received message.
    private readonly FrameReceived _onControlFrame;
    private readonly FrameReceived _onBulkFrame;
    private readonly MessageReceived _onData;

    // The bulk reader's last message type, content type and reply-to (one reader at a time per session).
    private readonly DecodedStrings _strings = new();

    public PeerSession(PeerLinksTransport transport, string nodeId, Guid id)
    {
        _transport = transport;
        NodeId = nodeId;
        Id = id;
        _settlements = new OutboundSequence(long.MaxValue, _writer.Wake);
        _writer.Sequence = _settlements;
        _data = new InboundSequence(transport.Options.MaxMessageBytes);
        DetachedAt = transport.TimeProvider.GetUtcNow();
        _onControlFrame = OnControlFrame;
        _onBulkFrame = OnBulkFrame;
        _onData = OnData;
    }

    public string NodeId { get; }

    public Guid Id { get; }

    public bool IsAttached { get; private set; }

    public DateTimeOffset DetachedAt { get; private set; }

    /// <summary>Gets the protocol version this session speaks (fixed by the dialer's first hello; see <see cref="LinkProtocol"/>).</summary>
    public int Protocol => Volatile.Read(ref _protocol) is var p and > 0 ? p : LinkProtocol.V1;

    /// <summary>Gets the latest announcement version the peer confirmed it applied in this session (the tests read it).</summary>
    internal long AcknowledgedVersion
    {
        get
        {
            lock (_gate)
            {
                return _acknowledgedVersion;
            }
        }
    }

    /// <summary>Gets the sequence the session's settlements are queued in (the tests read what it would send).</summary>
    internal OutboundSequence Settlements => _settlements;

    public void Settle(long seq, in Settlement settlement)
    {
        if (IsPlainAck(settlement) && Protocol >= LinkProtocol.V2)
        {
            _settlements.AppendAcks([seq]);
            return;
        }

        _settlements.Append(SettlementEntry(seq, settlement));
    }

    /// <summary>
    /// Queues settlements made together (see <see cref="Settled"/>) at once: from protocol 2 on, the plain
    /// acknowledgements among them share <see cref="FrameType.Settlements"/> frames (with any queued just before and
    /// not yet written), the others keep a frame each.
    /// </summary>
    public void Settle(List<SettledItem> settlements)
    {
        if (Protocol < LinkProtocol.V2)
        {
            var entries = new List<OutEntry>(settlements.Count);
            foreach (var item in settlements)
            {
                entries.Add(item.Entry ?? OutEntry.AckSettlement(item.Seq));
            }

            _settlements.AppendRange(entries);
            return;
        }

        Span<long> acks = stackalloc long[Math.Min(settlements.Count, 64)];
        var count = 0;
        List<OutEntry>? others = null;
        foreach (var item in settlements)
        {
            if (item.Entry is { } entry)
            {
                (others ??= []).Add(entry);
                continue;
            }

            if (count == acks.Length)
            {
                _settlements.AppendAcks(acks);
                count = 0;
            }

            acks[count++] = item.Seq;
        }

        _settlements.AppendAcks(acks[..count]);
        if (others is not null)
        {
            _settlements.AppendRange(others);
        }
    }

    /// <summary>A settlement to queue with others (<see cref="Settle(List{SettledItem})"/>): no object for a plain acknowledgement.</summary>
    public static SettledItem Settled(long seq, in Settlement settlement) =>
        IsPlainAck(settlement) ? new(seq, null) : new(seq, SettlementEntry(seq, settlement));

    public static OutEntry SettlementEntry(long seq, in Settlement settlement) =>
        IsPlainAck(settlement)
            ? OutEntry.AckSettlement(seq)
            : new(FrameType.Settlement, 0, Frames.SettlementHead(seq, settlement), ReadOnlySequence<byte>.Empty);

    /// <summary>Fixes the protocol version from the dialer's first hello (later hellos of the session are the same dialer).</summary>
    internal void UseProtocol(int dialer) =>
        Interlocked.CompareExchange(ref _protocol, Math.Clamp(dialer, LinkProtocol.V1, LinkProtocol.Current), 0);

    private static bool IsPlainAck(in Settlement settlement) =>
        settlement.Kind == SettlementKind.Ack && settlement.Reason is null && settlement.Exception is null && settlement.Delay == TimeSpan.Zero && !settlement.IsDeferral;

    /// <summary>
    /// Waits until the peer has acknowledged every settlement queued so far (this node stops gracefully), or until the
    /// session is detached or <paramref name="deadline"/> passes.
    /// </summary>
    public async Task FlushSettlementsAsync(CancellationToken deadline)
    {
        if (!IsAttached)
        {
            return;
        }

        await Quietly(_settlements.WhenDrained().WaitAsync(deadline)).ConfigureAwait(false);
    }

    /// <summary>Pushes an announcement; the returned task completes when the peer applied it, or the link dropped.</summary>
    public Task PushAnnouncement(long version, byte[] frame)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            if (!IsAttached || _acknowledgedVersion >= version)
            {
                return Task.CompletedTask;
            }

            _announceWaiters.Add((version, done));
        }

        _writer.Enqueue(frame);
        return done.Task;
    }

    public async Task RunControlAsync(Hello hello, bool resumed, IAsyncStreamReader<FrameBatch> requests, IServerStreamWriter<FrameBatch> responses, CancellationToken callCancelled)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(callCancelled);
        CancellationTokenSource? previous;
        lock (_gate)
        {
            previous = _control;
            _control = cts;
        }

        await CancelQuietly(previous).ConfigureAwait(false);
        UseProtocol(Math.Min(hello.Protocol, _transport.Options.Protocol));
        try
        {
            _settlements.Rewind(resumed ? hello.LastReceived : 0);
        }
        catch (MalformedFrameException ex)
        {
            PeerLinksLog.Malformed(_transport.Logger, "control", NodeId, ex.Message);
            Detach(cts);
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"Malformed frame: {ex.Message}"));
        }

        _writer.ClearControl();
        var (version, subscriptions) = _transport.Attach(this, () =>
        {
            lock (_gate)
            {
                IsAttached = true;
            }
        });
        var first = FrameBatch.Rent();
        try
        {
            var ack = Frames.HelloAck(new HelloAck(_transport.NodeId, _transport.Incarnation, resumed, _data.LastReceived, version, subscriptions, Protocol));
            ack.CopyTo(first.Buffer, 0);
            first.Length = ack.Length;
            await responses.WriteAsync(first, cts.Token).ConfigureAwait(false);
        }
        finally
        {
            first.Return();
        }

        Touch();
        var writing = _writer.RunAsync(responses, cts.Token);
        var watching = WatchHeartbeatAsync(cts);
        try
        {
            while (await requests.MoveNext(cts.Token).ConfigureAwait(false))
            {
                var batch = requests.Current;
                try
                {
                    Touch();
                    Frames.Parse(batch.Span, _onControlFrame);
                }
                finally
                {
                    batch.Return();
                }
            }
        }
        catch (MalformedFrameException ex)
        {
            PeerLinksLog.Malformed(_transport.Logger, "control", NodeId, ex.Message);
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"Malformed frame: {ex.Message}"));
        }
        finally
        {
            await cts.CancelAsync().ConfigureAwait(false);
            await Quietly(writing).ConfigureAwait(false);
            await Quietly(watching).ConfigureAwait(false);
            Detach(cts);
        }
    }

    /// <summary>
    /// Reads a bulk connection of this session. A newer call ends the one before it and starts reading only once that
    /// one's reader has returned; a call overtaken by a newer one while it waited does not read at all and ends with an
    /// <see cref="RpcException"/> of status <see cref="StatusCode.Aborted"/>. So however calls overlap, one reader at a
    /// time touches the session's partial message and delivery run.
    /// </summary>
    public async Task RunBulkAsync(IAsyncStreamReader<FrameBatch> requests, CancellationToken callCancelled)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(callCancelled);
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task previous;
        CancellationTokenSource? previousCancel;
        lock (_gate)
        {
            // Claimed in one step: the next call waits for this one, whatever happens between here and the read.
            previous = _bulk;
            previousCancel = _bulkCancel;
            _bulk = done.Task;
            _bulkCancel = cts;
        }

        try
        {
            await CancelQuietly(previousCancel).ConfigureAwait(false);
            await Quietly(previous).ConfigureAwait(false);
            if (cts.IsCancellationRequested && !callCancelled.IsCancellationRequested)
            {
                // Overtaken while it waited: a clear status for the abandoned call, not an exception the gRPC host logs as
                // a handler error (it does so for an OperationCanceledException while the request itself is alive).
                throw new RpcException(new Status(StatusCode.Aborted, "A newer bulk connection of this session, or this node stopping, ended this one before it read."));
            }

            callCancelled.ThrowIfCancellationRequested();
            await ReadBulkAsync(requests, cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested && !callCancelled.IsCancellationRequested)
        {
            // Ended mid-read by a newer call (or this node stopping) while the request itself is alive: the same clear
            // status as an overtaken call, logged by the gRPC host at information level rather than as a handler error.
            PeerLinksLog.BulkReaderReplaced(_transport.Logger, NodeId);
            throw new RpcException(new Status(StatusCode.Aborted, "A newer bulk connection of this session, or this node stopping, ended this one."));
        }
        finally
        {
            lock (_gate)
            {
                if (ReferenceEquals(_bulkCancel, cts))
                {
                    _bulkCancel = null;
                }
            }

            done.TrySetResult();
        }
    }

    /// <summary>This node stops: ends the peer's calls now, so the listener need not wait for them to time out.</summary>
    public async Task CloseAsync()
    {
        CancellationTokenSource? control;
        CancellationTokenSource? bulk;
        lock (_gate)
        {
            control = _control;
            bulk = _bulkCancel;
        }

        await CancelQuietly(control).ConfigureAwait(false);
        await CancelQuietly(bulk).ConfigureAwait(false);
    }

    private static async Task CancelQuietly(CancellationTokenSource? source)
    {
        if (source is null)
        {
            return;
        }

        try
        {
            await source.CancelAsync().ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            // That connection has ended already.
        }
    }

    private async Task ReadBulkAsync(IAsyncStreamReader<FrameBatch> requests, CancellationToken cancellationToken)
    {
        _data.ResetPartial();
        try
        {
            await ReadEachFairlyAsync(requests, HandleBulk, cancellationToken).ConfigureAwait(false);
        }
        catch (MalformedFrameException ex)
        {
            PeerLinksLog.Malformed(_transport.Logger, "bulk", NodeId, ex.Message);
            _data.ResetPartial();
            CancellationTokenSource? control;
            lock (_gate)
            {
                control = _control;
            }

            // The whole link closes; the dialler reconnects and replays from the last whole message.
            await CancelQuietly(control).ConfigureAwait(false);

            throw new RpcException(new Status(StatusCode.InvalidArgument, $"Malformed frame: {ex.Message}"));
        }
    }

    private void HandleBulk(FrameBatch batch)
    {
        try
        {
            Touch();
            Frames.Parse(batch.Span, _onBulkFrame);
        }
        finally
        {
            batch.Return();

            // Also after a malformed frame: what was received whole before it is counted as received.
            HandArrived();
        }

        _writer.Acknowledge(_data.LastReceived);
    }

    /// <summary>
    /// The bulk reader's loop: hands each gRPC message to <paramref name="handle"/>. A saturated bulk stream's messages
    /// are already buffered when asked for; when one was (read without waiting), the thread first goes back to the pool
    /// (see <see cref="FairShare"/>), so the reader holds a thread for one message at a time. A message the reader
    /// waited for is handled at once: a lone message costs no hop.
    /// </summary>
    internal static async Task ReadEachFairlyAsync(IAsyncStreamReader<FrameBatch> requests, Action<FrameBatch> handle, CancellationToken cancellationToken)
    {
        while (true)
        {
            var reading = requests.MoveNext(cancellationToken);
            if (reading.IsCompleted)
            {
                await FairShare.Yield();

                // Cancelled during the hand-back: the message is not handled (the connection is going).
                cancellationToken.ThrowIfCancellationRequested();
            }

            if (!await reading.ConfigureAwait(false))
            {
                return;
            }

            handle(requests.Current);
        }
    }

    private void OnControlFrame(FrameType type, ReadOnlySpan<byte> body)
    {
        switch (type)
        {
            case FrameType.Ping:
                if (ControlTrace.Enabled)
                {
                    ControlTrace.Mark(3, Frames.ReadInt64(body));
                }

                _writer.Enqueue(Frames.Int64Frame(FrameType.Pong, Frames.ReadInt64(body)));
                break;
            case FrameType.Ack:
                _settlements.Ack(Frames.ReadInt64(body));
                break;
            case FrameType.AnnounceAck:
                Acknowledged(Frames.ReadInt64(body));
                break;
            default:
                throw new MalformedFrameException($"a {type} frame on the control stream");
        }
    }

    private void OnBulkFrame(FrameType type, ReadOnlySpan<byte> body)
    {
        if (type != FrameType.Data)
        {
            throw new MalformedFrameException($"a {type} frame on the bulk stream");
        }

        _data.Accept(body, _onData);
    }

    private void OnData(long seq, long subscription, ReadOnlySpan<byte> head, ReadOnlySequence<byte> payload)
    {
        var envelope = EnvelopeCodec.Read(head, payload, _strings);
        if (_transport.TryGetSubscription(subscription, out var target))
        {
            if (!ReferenceEquals(target, _arrivedFor))
            {
                HandArrived();
                _arrivedFor = target;
            }

            _arrived.Add(new RemoteDelivery(this, seq, envelope));
        }
        else
        {
            Settle(seq, LocalSubscription.NotHandled($"Subscription {subscription} is no longer on node {_transport.NodeId}."));
        }
    }

    /// <summary>Hands the deliveries gathered from one gRPC message (a run for one subscription) to that subscription.</summary>
    private void HandArrived()
    {
        if (_arrivedFor is { } target && _arrived.Count > 0)
        {
            target.Deliver(new ArraySegment<RemoteDelivery>([.. _arrived]));
        }

        _arrived.Clear();
        _arrivedFor = null;
    }

    private void Acknowledged(long version)
    {
        List<TaskCompletionSource> done = [];
        lock (_gate)
        {
            _acknowledgedVersion = Math.Max(_acknowledgedVersion, version);
            _announceWaiters.RemoveAll(w =>
            {
                if (w.Version <= version)
                {
                    done.Add(w.Done);
                    return true;
                }

                return false;
            });
        }

        foreach (var d in done)
        {
            d.TrySetResult();
        }
    }

    private void Detach(CancellationTokenSource cts)
    {
        List<(long, TaskCompletionSource Done)> waiters;
        lock (_gate)
        {
            if (!ReferenceEquals(_control, cts))
            {
                return;
            }

            _control = null;
            IsAttached = false;
            DetachedAt = _transport.TimeProvider.GetUtcNow();
            waiters = [.. _announceWaiters];
            _announceWaiters.Clear();
        }

        foreach (var w in waiters)
        {
            w.Done.TrySetResult();
        }
    }

    private void Touch() => Volatile.Write(ref _lastHeard, _transport.TimeProvider.GetTimestamp());

    private async Task WatchHeartbeatAsync(CancellationTokenSource cts)
    {
        using var timer = new PeriodicTimer(_transport.Options.HeartbeatInterval, _transport.TimeProvider);
        while (await timer.WaitForNextTickAsync(cts.Token).ConfigureAwait(false))
        {
            if (_transport.TimeProvider.GetElapsedTime(Volatile.Read(ref _lastHeard)) > _transport.Options.HeartbeatTimeout)
            {
                _transport.Logger.LogWarning("The link from {RemoteNode} was silent for longer than {Timeout}; closing it.", NodeId, _transport.Options.HeartbeatTimeout);
                await cts.CancelAsync().ConfigureAwait(false);
                return;
            }
        }
    }

    internal static async Task Quietly(Task task)
    {
        try
        {
            await task.ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Ending a connection: its failure was already reported by whoever ended it.
        }
    }
}

/// <summary>A settlement queued with others: <see cref="Entry"/> is null for a plain acknowledgement of <see cref="Seq"/>.</summary>
internal readonly record struct SettledItem(long Seq, OutEntry? Entry);
