using System.Runtime.CompilerServices;
using System.Threading.Tasks.Sources;
using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.InMemory;

internal sealed class InMemorySubscription : TransportSubscription
{
    /// <summary>How long, after the drain deadline cancelled them, handlers have to return before they are abandoned.</summary>
    internal static readonly TimeSpan AbandonGrace = TimeSpan.FromSeconds(1);

    private readonly InMemoryQueue _queue;
    private readonly DeliveryHandler _handler;
    private readonly CancellationTokenSource _hardStop = new();
    private Task[] _workers = [];
    private readonly Lock _heldGate = new();
    private List<(Envelope Envelope, Settlement Settlement)>? _held;
    private bool _heldReturned;
    private int _draining;
    private int _dropped;
    private int _stopped;

    // For a handler that settles later (SubscriptionRequest.SettlesLater): deliveries handed out and not settled yet,
    // the signal a worker waits on when it has handed out as many as Concurrency, and a settlement's failure for the
    // worker to report.
    private readonly bool _settlesLater;
    private int _unsettled;
    private TaskCompletionSource? _settled;
    private Exception? _settleFailure;

    // The deliveries whose settlement is still awaited (a drain that gives up reports each of them as abandoned).
    private readonly HashSet<LaterSettlement> _later = [];

    public InMemorySubscription(InMemoryQueue queue, SubscriptionRequest request, DeliveryHandler handler)
    {
        _queue = queue;
        Request = request;
        _handler = handler;
        _settlesLater = request.SettlesLater;
    }

    public override SubscriptionRequest Request { get; }

    internal Lane[] Lanes { get; set; } = [];

    /// <summary>
    /// Gets how many workers (each with its own lane) the subscription runs: <see cref="SubscriptionRequest.Concurrency"/>,
    /// or one for a handler that settles later. Such a worker does not wait for a settlement before it hands out the next
    /// message (it holds up to Concurrency unsettled instead), so one worker is enough, and it hands the messages out in
    /// the order they were sent: with a worker per lane, a worker that started late handed out its lane's first message
    /// after the others had handed out many more, and a batch consumer's batches no longer followed the queue's order.
    /// </summary>
    internal int Workers => _settlesLater ? 1 : Request.Concurrency;

    public override ComponentHealth GetHealth()
    {
        if (Volatile.Read(ref _stopped) != 0)
        {
            return ComponentHealth.Degraded(Request.ConsumerGroup, "stopped: it takes no more messages");
        }

        foreach (var worker in _workers)
        {
            if (worker.IsCompleted)
            {
                return ComponentHealth.Degraded(Request.ConsumerGroup, $"a worker ended ({worker.Status}): its lane is no longer drained");
            }
        }

        return ComponentHealth.Healthy(Request.ConsumerGroup, $"consuming with {_workers.Length} worker(s)");
    }

    /// <summary>Gets a value indicating whether every worker of this subscription has finished what it took and its lanes are empty.</summary>
    internal bool IsIdle
    {
        get
        {
            foreach (var lane in Lanes)
            {
                if (!lane.IsIdle)
                {
                    return false;
                }
            }

            return true;
        }
    }

    /// <summary>
    /// Waits until every in-memory subscription among <paramref name="subscriptions"/> is idle at the same moment (or the
    /// deadline passes), so that stopping them afterwards unbinds no group that a still-running handler publishes to.
    /// </summary>
    /// <param name="subscriptions">The subscriptions about to be stopped together; others are ignored.</param>
    /// <param name="deadline">Ends the wait.</param>
    /// <returns>A task that completes when they are idle or the deadline passed.</returns>
    internal static Task WaitUntilIdleAsync(IEnumerable<TransportSubscription> subscriptions, CancellationToken deadline)
    {
        var inMemory = subscriptions.OfType<InMemorySubscription>().ToArray();
        if (inMemory.Length == 0 || deadline.IsCancellationRequested)
        {
            return Task.CompletedTask;
        }

        return Task.WhenAll(inMemory
            .GroupBy(s => s._queue.Transport)
            .Select(g => g.Key.WaitUntilIdleAsync(g.ToArray(), deadline)));
    }

    public void Start()
    {
        var lanes = Lanes;
        var workers = new Task[lanes.Length];
        for (var i = 0; i < lanes.Length; i++)
        {
            var lane = lanes[i];
            workers[i] = Task.Run(() => RunAsync(lane));
        }

        _workers = workers;
    }

    public override async Task StopAsync(CancellationToken drainDeadline)
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            _queue.Detach(this);
        }

        ReturnHeld();

        var workers = Task.WhenAll(_workers);
        if (!workers.IsCompleted)
        {
            try
            {
                await workers.WaitAsync(drainDeadline).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (drainDeadline.IsCancellationRequested)
            {
                // The deadline passed: cancel the handlers. Those that honour their token finish within the grace (their
                // workers drop what is left, counted below); the drain waits no longer for those that do not.
                await _hardStop.CancelAsync().ConfigureAwait(false);
                try
                {
                    await workers.WaitAsync(AbandonGrace, _queue.Transport.TimeProvider, CancellationToken.None).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    Abandon();
                }
            }
        }

        var dropped = Volatile.Read(ref _dropped);
        if (dropped > 0 && Interlocked.Exchange(ref _dropped, 0) > 0)
        {
            _queue.RecordDropped(dropped);
        }
    }

    /// <summary>Reports, per worker still stuck in a handler after the deadline, the message it holds and those waiting behind it.</summary>
    private void Abandon()
    {
        var workers = _workers;
        var lanes = Lanes;
        var waiting = 0;
        for (var i = 0; i < workers.Length && i < lanes.Length; i++)
        {
            if (workers[i].IsCompleted)
            {
                continue;
            }

            var (inFlight, behind) = lanes[i].Abandon();
            waiting += behind;

            // A worker whose handler settles later has moved on from the envelope it handed out last: what its handler
            // still holds is reported below, every delivery once.
            if (inFlight is { } id && !_settlesLater)
            {
                InMemoryLog.HandlerAbandoned(_queue.Transport.Logger, id, _queue.Name);
                _queue.RecordDroppedQuietly(1);
            }
        }

        if (_settlesLater)
        {
            Guid[] held;
            lock (_later)
            {
                held = [.. _later.Select(l => l.MessageId)];
            }

            foreach (var id in held)
            {
                InMemoryLog.HandlerAbandoned(_queue.Transport.Logger, id, _queue.Name);
            }

            if (held.Length > 0)
            {
                _queue.RecordDroppedQuietly(held.Length);
            }
        }

        if (waiting > 0)
        {
            _queue.RecordDropped(waiting);
        }
    }

    private async Task RunAsync(Lane lane)
    {
        var cursor = new BatchCursor();
        while (true)
        {
            if (!lane.TryTake(out cursor.Batch, out cursor.Count))
            {
                // While a drain waits for its subscriptions to go idle, every worker that runs dry tells it so. It counts
                // the transition before parking and checks after, so the drain's scan can never miss a busy moment.
                var drains = _queue.Transport.Drains;
                foreach (var drain in drains)
                {
                    drain.CountTransition();
                }

                var waiting = lane.WaitToReadAsync();
                foreach (var drain in drains)
                {
                    drain.Check();
                }

                if (!await waiting.ConfigureAwait(false))
                {
                    if (_settlesLater)
                    {
                        // The worker ends once what it handed out is settled, so a stop still waits for those handlers.
                        await WaitForSettlementsAsync(0).ConfigureAwait(false);
                    }

                    return;
                }

                continue;
            }

            // Handlers that finish synchronously run from a plain method, so an envelope stays in the batch array and on
            // the stack instead of being copied into this state machine (through GC write barriers) per message.
            // Drain stops early only when a handler goes asynchronous; the batch is done when the cursor reaches its end.
            cursor.Next = 0;
            do
            {
                await Drain(lane, cursor).ConfigureAwait(false);
            }
            while (cursor.Next < cursor.Count);
        }
    }

    /// <summary>
    /// Hands the rest of the batch to the handler, in order, until it is done (returns a completed task) or a handler
    /// goes asynchronous (returns the task that finishes handling and settling that message).
    /// </summary>
    private ValueTask Drain(Lane lane, BatchCursor cursor)
    {
        var batch = cursor.Batch;
        var count = cursor.Count;
        var stop = _hardStop.Token;
        for (var i = cursor.Next; i < count; i++)
        {
            // A handler that settles later holds at most Concurrency deliveries unsettled: a worker reserves its place before
            // it hands one out, so workers that reach the limit together cannot each hand out one more.
            var reserved = false;
            if (_settlesLater && !stop.IsCancellationRequested)
            {
                if (!TryReserve())
                {
                    cursor.Next = i;
                    return new ValueTask(WaitForSettlementsAsync(Request.Concurrency - 1));
                }

                reserved = true;
            }

            ref readonly var envelope = ref batch[i];
            lane.MarkHandedOut(i + 1);
            if (stop.IsCancellationRequested)
            {
                if (reserved)
                {
                    Unreserve();
                }

                Interlocked.Increment(ref _dropped);
                continue;
            }

            ValueTask<Settlement> pending;
            try
            {
                pending = _handler(envelope, stop);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                if (reserved)
                {
                    Unreserve();
                }

                Interlocked.Increment(ref _dropped);
                continue;
            }
            catch (Exception ex)
            {
                if (reserved)
                {
                    Unreserve();
                }

                Settle(envelope, Settlement.HandlerThrew(ex));
                continue;
            }

            if (!pending.IsCompletedSuccessfully)
            {
                cursor.Next = i + 1;
                if (!_settlesLater)
                {
                    return cursor.SettleWhenHandled(this, envelope, pending, stop);
                }

                // A handler that settles later (a batch consumer) took the message: hand out the next one meanwhile,
                // up to Concurrency unsettled (reserved above; its settlement gives the place back). Waiting here would
                // hold the messages behind it back from the batch this one waits for, which with no MaxAge might never fill.
                SettleLater(envelope, pending, stop);
            }
            else
            {
                if (reserved)
                {
                    Unreserve();
                }

                Settle(envelope, pending.Result);
            }
        }

        cursor.Next = count;
        return default;
    }

    /// <summary>Settles a message whose handler settles later once its settlement is there, without the worker waiting for it.</summary>
    private void SettleLater(in Envelope envelope, ValueTask<Settlement> pending, CancellationToken stop)
    {
        var handled = pending.ConfigureAwait(false).GetAwaiter();
        if (handled.IsCompleted)
        {
            SettledLater(envelope, handled, stop);
            return;
        }

        var later = new LaterSettlement(this, envelope, handled, stop);
        lock (_later)
        {
            _later.Add(later);
        }

        // OnCompleted, not UnsafeOnCompleted: the settlement runs in the worker's execution context, as it does when the
        // worker waits for it.
        handled.OnCompleted(later.OnHandled);
    }

    private void SettledLater(in Envelope envelope, in ConfiguredValueTaskAwaitable<Settlement>.ConfiguredValueTaskAwaiter handled, CancellationToken stop)
    {
        try
        {
            SettleHandled(envelope, handled, stop);
        }
        catch (Exception ex)
        {
            // As when the worker waits for it: the worker fails with it (it reports it when it next waits, or ends).
            Interlocked.CompareExchange(ref _settleFailure, ex, null);
        }
        finally
        {
            Unreserve();
        }
    }

    /// <summary>Takes a place among the Concurrency deliveries a handler that settles later may hold unsettled, if one is free.</summary>
    private bool TryReserve()
    {
        var limit = Request.Concurrency;
        var current = Volatile.Read(ref _unsettled);
        while (current < limit)
        {
            var seen = Interlocked.CompareExchange(ref _unsettled, current + 1, current);
            if (seen == current)
            {
                return true;
            }

            current = seen;
        }

        return false;
    }

    /// <summary>Gives a place back (the delivery was settled, or never reached the handler) and wakes the workers waiting for one.</summary>
    private void Unreserve()
    {
        // Both are full fences (see WaitForSettlementsAsync): a worker that published its signal before this count is seen
        // here; one that publishes after sees the count.
        Interlocked.Decrement(ref _unsettled);
        if (Volatile.Read(ref _settled) is not null)
        {
            Interlocked.Exchange(ref _settled, null)?.TrySetResult();
        }
    }

    /// <summary>Waits until at most <paramref name="atMost"/> deliveries handed out to a handler that settles later are unsettled.</summary>
    private async Task WaitForSettlementsAsync(int atMost)
    {
        while (true)
        {
            var signal = Volatile.Read(ref _settled);
            if (signal is null)
            {
                var created = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                signal = Interlocked.CompareExchange(ref _settled, created, null) ?? created;
            }
            else
            {
                Interlocked.MemoryBarrier();
            }

            if (Volatile.Read(ref _settleFailure) is { } failure)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
            }

            if (Volatile.Read(ref _unsettled) <= atMost)
            {
                return;
            }

            await signal.Task.ConfigureAwait(false);
        }
    }

    /// <summary>Settles a message whose handler went asynchronous, once its settlement is there.</summary>
    private void SettleHandled(in Envelope envelope, in ConfiguredValueTaskAwaitable<Settlement>.ConfiguredValueTaskAwaiter handled, CancellationToken stop)
    {
        Settlement settlement;
        try
        {
            settlement = handled.GetResult();
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            Interlocked.Increment(ref _dropped);
            return;
        }
        catch (Exception ex)
        {
            settlement = Settlement.HandlerThrew(ex);
        }

        Settle(envelope, settlement);
    }

    private void Settle(in Envelope envelope, in Settlement settlement)
    {
        switch (settlement.Kind)
        {
            case SettlementKind.Ack:
                break;
            case SettlementKind.Retry when settlement.IsDeferral && settlement.Delay == TimeSpan.Zero && IsDraining():
                Hold(envelope, settlement);
                break;
            case SettlementKind.Retry:
                _queue.Retry(envelope, settlement);
                break;
            default:
                _queue.DeadLetter(envelope, settlement);
                break;
        }
    }

    /// <summary>
    /// Marks this subscription as draining: its host is stopping, so a message a handler releases now is kept until the
    /// subscription is unbound (<see cref="Hold"/>).
    /// </summary>
    internal override void BeginDrain() => Volatile.Write(ref _draining, 1);

    /// <summary>Gets whether the host that runs this subscription is stopping while it is still bound.</summary>
    private bool IsDraining() =>
        Volatile.Read(ref _draining) != 0 && Volatile.Read(ref _stopped) == 0; // unbound: a release goes straight to the group's other consumers, or waits for the next one

    /// <summary>
    /// Keeps a message released (<see cref="Settlement.Release"/>) while its host drains this subscription until the
    /// subscription stops: handed back at once, it would come straight back to this subscription, whose handler is stopping
    /// and would release it again, in a loop that keeps the drain from ever seeing it idle. Once the subscription is unbound
    /// (<see cref="ReturnHeld"/>), it goes to the group's other consumers, or waits in the queue for the next one.
    /// </summary>
    private void Hold(in Envelope envelope, in Settlement settlement)
    {
        lock (_heldGate)
        {
            if (!_heldReturned)
            {
                (_held ??= []).Add((envelope, settlement));
                return;
            }
        }

        _queue.Retry(envelope, settlement);
    }

    /// <summary>Hands back the messages released during the drain, once this subscription is unbound.</summary>
    private void ReturnHeld()
    {
        List<(Envelope Envelope, Settlement Settlement)>? held;
        lock (_heldGate)
        {
            _heldReturned = true;
            held = _held;
            _held = null;
        }

        if (held is not null)
        {
            foreach (var (envelope, settlement) in held)
            {
                _queue.Retry(envelope, settlement);
            }
        }
    }

    /// <summary>One delivery handed to a handler that settles later, waiting for its settlement.</summary>
    private sealed class LaterSettlement(InMemorySubscription owner, Envelope envelope, ConfiguredValueTaskAwaitable<Settlement>.ConfiguredValueTaskAwaiter handled, CancellationToken stop)
    {
        public Guid MessageId => envelope.MessageId;

        public void OnHandled()
        {
            lock (owner._later)
            {
                owner._later.Remove(this);
            }

            owner.SettledLater(envelope, handled, stop);
        }
    }

    /// <summary>
    /// A worker's place in the batch it took from its lane, and its wait for a handler that went asynchronous: a worker
    /// waits for one handler at a time, so the wait reuses this object (no async state machine per such message, which
    /// was one allocation of about 280 bytes per message for a handler that always completes later, as a peer link's
    /// forwarding does).
    /// </summary>
    private sealed class BatchCursor : IValueTaskSource
    {
        public Envelope[] Batch = [];
        public int Count;
        public int Next;

        private readonly Action _onHandled;
        private ManualResetValueTaskSourceCore<bool> _core;
        private ConfiguredValueTaskAwaitable<Settlement>.ConfiguredValueTaskAwaiter _handled;
        private InMemorySubscription? _owner;
        private Envelope _envelope;
        private CancellationToken _stop;

        public BatchCursor() => _onHandled = OnHandled;

        /// <summary>Settles <paramref name="envelope"/> when <paramref name="pending"/> completes; the returned task completes after that.</summary>
        public ValueTask SettleWhenHandled(InMemorySubscription owner, in Envelope envelope, ValueTask<Settlement> pending, CancellationToken stop)
        {
            var handled = pending.ConfigureAwait(false).GetAwaiter();
            if (handled.IsCompleted)
            {
                owner.SettleHandled(envelope, handled, stop);
                return default;
            }

            _core.Reset();
            _owner = owner;
            _envelope = envelope;
            _stop = stop;
            _handled = handled;

            // OnCompleted, not UnsafeOnCompleted: the settlement runs in the worker's execution context, as it did when
            // this wait was an async method.
            handled.OnCompleted(_onHandled);
            return new ValueTask(this, _core.Version);
        }

        public void GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);

        private void OnHandled()
        {
            var owner = _owner!;
            var envelope = _envelope;
            var handled = _handled;
            var stop = _stop;
            _owner = null;
            _envelope = default;
            _handled = default;
            _stop = default;
            try
            {
                owner.SettleHandled(envelope, handled, stop);
            }
            catch (Exception ex)
            {
                // As the async method's task faulted: the worker's await throws it.
                _core.SetException(ex);
                return;
            }

            _core.SetResult(true);
        }
    }
}
