using System.Buffers;
using System.Buffers.Binary;
using Patterns.Messaging;
using Patterns.PeerLinks.Wire;
using Patterns.Transport;

namespace Patterns.PeerLinks.Links;

internal sealed partial class PeerLink
{
    /// <summary>
    /// Mirrors the peer's subscriptions: adds the new ones at once, drains the removed ones, then confirms. Each snapshot
    /// carries the peer's version (counted per incarnation); one older than what was applied already is skipped. The
    /// hello acknowledgement's snapshot and an announcement sent right after it are applied concurrently, and applying
    /// the older one last removed consumers the newer one had added (a confirmed subscription unknown to the sender).
    /// </summary>
    private async Task ApplyAnnouncementAsync(Guid incarnation, long version, IReadOnlyList<SubscriptionInfo> subscriptions, CancellationToken cancellationToken, bool linking = false)
    {
        // The session the announcement came on: its confirmation goes to that session only (see Confirm).
        var session = CurrentSession;
        List<Proxy> removed = [];
        await _announceGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (incarnation == _appliedIncarnation && version < _appliedVersion)
            {
                // A newer snapshot was applied (and confirmed) already.
                return;
            }

            _appliedIncarnation = incarnation;
            _appliedVersion = version;
            var wanted = subscriptions.ToDictionary(s => s.Id);
            foreach (var (id, proxy) in _proxies)
            {
                // A proxy of an earlier session (added by an announcement applied as the session was lost) is replaced:
                // the id may now name another subscription of the peer's new incarnation.
                if ((!wanted.ContainsKey(id) || proxy.Session != session) && _proxies.TryRemove(id, out _))
                {
                    removed.Add(proxy);
                    if (proxy.Info.Kind == AddressKind.Queue)
                    {
                        _queueConsumers.AddOrUpdate(proxy.Info.Address, 0, static (_, n) => n - 1);
                    }
                }
            }

            foreach (var info in subscriptions)
            {
                if (_proxies.ContainsKey(info.Id))
                {
                    continue;
                }

                var proxy = new Proxy(this, info, session);
                try
                {
                    proxy.Subscription = await _transport.Local.SubscribeAsync(
                        new SubscriptionRequest
                        {
                            Address = new TransportAddress(info.Kind, info.Address),
                            ConsumerGroup = info.Group,
                            Concurrency = info.Credit,
                            Capacity = info.Capacity,
                            FullMode = info.FullMode,
                        },
                        proxy.Handler,
                        cancellationToken).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
                {
                    PeerLinksLog.ProxyFailed(_transport.Logger, $"{info.Kind}:{info.Address}", RemoteNodeId ?? Address.ToString(), ex.Message);
                    continue;
                }

                _proxies[info.Id] = proxy;
                if (info.Kind == AddressKind.Queue)
                {
                    _queueConsumers.AddOrUpdate(info.Address, 1, static (_, n) => n + 1);
                    if (!info.Temporary)
                    {
                        // A temporary queue goes with its subscriber (a reply queue): never worth waiting for.
                        _queuesConsumedSinceUp.TryAdd(info.Address, 0);
                    }
                }
            }

            if (linking)
            {
                // The link comes up: what the peer consumed before (a previous session, a previous incarnation) no longer
                // counts; what it consumes now does (proxies kept by a resumed session included).
                foreach (var queue in _queuesConsumedSinceUp.Keys)
                {
                    if (!HasQueueConsumer(queue))
                    {
                        _queuesConsumedSinceUp.TryRemove(queue, out _);
                    }
                }
            }
        }
        finally
        {
            _announceGate.Release();
        }

        if (removed.Count == 0)
        {
            Confirm(session, version);
            return;
        }

        Volatile.Write(ref _confirming, DrainThenConfirmAsync(removed, session, version));
    }

    /// <summary>
    /// Confirms that the announcement <paramref name="version"/> of <paramref name="session"/> is applied, unless that
    /// session is lost meanwhile (a removed proxy can drain for as long as the announce timeout). A peer's new incarnation
    /// numbers its announcements from 1 again: the old session's confirmation, sent on the new one, had it take its own
    /// announcements up to that version as applied, so it never sent them (their subscriptions stayed unknown here). Under
    /// the lock that changes the session: a confirmation queued before the change is cleared by the next connection.
    /// </summary>
    private void Confirm(Guid session, long version)
    {
        lock (_sessionGate)
        {
            if (session == _session)
            {
                _controlWriter.Enqueue(Frames.Int64Frame(FrameType.AnnounceAck, version));
            }
        }
    }

    private Task _confirming = Task.CompletedTask;

    /// <summary>Gets the confirmation of the last announcement that removed proxies: done once they drained and it was queued or dropped (the tests wait for it).</summary>
    internal Task Confirming => Volatile.Read(ref _confirming);

    private async Task DrainThenConfirmAsync(List<Proxy> removed, Guid session, long version)
    {
        using var deadline = new CancellationTokenSource(_options.AnnounceTimeout, _transport.TimeProvider);
        foreach (var proxy in removed)
        {
            await PeerSession.Quietly(proxy.Subscription!.StopAsync(deadline.Token)).ConfigureAwait(false);
        }

        Confirm(session, version);
    }

    /// <summary>Encodes an envelope as <c>[headLength:4][head]</c> plus its payload (serializing an in-process body).</summary>
    private (byte[] Head, ReadOnlySequence<byte> Payload) Encode(in Envelope envelope)
    {
        var payload = envelope.PayloadSequence;
        var contentType = envelope.ContentType;
        if (payload.IsEmpty && envelope.Body is { } body)
        {
            // Serialized into segments of at most 64 KiB: a large body never needs one array as large as itself here.
            var writer = new SegmentWriter();
            _transport.Serializer.Serialize(writer, body, body.GetType());
            payload = writer.Written;
            contentType ??= _transport.Serializer.ContentType;
        }

        if (payload.Length > _options.MaxMessageBytes)
        {
            throw new MessageTooLargeException(Address.ToString(), payload.Length, _options.MaxMessageBytes, "PeerLinksOptions.MaxMessageBytes");
        }

        var head = HeadWriter.Rent();
        head.Advance(4);
        EnvelopeCodec.WriteHeader(head, envelope, contentType);
        if (head.WrittenCount - 4 > FrameLimits.MaxEnvelopeHeaderBytes)
        {
            throw new ArgumentException($"The headers of message {envelope.MessageId} take {head.WrittenCount - 4} bytes; a peer link carries at most {FrameLimits.MaxEnvelopeHeaderBytes}.", nameof(envelope));
        }

        var bytes = head.WrittenSpan.ToArray();
        BinaryPrimitives.WriteInt32LittleEndian(bytes, bytes.Length - 4);
        return (bytes, payload);
    }

    /// <summary>
    /// One of the peer's subscriptions, mirrored here as an in-memory subscription with the peer's credit as its
    /// concurrency. Its id is valid only in <see cref="Session"/>: the peer's next incarnation numbers its subscriptions
    /// from 1 again.
    /// </summary>
    private sealed class Proxy(PeerLink link, SubscriptionInfo info, Guid session)
    {
        public SubscriptionInfo Info { get; } = info;

        /// <summary>Gets the session of the announcement that added the proxy: its messages go on that session only.</summary>
        public Guid Session { get; } = session;

        public TransportSubscription? Subscription { get; set; }

        public volatile Exception? Dead;

        public ValueTask<Settlement> Handler(Envelope envelope, CancellationToken cancellationToken)
        {
            if (Dead is { } dead)
            {
                return new(Settlement.Retry(TimeSpan.Zero, dead));
            }

            return link.ForwardAsync(this, envelope, cancellationToken);
        }
    }

    private ValueTask<Settlement> ForwardAsync(Proxy proxy, Envelope envelope, CancellationToken cancellationToken)
    {
        byte[] head;
        ReadOnlySequence<byte> payload;
        try
        {
            (head, payload) = Encode(envelope);
        }
        catch (MessageTooLargeException ex)
        {
            // A body serialized here can be too large only now; it never fits, so retrying it would not help.
            return new(Settlement.DeadLetter(ex.Message, ex));
        }

        if (cancellationToken.IsCancellationRequested)
        {
            // Cancelled already: not queued, so it is never sent for a handler that has given up on it.
            return ValueTask.FromCanceled<Settlement>(cancellationToken);
        }

        var pending = new PendingDelivery(proxy.Info.Id, head, payload, cancellationToken);
        ValueTask appended;

        // Checked and queued under the lock that changes the session: a handler of a proxy that was removed (so never
        // marked dead), or that read it alive just before the session was lost, can still get here afterwards. Its
        // message, queued on the next session under its id, reached whatever subscription of the peer's new
        // incarnation had that id. Queued before the change, it is handed back by the reset that follows the change.
        lock (_sessionGate)
        {
            if (proxy.Session != _session)
            {
                var stale = new TransportUnavailableException(
                    $"The link to {Address} lost the session on which the subscription {proxy.Info.Kind}:{proxy.Info.Address} was announced; the message was not sent and is delivered again.");
                pending.Fail(stale);
                return new(Released(stale));
            }

            appended = _data.AppendAsync(pending, cancellationToken);
        }

        return appended.IsCompletedSuccessfully ? pending.Task : WaitForSpaceAsync(appended, pending);
    }

    /// <summary>A message never sent to the peer: handed back without counting a delivery (nothing was attempted).</summary>
    private static Settlement Released(TransportUnavailableException reason) => Settlement.Release(reason.Message);

    /// <summary>The link's window was full: the settlement is awaited once the message is queued.</summary>
    private static async ValueTask<Settlement> WaitForSpaceAsync(ValueTask appended, PendingDelivery pending)
    {
        try
        {
            await appended.ConfigureAwait(false);
        }
        catch (TransportUnavailableException ex)
        {
            // The session was lost (or the link closed) while it waited for room: it was never queued, nor sent.
            pending.Fail(ex);
            return Released(ex);
        }
        catch (OperationCanceledException)
        {
            pending.Fail(new OperationCanceledException());
            throw;
        }

        return await pending.Task.ConfigureAwait(false);
    }
}
