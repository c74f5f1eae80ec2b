using System.Threading.Channels;
using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.PeerLinks.Links;

/// <summary>A delivery that arrived from a peer for a subscription on this node.</summary>
internal readonly record struct RemoteDelivery(PeerSession Session, long Seq, Envelope Envelope);

/// <summary>
/// Deliveries that arrived together for one subscription, from one link. Workers claim them one at a time, in order,
/// so several workers can share a batch and none waits behind a handler another one runs.
/// </summary>
internal sealed class DeliveryBatch(ArraySegment<RemoteDelivery> deliveries)
{
    private int _next = -1;
    private int _pending;
    private int _recruited; // written only by the holder of _pending
    private int _mark;
    private int _participants;

    public int Count => deliveries.Count;

    public PeerSession Session => deliveries[0].Session;

    public bool TryClaim(out RemoteDelivery delivery, out int index)
    {
        index = Interlocked.Increment(ref _next);
        if (index < deliveries.Count)
        {
            delivery = deliveries[index];
            return true;
        }

        delivery = default;
        return false;
    }

    /// <summary>
    /// Returns true when one more worker should be asked to help, before the handler of message <paramref name="index"/>
    /// runs (it may block): messages remain unclaimed, no worker asked before is still on its way, fewer than
    /// <paramref name="limit"/> were asked, and either none was asked yet or the batch has hardly moved since the last
    /// one was asked (the workers on it are held up). Quick handlers thus cost one hand-off per batch; handlers that
    /// block draw in a worker each, up to the subscription's concurrency.
    /// </summary>
    public bool TryRecruit(int index, int limit)
    {
        if (index + 1 >= deliveries.Count || Volatile.Read(ref _pending) != 0 || _recruited >= limit)
        {
            return false;
        }

        if (_recruited > 0 && index - Volatile.Read(ref _mark) > Volatile.Read(ref _participants))
        {
            // Moving on without help: the last worker asked found the others claiming.
            return false;
        }

        if (Interlocked.CompareExchange(ref _pending, 1, 0) != 0)
        {
            return false;
        }

        _recruited++;
        Volatile.Write(ref _mark, index);
        return true;
    }

    /// <summary>The worker asked could not be reached (the subscription is stopping).</summary>
    public void Unrecruit() => Volatile.Write(ref _pending, 0);

    /// <summary>A worker took the batch from the intake: the one asked last (if any) has arrived.</summary>
    public void Arrived()
    {
        Interlocked.Increment(ref _participants);
        Volatile.Write(ref _pending, 0);
    }
}

/// <summary>
/// A subscription on this node. Messages sent on this node reach it through the in-memory transport (and its
/// settlement path); messages forwarded by peers arrive in its intake and are settled back to the sender, whose
/// queue retries or dead-letters them. Stopping first withdraws it from the peers, which drain what they had
/// routed to it, then drains both paths.
/// </summary>
internal sealed class LocalSubscription : TransportSubscription
{
    private static readonly TimeSpan AbandonGrace = TimeSpan.FromSeconds(1);
    private readonly PeerLinksTransport _transport;
    private readonly DeliveryHandler _handler;
    private const int FlushEvery = 32;
    private readonly Channel<DeliveryBatch> _intake = Channel.CreateUnbounded<DeliveryBatch>(new UnboundedChannelOptions { SingleWriter = false });
    private readonly CancellationTokenSource _hardStop = new();
    private readonly CancellationTokenSource _abandon = new();
    private Task[] _workers = [];
    private Task? _stopping;

    public LocalSubscription(PeerLinksTransport transport, long id, SubscriptionRequest request, DeliveryHandler handler)
    {
        _transport = transport;
        Id = id;
        Request = request;
        _handler = handler;
    }

    public long Id { get; }

    public override SubscriptionRequest Request { get; }

    public TransportSubscription? Local { get; set; }

    /// <summary>Gets a value indicating whether peers should route to it (false once it stops).</summary>
    public bool Announced { get; private set; } = true;

    public void Start()
    {
        var workers = new Task[Request.Concurrency];
        for (var i = 0; i < workers.Length; i++)
        {
            workers[i] = Task.Run(RunAsync);
        }

        _workers = workers;
    }

    /// <summary>A message handed back without reaching the handler: a deferral, so it does not count as a delivery.</summary>
    public static Settlement NotHandled(string reason) => Settlement.Defer(TimeSpan.FromMilliseconds(1), reason);

    /// <summary>Hands over deliveries that arrived together (in one gRPC message): one intake write for all of them.</summary>
    public void Deliver(ArraySegment<RemoteDelivery> deliveries)
    {
        if (deliveries.Count > 0 && !_intake.Writer.TryWrite(new DeliveryBatch(deliveries)))
        {
            foreach (var delivery in deliveries)
            {
                delivery.Session.Settle(delivery.Seq, NotHandled($"The consumer of '{Request.Address}' on node {_transport.NodeId} has stopped."));
            }
        }
    }

    public override Task StopAsync(CancellationToken drainDeadline)
    {
        lock (_intake)
        {
            return _stopping ??= StopCoreAsync(drainDeadline);
        }
    }

    private async Task StopCoreAsync(CancellationToken drainDeadline)
    {
        // Peers stop routing here and drain what they already routed, while the intake still handles it.
        Announced = false;
        await _transport.AnnounceAsync(drainDeadline).ConfigureAwait(false);
        _transport.Unregister(this);
        _intake.Writer.TryComplete();
        var local = Local?.StopAsync(drainDeadline) ?? Task.CompletedTask;
        var workers = Task.WhenAll(_workers);
        try
        {
            await workers.WaitAsync(drainDeadline).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (drainDeadline.IsCancellationRequested)
        {
            // Past the deadline: cancel the handlers; those that ignore their token are abandoned after a grace, their
            // messages settled as retries so the sender delivers them again (as the in-memory transport abandons them).
            await _hardStop.CancelAsync().ConfigureAwait(false);
            _abandon.CancelAfter(AbandonGrace);
            await workers.ConfigureAwait(false);
        }

        await local.ConfigureAwait(false);
    }

    /// <summary>
    /// A worker: takes a batch of deliveries (what one gRPC message brought for this subscription) and runs the handler
    /// on each message it claims from it. With a concurrency of one, the only worker runs the batch in order, waiting for
    /// each handler, so send order holds. Otherwise every worker that takes the batch claims its messages one at a time,
    /// and before running a handler asks one more worker to take the batch too (see <see cref="DeliveryBatch.TryRecruit"/>):
    /// always for the batch's first message, afterwards only while the batch hardly moves. A handler that blocks or runs
    /// long then holds up only its own message while other workers run the rest, and quick handlers cost one hand-off
    /// per batch, not one per message.
    /// </summary>
    private async Task RunAsync()
    {
        var stop = _hardStop.Token;
        var reader = _intake.Reader;
        var settled = new List<SettledItem>();
        var shared = Request.Concurrency > 1;
        while (true)
        {
            // ReadAsync, not WaitToReadAsync (ReadAllAsync): a write hands its batch to one parked worker, where a
            // waiting-to-read wake-up would rouse every idle worker of the subscription.
            if (!reader.TryRead(out var batch))
            {
                try
                {
                    batch = await reader.ReadAsync(CancellationToken.None).ConfigureAwait(false);
                }
                catch (ChannelClosedException)
                {
                    return;
                }
            }

            batch.Arrived();
            while (batch.TryClaim(out var delivery, out var index))
            {
                // Before the handler runs (it may block): another worker is asked to take on the rest of the batch.
                // A failed write (the subscription is stopping) leaves the rest to the workers that have the batch.
                if (shared && batch.TryRecruit(index, Request.Concurrency - 1) && !_intake.Writer.TryWrite(batch))
                {
                    batch.Unrecruit();
                }

                Settlement settlement;
                if (stop.IsCancellationRequested)
                {
                    settlement = NotHandled($"The consumer of '{Request.Address}' on node {_transport.NodeId} stopped before handling the message.");
                }
                else
                {
                    ValueTask<Settlement> pending;
                    try
                    {
                        pending = _handler(delivery.Envelope, stop);
                    }
                    catch (Exception ex)
                    {
                        pending = ValueTask.FromException<Settlement>(ex);
                    }

                    if (pending.IsCompletedSuccessfully)
                    {
                        settlement = pending.Result;
                    }
                    else
                    {
                        // What was settled so far goes out before this handler is waited for.
                        Flush(delivery.Session, settled);
                        settlement = await WaitHandledAsync(pending, stop).ConfigureAwait(false);
                    }
                }

                // A batch comes from one link: its settlements are queued on that link together, at the latest every
                // FlushEvery messages so a long run does not hold the sender's credit back.
                settled.Add(PeerSession.Settled(delivery.Seq, settlement));
                if (settled.Count >= FlushEvery)
                {
                    Flush(delivery.Session, settled);
                }
            }

            Flush(batch.Session, settled);
        }
    }

    private static void Flush(PeerSession session, List<SettledItem> settled)
    {
        if (settled.Count > 0)
        {
            session.Settle(settled);
            settled.Clear();
        }
    }

    private async ValueTask<Settlement> WaitHandledAsync(ValueTask<Settlement> pending, CancellationToken stop)
    {
        try
        {
            return pending.IsCompleted ? await pending.ConfigureAwait(false) : await pending.AsTask().WaitAsync(_abandon.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            // Stopped past its deadline (or abandoned after the grace): the sender keeps the message and delivers it again elsewhere.
            return Settlement.Retry(TimeSpan.Zero, new TransportUnavailableException($"The consumer of '{Request.Address}' on node {_transport.NodeId} was stopped while handling the message."));
        }
        catch (Exception ex)
        {
            return Settlement.HandlerThrew(ex);
        }
    }
}
