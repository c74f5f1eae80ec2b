using System.Threading.Channels;
using Patterns.Messaging;
using Patterns.Telemetry;
using Patterns.Transport;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace Patterns.RabbitMq;

/// <summary>
/// One consumer group's consumer on its own channel, consuming the group's queue and, beside it, the queue's retry
/// queue (retries that are due). The client library hands deliveries over one at a time.
/// With a concurrency of one they are handled right there, in order; otherwise they are routed to one lane per
/// worker (by partition key, so a key's messages are handled in order, otherwise to the least busy lane). A
/// message is acknowledged only after its handler has settled it. When something inside the transport fails while
/// a message is handled or settled, the channel is closed and opened again, so the broker delivers every message it
/// held unacknowledged again, rather than leaving one held for good.
/// </summary>
internal sealed class RabbitMqSubscription : TransportSubscription
{
    private readonly RabbitMqMessageTransport _transport;
    private readonly DeliveryHandler _handler;
    private readonly string _logical;
    private readonly string _queue;
    private readonly string? _retryQueue;
    private readonly ushort _prefetch;
    private readonly bool _inline;
    private readonly Channel<Delivery>[] _lanes;
    private readonly Task[] _workers;
    private readonly CancellationTokenSource _hardStop = new();

    /// <summary>Adds the release mark to a message that comes again after a release that fell back to a requeue.</summary>
    private static readonly Settlement HandedBack = Settlement.Release("handed back by a requeue");

    /// <summary>Cancelled when stopping begins: ends a wait before subscribing again at once.</summary>
    private readonly CancellationTokenSource _stopRequested = new();
    private readonly Lock _gate = new();
    private IChannel? _channel;
    private Consumer? _consumer;
    private int _generation;
    private int _roundRobin;
    private Task _inlineCurrent = Task.CompletedTask;
    private volatile bool _stopping;
    private Task? _resubscribing;
    private Task? _stopped;
    private Task<(Consumer? Consumer, string[] Tags)>? _cancelling;

    public RabbitMqSubscription(RabbitMqMessageTransport transport, SubscriptionRequest request, DeliveryHandler handler)
    {
        _transport = transport;
        Request = request;
        _handler = handler;
        _logical = request.QueueName;
        _queue = transport.Topology.Queue(_logical);
        _retryQueue = request.Temporary ? null : transport.Topology.RetryQueue(_logical);
        var prefetch = Math.Max(request.Concurrency, Math.Min(transport.Options.PrefetchCount, request.Capacity));
        _prefetch = (ushort)Math.Min(prefetch, ushort.MaxValue);
        _inline = request.Concurrency == 1;
        _lanes = new Channel<Delivery>[_inline ? 0 : request.Concurrency];
        for (var i = 0; i < _lanes.Length; i++)
        {
            // The prefetch bounds what the broker hands over, so the lanes need no bound of their own. (A single-reader
            // unbounded channel cannot count its items, which picking the least busy lane needs.)
            _lanes[i] = Channel.CreateUnbounded<Delivery>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = true });
        }

        _workers = new Task[_lanes.Length];
    }

    public override SubscriptionRequest Request { get; }

    /// <summary>Gets the channel the subscription consumes on (for tests).</summary>
    internal IChannel? CurrentChannel => Volatile.Read(ref _channel);

    public override ComponentHealth GetHealth()
    {
        var name = Request.ConsumerGroup;
        if (_stopping)
        {
            return ComponentHealth.Degraded(name, $"stopped: it takes no more messages from '{_queue}'");
        }

        if (_resubscribing is { IsCompleted: false })
        {
            return ComponentHealth.Degraded(name, $"lost its channel and is consuming from '{_queue}' again as soon as RabbitMQ at {_transport.ConsumeConnection.Endpoint} allows");
        }

        if (Volatile.Read(ref _channel) is not { IsOpen: true })
        {
            return ComponentHealth.Degraded(name, $"has no open channel to '{_queue}' on RabbitMQ at {_transport.ConsumeConnection.Endpoint}");
        }

        foreach (var worker in _workers)
        {
            if (worker is { IsCompleted: true })
            {
                return ComponentHealth.Degraded(name, $"a worker ended ({worker.Status}): its lane is no longer drained");
            }
        }

        return ComponentHealth.Healthy(name, $"consuming from '{_queue}'");
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (!Request.Temporary)
        {
            var connection = await _transport.ConsumeConnection.GetAsync(cancellationToken).ConfigureAwait(false);
            await _transport.Topology.DeclareSubscriptionAsync(connection, Request, cancellationToken).ConfigureAwait(false);
        }

        for (var i = 0; i < _lanes.Length; i++)
        {
            var reader = _lanes[i].Reader;
            _workers[i] = Task.Run(() => RunAsync(reader), CancellationToken.None);
        }

        try
        {
            await OpenAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await StopAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);
            throw;
        }
    }

    public override Task StopAsync(CancellationToken drainDeadline)
    {
        Task stopped;
        lock (_gate)
        {
            _stopped ??= StopCoreAsync();
            stopped = _stopped;
        }

        return WaitAsync(stopped, drainDeadline);
    }

    /// <summary>
    /// Cancels the broker consumer now, so that a message a handler released for its host's stop stays on the broker for
    /// another process instead of coming straight back here. The stop begins without a deadline; the host's own
    /// <see cref="StopAsync"/> waits for the same stop and brings its drain deadline.
    /// </summary>
    internal override void StopTakingDeliveries()
    {
        Task stopped;
        lock (_gate)
        {
            _stopped ??= StopCoreAsync();
            stopped = _stopped;
        }

        // Not awaited (a handler of this subscription calls it, and the stop waits for the handlers); a failure is observed
        // by the host's StopAsync, which awaits the same task.
        _ = stopped.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private async Task WaitAsync(Task stopped, CancellationToken drainDeadline)
    {
        using (drainDeadline.UnsafeRegister(static s => ((CancellationTokenSource)s!).Cancel(), _hardStop))
        {
            await stopped.ConfigureAwait(false);
        }
    }

    private async Task StopCoreAsync()
    {
        // Let StopAsync register the drain deadline before anything waits.
        await Task.Yield();
        _stopping = true;
        await _stopRequested.CancelAsync().ConfigureAwait(false);
        try
        {
            // No new deliveries; every delivery the broker sent before the cancel-ok has reached a lane
            // once the consumer sees the cancel-ok (the client dispatches them in order).
            var (consumer, tags) = await CancelConsumersAsync().WaitAsync(_hardStop.Token).ConfigureAwait(false);
            foreach (var tag in tags)
            {
                await consumer!.CancelledAsync(tag).WaitAsync(_hardStop.Token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            // The deadline passed: whatever is not settled goes back to the broker.
        }

        IChannel? channel;

        foreach (var lane in _lanes)
        {
            lane.Writer.TryComplete();
        }

        await Task.WhenAll(_workers.Where(w => w is not null)).ConfigureAwait(false);
        await Volatile.Read(ref _inlineCurrent).ConfigureAwait(false);
        if (_resubscribing is { } resubscribing)
        {
            await resubscribing.ConfigureAwait(false);
        }

        lock (_gate)
        {
            channel = _channel;
            _channel = null;
        }

        if (channel is not null)
        {
            // Closing the channel hands every unacknowledged message back to the broker.
            channel.ChannelShutdownAsync -= OnChannelShutdownAsync;
            await RabbitMqPublisher.CloseQuietlyAsync(channel).ConfigureAwait(false);
        }

        _transport.Remove(this);
    }

    /// <summary>
    /// Cancels the broker consumers of the current channel, once, for a stop: completes when the broker confirmed every
    /// basic.cancel (its cancel-ok, which the client's reader completes without the consumer's dispatcher, so a delivery
    /// handled inline may wait for it), after which the broker hands this consumer nothing more.
    /// </summary>
    /// <returns>The consumer and the tags that were cancelled (none when the channel was closed or the connection gone).</returns>
    private Task<(Consumer? Consumer, string[] Tags)> CancelConsumersAsync()
    {
        IChannel? channel;
        Consumer? consumer;
        lock (_gate)
        {
            if (_cancelling is { } cancelling)
            {
                return cancelling;
            }

            channel = _channel;
            consumer = _consumer;
            _cancelling = channel is { IsOpen: true } && consumer?.StartedTags is { Length: > 0 } tags
                ? CancelAsync(channel, consumer, tags)
                : Task.FromResult<(Consumer?, string[])>((null, []));
            return _cancelling;
        }

        async Task<(Consumer?, string[])> CancelAsync(IChannel channel, Consumer consumer, string[] tags)
        {
            await Task.Yield(); // not under the lock
            try
            {
                foreach (var tag in tags)
                {
                    await channel.BasicCancelAsync(tag, noWait: false, _hardStop.Token).ConfigureAwait(false);
                }

                return (consumer, tags);
            }
            catch (Exception ex) when (ex is OperationCanceledException || RabbitMqConnection.IsConnectivity(ex) || ex is RabbitMQ.Client.Exceptions.OperationInterruptedException)
            {
                // The deadline passed or the connection is gone: the channel closes with the subscription, and the broker
                // takes back whatever is not settled.
                return (null, []);
            }
        }
    }

    private async Task OpenAsync(CancellationToken cancellationToken)
    {
        var connection = await _transport.ConsumeConnection.GetAsync(cancellationToken).ConfigureAwait(false);
        var channel = await connection.CreateChannelAsync(
            new CreateChannelOptions(publisherConfirmationsEnabled: false, publisherConfirmationTrackingEnabled: false, outstandingPublisherConfirmationsRateLimiter: null, consumerDispatchConcurrency: 1),
            cancellationToken).ConfigureAwait(false);
        try
        {
            channel.ChannelShutdownAsync += OnChannelShutdownAsync;
            if (Request.Temporary)
            {
                // Exclusive to this connection and deleted with it; the client declares it again after a reconnect.
                await channel.QueueDeclareAsync(_queue, durable: false, exclusive: true, autoDelete: true, arguments: null, cancellationToken: cancellationToken).ConfigureAwait(false);
            }

            await channel.BasicQosAsync(0, _prefetch, global: false, cancellationToken).ConfigureAwait(false);
            var consumer = new Consumer(this, channel);
            lock (_gate)
            {
                _channel = channel;
                _consumer = consumer;
            }

            consumer.Started(await channel.BasicConsumeAsync(_queue, autoAck: false, consumerTag: string.Empty, noLocal: false, exclusive: false, arguments: null, consumer, cancellationToken).ConfigureAwait(false));
            if (_retryQueue is not null)
            {
                // Retries that are due arrive here; handled like any other delivery, on the same channel and lanes.
                consumer.Started(await channel.BasicConsumeAsync(_retryQueue, autoAck: false, consumerTag: string.Empty, noLocal: false, exclusive: false, arguments: null, consumer, cancellationToken).ConfigureAwait(false));
            }
        }
        catch (RabbitMQ.Client.Exceptions.OperationInterruptedException ex) when (RabbitMqConnection.IsChannelError(ex.ShutdownReason))
        {
            await AbandonAsync(channel).ConfigureAwait(false);
            throw new InvalidOperationException($"RabbitMQ refused to consume from '{_queue}': {ex.ShutdownReason?.ReplyText}", ex);
        }
        catch
        {
            await AbandonAsync(channel).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Closes a channel whose consume failed, and stops calling it the subscription's channel.</summary>
    private async Task AbandonAsync(IChannel channel)
    {
        lock (_gate)
        {
            if (ReferenceEquals(_channel, channel))
            {
                // Left in place, stopping (or the next restart) would use a channel that is already disposed.
                _channel = null;
                _consumer = null;
            }
        }

        channel.ChannelShutdownAsync -= OnChannelShutdownAsync;
        await RabbitMqPublisher.CloseQuietlyAsync(channel).ConfigureAwait(false);
    }

    private Task OnDelivery(Consumer consumer, ulong deliveryTag, bool redelivered, IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> body)
    {
        // The body's memory belongs to the client library and is reused after this call returns.
        var copy = body.ToArray();
        Delivery delivery;
        try
        {
            delivery = AmqpEnvelope.TryRead(properties, copy, redelivered, out var envelope, out var problem)
                ? new Delivery(consumer, deliveryTag, Volatile.Read(ref _generation), redelivered ? Uncounted(envelope) : envelope, null, null)
                : new Delivery(consumer, deliveryTag, Volatile.Read(ref _generation), default, problem, new BasicProperties(properties)) { RawBody = copy };
        }
        catch (Exception ex)
        {
            delivery = new Delivery(consumer, deliveryTag, Volatile.Read(ref _generation), default, $"its properties could not be read: {ex.Message}", null) { RawBody = copy };
        }

        if (_inline)
        {
            // One at a time, in the order the broker sent them: the client waits for this task before the next delivery.
            var processing = RunOneSafelyAsync(delivery);
            Volatile.Write(ref _inlineCurrent, processing);
            return processing;
        }

        // When the lanes are closed (stopping) the delivery stays unacknowledged and the broker takes it back.
        if (!PickLane(delivery.Envelope.PartitionKey).Writer.TryWrite(delivery))
        {
            RememberNeverHandled(delivery);
        }

        return Task.CompletedTask;
    }

    private Task OnDeliveryAsync(Consumer consumer, ulong deliveryTag, bool redelivered, IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> body)
    {
        try
        {
            return OnDelivery(consumer, deliveryTag, redelivered, properties, body);
        }
        catch (Exception ex)
        {
            // Never let an exception into the client's dispatcher: it would leave the message unacknowledged for good.
            RabbitMqLog.Malformed(_transport.Logger, _logical, $"the delivery could not be queued for a worker ({ex.Message}); it is returned to the broker");
            return NackAsync(new Delivery(consumer, deliveryTag, Volatile.Read(ref _generation), default, null, null));
        }
    }

    /// <summary>
    /// A redelivered message this transport handed back uncounted by a plain requeue (its copy could not be published)
    /// shows the count it was handed back with, and a release its mark, as the copy would have.
    /// </summary>
    private Envelope Uncounted(Envelope envelope) =>
        !_transport.UncountedReturns.TryTake(_queue, envelope.MessageId, out var count, out var released) ? envelope
        : released ? HandedBack.NextDelivery(envelope with { DeliveryCount = count })
        : envelope with { DeliveryCount = count };

    /// <summary>
    /// Returns a message that was to be handed back uncounted (a release or a deferral) to the broker by a plain requeue
    /// (now, or when its channel closes), remembering it so that the redelivered flag it comes back with is not counted.
    /// </summary>
    private void RememberUncounted(in Delivery delivery, Settlement settlement)
    {
        var next = settlement.NextDelivery(delivery.Envelope);
        _transport.UncountedReturns.Add(_queue, next.MessageId, next.DeliveryCount, next.Headers?.ContainsKey(EnvelopeHeaders.Released) == true);
    }

    private Channel<Delivery> PickLane(string? partitionKey)
    {
        var lanes = _lanes;
        if (lanes.Length == 1)
        {
            return lanes[0];
        }

        if (partitionKey is not null)
        {
            return lanes[PartitionHash.Partition(partitionKey, lanes.Length)];
        }

        var start = (int)((uint)Interlocked.Increment(ref _roundRobin) % (uint)lanes.Length);
        var best = lanes[start];
        var bestCount = best.Reader.Count;
        for (var i = 1; i < lanes.Length && bestCount > 0; i++)
        {
            var candidate = lanes[(start + i) % lanes.Length];
            var count = candidate.Reader.Count;
            if (count < bestCount)
            {
                best = candidate;
                bestCount = count;
            }
        }

        return best;
    }

    private async Task RunAsync(ChannelReader<Delivery> reader)
    {
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            while (reader.TryRead(out var delivery))
            {
                await RunOneSafelyAsync(delivery).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Runs one delivery; whatever goes wrong, the worker lives on and the message is not left held.</summary>
    private async Task RunOneSafelyAsync(Delivery delivery)
    {
        try
        {
            await RunOneAsync(delivery).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            RabbitMqLog.ProcessingFailed(_transport.Logger, ex, _logical);
            RecycleChannel(delivery, "handling a delivery failed inside the transport");
        }
    }

    private Task RunOneAsync(Delivery delivery)
    {
        if (_hardStop.IsCancellationRequested || delivery.Generation != Volatile.Read(ref _generation))
        {
            // After the deadline, or when the delivery came on a channel that has since closed, the message is left
            // alone: the broker delivers it again.
            RememberNeverHandled(delivery);
            return Task.CompletedTask;
        }

        return ProcessAsync(delivery);
    }

    /// <summary>
    /// A delivery left unsettled without reaching a handler goes back to the broker as it came: remembered, so that it is
    /// not counted again when it comes back (it may be a hand-back that came straight back to this stopping consumer).
    /// </summary>
    private void RememberNeverHandled(in Delivery delivery)
    {
        if (delivery.Problem is null && delivery.Envelope.MessageId != Guid.Empty)
        {
            var envelope = delivery.Envelope;
            _transport.UncountedReturns.Add(_queue, envelope.MessageId, envelope.DeliveryCount, envelope.Headers?.ContainsKey(EnvelopeHeaders.Released) == true);
        }
    }

    private async Task ProcessAsync(Delivery delivery)
    {
        if (delivery.Problem is { } problem)
        {
            var reason = $"Malformed message: {problem}";
            RabbitMqLog.Malformed(_transport.Logger, _logical, reason);
            PatternsTelemetry.Failed.Add(1, PatternsTelemetry.Tags(_transport.SystemName, _logical, Request.ConsumerGroup));
            await SettleAsync(delivery, Settlement.DeadLetter(reason)).ConfigureAwait(false);
            return;
        }

        var envelope = delivery.Envelope;
        Settlement settlement;
        try
        {
            settlement = await _handler(envelope, _hardStop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_hardStop.IsCancellationRequested)
        {
            await NackAsync(delivery).ConfigureAwait(false);
            return;
        }
        catch (Exception ex)
        {
            settlement = Settlement.HandlerThrew(ex);
        }

        await SettleAsync(delivery, settlement).ConfigureAwait(false);
    }

    private async Task SettleAsync(Delivery delivery, Settlement settlement)
    {
        // A release or deferral that ends in a plain requeue instead of its copy: remembered, so that it is not counted
        // when it comes again (see UncountedReturns). A retry after a failure is counted either way.
        var uncounted = settlement is { Kind: SettlementKind.Retry, IsDeferral: true };
        try
        {
            if (settlement.Kind != SettlementKind.Ack && delivery.Generation != Volatile.Read(ref _generation))
            {
                // The channel it came on has closed, so the broker delivers it again: a retry or dead letter published
                // now would be a second copy.
                if (uncounted)
                {
                    RememberUncounted(delivery, settlement);
                }

                return;
            }

            switch (settlement.Kind)
            {
                case SettlementKind.Ack:
                    await AckAsync(delivery).ConfigureAwait(false);
                    break;

                case SettlementKind.Retry:
                    if (Volatile.Read(ref _stopped) is not null)
                    {
                        // Stopping (a handler may have released the message for its host's stop): the copy goes to the
                        // retry queue, and a requeue to the queue, only once the broker confirmed the cancel of this
                        // consumer's basic.consume on both. Before, the broker could hand the message straight back to
                        // this consumer, which would release it again, and again, until the cancel came through.
                        await CancelConsumersAsync().WaitAsync(_hardStop.Token).ConfigureAwait(false);
                    }

                    if (_hardStop.IsCancellationRequested || Request.Temporary
                        || !await _transport.RedeliverAsync(_logical, delivery.Envelope, settlement, _hardStop.Token).ConfigureAwait(false))
                    {
                        if (uncounted)
                        {
                            RememberUncounted(delivery, settlement);
                        }

                        await NackAsync(delivery).ConfigureAwait(false);
                    }
                    else if ((!await AckAsync(delivery).ConfigureAwait(false) || delivery.Generation != Volatile.Read(ref _generation)) && uncounted)
                    {
                        // The copy is out, but the channel closed around the acknowledgement, which may be lost: the
                        // original may come back as well, redelivered.
                        RememberUncounted(delivery, settlement);
                    }

                    break;

                default:
                    if (Request.Temporary)
                    {
                        RabbitMqLog.TemporaryDropped(_transport.Logger, _logical, settlement.Reason ?? "dead-lettered");
                    }
                    else if (!await _transport.DeadLetterAsync(_logical, delivery, settlement, _hardStop.Token).ConfigureAwait(false))
                    {
                        // Could not write the dead letter with its reason: let the broker dead-letter it (x-death records why).
                        await NackAsync(delivery, requeue: false).ConfigureAwait(false);
                        break;
                    }

                    await AckAsync(delivery).ConfigureAwait(false);
                    break;
            }
        }
        catch (OperationCanceledException) when (_hardStop.IsCancellationRequested)
        {
            // Past the drain deadline: the channel closes with the subscription and the broker takes the message back.
            // (If the copy's confirm was what the deadline cut short, the broker may hold the copy too: both are uncounted.)
            if (uncounted)
            {
                RememberUncounted(delivery, settlement);
            }
        }
        catch (Exception ex)
        {
            // Nothing was acknowledged, and on a live channel nothing ever would be: the message would hold a prefetch
            // slot until the channel closes. Close it now, so the broker delivers the message again.
            if (uncounted)
            {
                RememberUncounted(delivery, settlement);
            }

            RabbitMqLog.SettleFailed(_transport.Logger, ex, delivery.Envelope.MessageId, _logical);
            RecycleChannel(delivery, $"settling a message failed ({ex.GetType().Name}: {ex.Message})");
        }
    }

    /// <summary>Closes the channel a delivery came on (if it is still the current one) and consumes on a new one.</summary>
    private void RecycleChannel(Delivery delivery, string reason)
    {
        if (_stopping || Interlocked.CompareExchange(ref _generation, delivery.Generation + 1, delivery.Generation) != delivery.Generation)
        {
            // Stopping (the channel closes anyway), or that channel is gone already.
            return;
        }

        // Deliveries still in the lanes from this channel are skipped (their generation is old): the broker delivers them again.
        RestartConsumer(reason, afterAnyRestart: true);
    }

    /// <returns><see langword="false"/> when the channel was gone (the broker has taken the message back).</returns>
    private async Task<bool> AckAsync(Delivery delivery)
    {
        try
        {
            await delivery.Consumer.Channel.BasicAckAsync(delivery.Tag, multiple: false).ConfigureAwait(false);
            return true;
        }
        catch (Exception ex) when (RabbitMqConnection.IsConnectivity(ex) || ex is RabbitMQ.Client.Exceptions.OperationInterruptedException)
        {
            // The channel is gone: the broker has taken the message back and delivers it again.
            return false;
        }
    }

    private async Task NackAsync(Delivery delivery, bool requeue = true)
    {
        try
        {
            await delivery.Consumer.Channel.BasicNackAsync(delivery.Tag, multiple: false, requeue).ConfigureAwait(false);
        }
        catch (Exception ex) when (RabbitMqConnection.IsConnectivity(ex) || ex is RabbitMQ.Client.Exceptions.OperationInterruptedException)
        {
            // The channel is gone: the broker has taken the message back.
        }
    }

    private Task OnChannelShutdownAsync(object sender, ShutdownEventArgs args)
    {
        Interlocked.Increment(ref _generation);
        if (_stopping || args.Initiator == ShutdownInitiator.Application)
        {
            return Task.CompletedTask;
        }

        Request.ConnectionLost?.Invoke(new TransportUnavailableException(
            $"The consumer of '{_logical}' lost its channel to RabbitMQ at {_transport.ConsumeConnection.Endpoint} ({args.ReplyCode} {args.ReplyText})."));
        if (RabbitMqConnection.IsChannelError(args))
        {
            // The client recovers channels only with their connection; one the broker closed on its own needs a new one.
            RestartConsumer($"{args.ReplyCode} {args.ReplyText}");
        }

        return Task.CompletedTask;
    }

    private void OnBrokerCancel()
    {
        Interlocked.Increment(ref _generation);
        if (!_stopping)
        {
            RestartConsumer("the broker cancelled the consumer; was the queue deleted?");
        }
    }

    /// <summary>Consumes on a new channel. <paramref name="afterAnyRestart"/>: the current channel must go even if a restart is under way (it may have opened it).</summary>
    private void RestartConsumer(string reason, bool afterAnyRestart = false)
    {
        lock (_gate)
        {
            if (_stopping)
            {
                return;
            }

            if (_resubscribing is { IsCompleted: false } running)
            {
                if (afterAnyRestart)
                {
                    RabbitMqLog.ConsumerInterrupted(_transport.Logger, _logical, reason);
                    _resubscribing = running.ContinueWith(_ => ReconsumeAsync(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).Unwrap();
                }

                return;
            }

            RabbitMqLog.ConsumerInterrupted(_transport.Logger, _logical, reason);
            _resubscribing = Task.Run(ReconsumeAsync, CancellationToken.None);
        }
    }

    private async Task ReconsumeAsync()
    {
        IChannel? old;
        lock (_gate)
        {
            old = _channel;
            _channel = null;
        }

        if (old is not null)
        {
            old.ChannelShutdownAsync -= OnChannelShutdownAsync;
            await RabbitMqPublisher.CloseQuietlyAsync(old).ConfigureAwait(false);
        }

        var delay = _transport.Options.NetworkRecoveryInterval;
        using var waiting = CancellationTokenSource.CreateLinkedTokenSource(_hardStop.Token, _stopRequested.Token);
        while (!_stopping)
        {
            try
            {
                await Task.Delay(delay, _transport.TimeProvider, waiting.Token).ConfigureAwait(false);
                if (_stopping)
                {
                    return;
                }

                if (!Request.Temporary)
                {
                    // The queue may have been deleted: declare it again rather than trusting what was declared before.
                    _transport.Topology.Forget(_logical);
                    var connection = await _transport.ConsumeConnection.GetAsync(_hardStop.Token).ConfigureAwait(false);
                    await _transport.Topology.DeclareSubscriptionAsync(connection, Request, _hardStop.Token).ConfigureAwait(false);
                }

                await OpenAsync(_hardStop.Token).ConfigureAwait(false);
                return;
            }
            catch (OperationCanceledException) when (waiting.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                RabbitMqLog.ResubscribeFailed(_transport.Logger, ex, _logical, delay);
            }
        }
    }

    /// <summary>A delivery waiting in a lane. <see cref="Generation"/> tells deliveries of a channel that has since closed apart.</summary>
    internal readonly record struct Delivery(Consumer Consumer, ulong Tag, int Generation, Envelope Envelope, string? Problem, BasicProperties? RawProperties)
    {
        /// <summary>Gets the body as it arrived, kept for malformed messages, which are dead-lettered as they are.</summary>
        public ReadOnlyMemory<byte> RawBody { get; init; }
    }

    internal sealed class Consumer(RabbitMqSubscription owner, IChannel channel) : AsyncDefaultBasicConsumer(channel)
    {
        private readonly System.Collections.Concurrent.ConcurrentDictionary<string, TaskCompletionSource> _cancelled = new(StringComparer.Ordinal);
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _started = new();

        /// <summary>
        /// Gets the consumer tags the broker confirmed to basic.consume. (The client adds a tag to
        /// <see cref="AsyncDefaultBasicConsumer.ConsumerTags"/> only once its dispatcher has run the consume-ok, which can
        /// be after basic.consume returned: a stop right after the start would leave that consumer running, and what the
        /// broker sends it while the channel closes would come back counted.)
        /// </summary>
        /// <remarks>
        /// A tag the broker cancelled (its queue was deleted) is left out: the client forgot that consumer, so the cancel-ok
        /// of a basic.cancel sent for it would go to the client's fallback consumer, and a stop would wait for it in vain.
        /// </remarks>
        public string[] StartedTags => [.. _started.Where(tag => !CancelOk(tag).Task.IsCompleted)];

        public void Started(string consumerTag) => _started.Enqueue(consumerTag);

        /// <summary>Completes once the consumer saw the cancel-ok of one of its consumer tags.</summary>
        public Task CancelledAsync(string consumerTag) => CancelOk(consumerTag).Task;

        public override Task HandleBasicDeliverAsync(
            string consumerTag, ulong deliveryTag, bool redelivered, string exchange, string routingKey,
            IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> body, CancellationToken cancellationToken = default)
        {
            return owner.OnDeliveryAsync(this, deliveryTag, redelivered, properties, body);
        }

        public override async Task HandleBasicCancelOkAsync(string consumerTag, CancellationToken cancellationToken = default)
        {
            await base.HandleBasicCancelOkAsync(consumerTag, cancellationToken).ConfigureAwait(false);
            CancelOk(consumerTag).TrySetResult();
        }

        public override async Task HandleBasicCancelAsync(string consumerTag, CancellationToken cancellationToken = default)
        {
            await base.HandleBasicCancelAsync(consumerTag, cancellationToken).ConfigureAwait(false);

            // No delivery follows the broker's cancel either: a stop that already sent its own basic.cancel for this tag
            // (whose cancel-ok the client gives its fallback consumer) is done waiting for it.
            CancelOk(consumerTag).TrySetResult();
            owner.OnBrokerCancel();
        }

        private TaskCompletionSource CancelOk(string consumerTag) =>
            _cancelled.GetOrAdd(consumerTag, static _ => new(TaskCreationOptions.RunContinuationsAsynchronously));
    }
}
