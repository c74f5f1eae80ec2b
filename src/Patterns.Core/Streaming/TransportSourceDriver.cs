using System.Threading.Channels;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Hosting;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Streaming;

/// <summary>
/// A queue or subscription as a stream source: deliveries are written into a bounded channel (acknowledged once
/// written; a full channel holds the transport back) that the pipeline reads like any channel. On a graceful stop the
/// subscription drains into the channel, and the pipeline finishes what it took.
/// </summary>
/// <remarks>
/// A message the source gives back without a failure of its own (the pipeline stopped, or a snapshot could not take it)
/// goes back with <see cref="Settlement.Release"/>: no delivery is counted. Such a message comes again marked
/// (<see cref="Messaging.EnvelopeHeaders.Released"/>), and with a durable store the source reads its inbox for it as for a
/// redelivery: a snapshot whose commit reported a failure may have landed and include it. A first delivery is not read
/// against the inbox (that would cost a store round trip per message); a copy sent again with a first delivery's count is
/// caught by the snapshot's inbox claim instead (see <see cref="StreamPipeline"/>).
/// </remarks>
internal sealed class TransportSourceDriver<T> : ChannelDriver<T>
{
    private readonly Channel<T> _channel;
    private readonly IServiceProvider _services;
    private readonly TransportAddress _address;
    private readonly string _group;
    private volatile bool _stopped;
    private HeldAcknowledgements? _held;

    public TransportSourceDriver(RunContext run, IServiceProvider services, TransportAddress address, string group)
        : this(run, services, address, group, Channel.CreateBounded<T>(new BoundedChannelOptions(run.Options.BufferCapacity)
        {
            SingleReader = true,
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait,
        }))
    {
    }

    private TransportSourceDriver(RunContext run, IServiceProvider services, TransportAddress address, string group, Channel<T> channel)
        : base(run, channel.Reader, honorStop: false)
    {
        _channel = channel;
        _services = services;
        _address = address;
        _group = group;
    }

    public override bool ReportsStart => true;

    protected override bool EndedByStop => _stopped;

    protected override bool HoldsUnsettledInput => _held?.Uncaptured ?? false;

    public override async Task RunAsync()
    {
        var bus = _services.GetService<MessageBus>()
            ?? throw new InvalidOperationException("A transport source needs the Patterns services: call AddPatterns() or AddStreaming() on the host builder.");
        var serializer = _services.GetRequiredService<IMessageSerializer>();

        // Another process names the message by its logical type name; without the element type in the registry,
        // every message it sent would be dead-lettered as an unknown type. (In memory, names are never looked up.)
        bus.Registry.GetName(typeof(T));
        var logger = Run.Logger;
        var system = bus.Transport.SystemName;
        var writer = _channel.Writer;
        // The ids of the messages a snapshot includes are claimed in the snapshot's unit of work, so a message whose
        // acknowledgement was lost after the commit (a kill between the two) is recognised when it comes again.
        var inbox = (Run.Store as StoreStreamSnapshotStore)?.Inbox;
        var consumer = InboxConsumer(Run.Name);
        var held = _held = Run.HoldsAcknowledgements ? new HeldAcknowledgements(this, Run.Options.MaxUnacknowledged, inbox is null ? null : consumer) : null;
        Run.Source = held;
        var subscription = await bus.SubscribeAsync(
            new SubscriptionRequest
            {
                Address = _address,
                ConsumerGroup = _group,
                Concurrency = held is null ? 1 : Run.Options.MaxUnacknowledged,
                Capacity = held is null ? Run.Options.BufferCapacity : Math.Max(Run.Options.BufferCapacity, Run.Options.MaxUnacknowledged),
            },
            async (envelope, ct) =>
            {
                if (!MessageMaterializer.TryGet(envelope, bus.Registry, serializer, logger, system, _address.Name, _group, out T message, out var rejection))
                {
                    return rejection;
                }

                try
                {
                    if (held is not null)
                    {
                        var id = envelope.MessageId.ToString();
                        // Delivered before, or handed back by a run that may have committed it: read the inbox first.
                        var check = inbox is not null && (envelope.DeliveryCount > 0 || Settlement.WasReleased(envelope));
                        while (true)
                        {
                            var checkedAt = -1L;
                            if (check)
                            {
                                // Delivered before: a committed snapshot may include it already, its acknowledgement lost.
                                checkedAt = held.Commits;
                                try
                                {
                                    if (await inbox!.ContainsAsync(consumer, id, ct).ConfigureAwait(false))
                                    {
                                        StreamingLog.AlreadyIncluded(logger, Run.Name, envelope.MessageId);
                                        return Settlement.Ack;
                                    }
                                }
                                catch (Exception ex) when (ex is not OperationCanceledException)
                                {
                                    return Settlement.Defer(TimeSpan.FromSeconds(1), $"the inbox of stream '{Run.Name}' could not be read ({ex.Message})");
                                }
                            }

                            // Null: a snapshot committed while the inbox was read, and it may include this message (the
                            // held copy it would have waited for is settled already): the inbox is read again.
                            if (await held.WriteAndHoldAsync(message, id, checkedAt, ct).ConfigureAwait(false) is { } settlement)
                            {
                                return settlement;
                            }
                        }
                    }

                    await writer.WriteAsync(message, ct).ConfigureAwait(false);
                    return Settlement.Ack;
                }
                catch (Exception ex) when (ex is ChannelClosedException or OperationCanceledException)
                {
                    // The pipeline ended while the message waited for room (or for its snapshot): hand it back uncounted.
                    return HandBack;
                }
            },
            Run.AbortToken).ConfigureAwait(false);
        Run.Started?.TrySetResult();

        // The stop's drain, set by the stop callback. StopToken reads as cancelled before its callback has run, so the end
        // of the run waits for the callback's task instead of reading a variable the callback may not have set yet: read
        // too early, it would dispose the subscription (a hard stop, past which deliveries go back unsettled and are
        // counted) while the subscription drains.
        var stopping = new TaskCompletionSource<Task>(TaskCreationOptions.RunContinuationsAsynchronously);
        Exception? failure = null;
        using (Run.StopToken.Register(() => stopping.TrySetResult(StartStopping(held is null, subscription))))
        {
            try
            {
                await base.RunAsync().ConfigureAwait(false);
                if (held is not null)
                {
                    // The messages taken are acknowledged only once the state that includes them has committed.
                    await Run.CommitEndAsync().ConfigureAwait(false);
                }
            }
            catch (Exception ex)
            {
                // Kept for the held messages' settlement: a stage failing with a Stop policy rethrows without failing
                // the run (that is recorded only once this returns), and the messages must go back counted so that a
                // poison message is dead-lettered. A cancellation after an abort is not the message's fault (the drain
                // deadline passed, or the run failed already and says why).
                failure = ex is OperationCanceledException && Run.AbortToken.IsCancellationRequested ? null : ex;
                throw;
            }
            finally
            {
                writer.TryComplete();
                failure ??= Run.Failure;
                held?.ReleaseAll(failure, counted: failure is not null && !Run.CommitFailed);
                if (held is not null && !Run.StopToken.IsCancellationRequested)
                {
                    // The run failed: the deliveries the subscription still holds are handed back (released handlers
                    // settle them at once), not dropped by a hard stop, so that they are delivered again.
                    await subscription.StopAsync(CancellationToken.None).ConfigureAwait(false);
                }

                if (Run.StopToken.IsCancellationRequested)
                {
                    await (await stopping.Task.ConfigureAwait(false)).ConfigureAwait(false);
                }

                await subscription.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>How a message goes back that the source did not take into a snapshot (the pipeline ended first): uncounted.</summary>
    private static Settlement HandBack { get; } = Settlement.Release("the stream stopped before a snapshot included the message");

    /// <summary>The inbox consumer under which a pipeline records the messages its committed snapshots include.</summary>
    internal static string InboxConsumer(string pipeline) => StreamPipeline.InboxPrefix + pipeline;

    private Task StartStopping(bool drain, TransportSubscription subscription)
    {
        try
        {
            return drain ? StopAsync(subscription) : StopHoldingAsync(subscription);
        }
        catch (Exception ex)
        {
            return Task.FromException(ex);
        }
    }

    private async Task StopAsync(TransportSubscription subscription)
    {
        _stopped = true;
        await subscription.StopAsync(Run.AbortToken).ConfigureAwait(false);
        _channel.Writer.TryComplete();
    }

    /// <summary>
    /// Holding acknowledgements, the subscription cannot drain into the pipeline (its handlers wait for the final
    /// snapshot): the input closes at once, deliveries not yet taken go back to the transport, and the pipeline
    /// finishes what it took, commits, acknowledges it, and only then stops the subscription.
    /// </summary>
    private Task StopHoldingAsync(TransportSubscription subscription)
    {
        _stopped = true;
        _channel.Writer.TryComplete();
        return subscription.StopAsync(Run.AbortToken);
    }

    /// <summary>
    /// The messages taken into the pipeline, in channel order, each waiting for its settlement until a snapshot that
    /// includes it has committed. Reaching the bound forces a snapshot. With an inbox, each snapshot's unit of work
    /// claims the ids of the messages it includes, and a copy of a message that is held already waits for the held one.
    /// </summary>
    private sealed class HeldAcknowledgements(TransportSourceDriver<T> driver, int max, string? inboxConsumer) : ICheckpointParticipant
    {
        private readonly Lock _gate = new();
        private readonly Queue<(TaskCompletionSource<Settlement> Settled, string Id)> _waiting = new();
        private readonly List<List<(TaskCompletionSource<Settlement> Settled, string Id)>> _uncommitted = [];
        private readonly Dictionary<string, TaskCompletionSource<Settlement>> _heldIds = new(StringComparer.Ordinal);
        private long _written;
        private long _captured;
        private long _commits;
        private int _held;
        private Settlement? _released;

        /// <summary>Gets a value indicating whether messages were taken into the pipeline that no snapshot includes yet.</summary>
        public bool Uncaptured
        {
            get
            {
                lock (_gate)
                {
                    return _written - driver._channel.Reader.Count > _captured;
                }
            }
        }

        /// <summary>Gets how many snapshots that include held messages have committed.</summary>
        public long Commits
        {
            get
            {
                lock (_gate)
                {
                    return _commits;
                }
            }
        }

        /// <summary>
        /// Writes <paramref name="message"/> into the pipeline and waits until a committed snapshot includes it. A copy of
        /// a message held already waits for the held one instead. Returns null, without writing, when the caller read the
        /// inbox after <paramref name="checkedAt"/> commits (-1: it did not read it) and a snapshot has committed since:
        /// that snapshot may include this message, whose held copy is settled and forgotten, so the inbox is read again.
        /// </summary>
        public async Task<Settlement?> WriteAndHoldAsync(T message, string id, long checkedAt, CancellationToken cancellationToken)
        {
            var settled = new TaskCompletionSource<Settlement>(TaskCreationOptions.RunContinuationsAsynchronously);
            var writer = driver._channel.Writer;
            while (true)
            {
                if (!await writer.WaitToWriteAsync(cancellationToken).ConfigureAwait(false))
                {
                    return HandBack;
                }

                Task<Settlement>? original = null;
                lock (_gate)
                {
                    if (_released is not null)
                    {
                        // Released before it entered the pipeline: whatever ended the run, this message had no part in it.
                        return HandBack;
                    }

                    if (inboxConsumer is not null && _heldIds.TryGetValue(id, out var held))
                    {
                        // A copy of a message the pipeline holds (its channel was recycled): it is settled as the held
                        // one is, acknowledged once that one's snapshot commits, handed back if it is released.
                        original = held.Task;
                    }
                    else if (checkedAt >= 0 && checkedAt != _commits)
                    {
                        return null;
                    }
                    else if (writer.TryWrite(message))
                    {
                        _waiting.Enqueue((settled, id));
                        if (inboxConsumer is not null)
                        {
                            _heldIds[id] = settled;
                        }

                        _written++;
                        break;
                    }
                }

                if (original is not null)
                {
                    return await original.WaitAsync(cancellationToken).ConfigureAwait(false);
                }
            }

            if (Interlocked.Increment(ref _held) >= max)
            {
                driver.RequestCheckpoint();
            }

            using (cancellationToken.UnsafeRegister(static s => ((TaskCompletionSource<Settlement>)s!).TrySetResult(HandBack), settled))
            {
                return await settled.Task.ConfigureAwait(false);
            }
        }

        public object? Capture()
        {
            List<(TaskCompletionSource<Settlement> Settled, string Id)> captured;
            lock (_gate)
            {
                var taken = _written - driver._channel.Reader.Count - _captured;
                captured = new((int)taken);
                for (var i = 0; i < taken; i++)
                {
                    captured.Add(_waiting.Dequeue());
                }

                _captured += taken;
                _uncommitted.Add(captured);
            }

            if (inboxConsumer is { } consumer && captured.Count > 0)
            {
                var ids = captured.Select(c => c.Id).ToArray();
                driver.Run.AddPendingWrite(unit =>
                {
                    foreach (var id in ids)
                    {
                        unit.ClaimInbox(consumer, id);
                    }
                });
            }

            return captured;
        }

        public void Committed(object? captured)
        {
            var settled = (List<(TaskCompletionSource<Settlement> Settled, string Id)>)captured!;
            lock (_gate)
            {
                _uncommitted.Remove(settled);
                foreach (var (_, id) in settled)
                {
                    _heldIds.Remove(id);
                }

                _commits++;
            }

            foreach (var (message, _) in settled)
            {
                message.TrySetResult(Settlement.Ack);
            }

            Interlocked.Add(ref _held, -settled.Count);
        }

        /// <summary>The run ended: what no committed snapshot includes goes back to the transport, to be redelivered.</summary>
        /// <remarks>
        /// Uncounted (<see cref="Settlement.Release"/>) unless <paramref name="counted"/>: a graceful stop, or a snapshot
        /// whose commit failed, is no failure of the messages. A stage that failed the run may have failed on one of them, so
        /// those go back with <see cref="Settlement.Retry"/> and the failure. Either way the copy that comes again is read
        /// against the inbox (a count above 0, or the release mark), since a commit that reported a failure may have landed.
        /// </remarks>
        public void ReleaseAll(Exception? failure, bool counted)
        {
            TaskCompletionSource<Settlement>[] waiting;
            var settlement = counted ? Settlement.Retry(TimeSpan.Zero, failure) : failure is null ? HandBack : Settlement.Release(
                $"the stream's snapshot could not be committed ({failure.Message}); the message goes back to be taken again");
            lock (_gate)
            {
                _released = settlement;
                waiting = [.. _uncommitted.SelectMany(c => c).Select(c => c.Settled), .. _waiting.Select(c => c.Settled)];
                _waiting.Clear();
                _uncommitted.Clear();
                _heldIds.Clear();
            }

            foreach (var message in waiting)
            {
                message.TrySetResult(settlement);
            }
        }
    }
}
