using System.Globalization;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Hosting;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Etl;

/// <summary>
/// A queue or subscription as an ETL source whose acknowledgements wait for the sink: each delivery is written into a
/// bounded channel and its handler then waits until the loader reports that a commit covers its position (or the run
/// ends, which hands it back). The transport delivers at most <c>maxUnacknowledged</c> at once (its concurrency and
/// prefetch), so the messages in flight are bounded. A message that cannot be read as <typeparamref name="T"/> is
/// dead-lettered by the transport at once and never waits.
/// </summary>
internal sealed class TransportSource<T>(IServiceProvider services, TransportAddress address, string group, string name, int maxUnacknowledged, int maxDeliveries) : EtlSource<T>
{
    /// <summary>How long an idle source waits for more messages before it loads the open batch (so that it is acknowledged).</summary>
    internal static readonly TimeSpan Linger = TimeSpan.FromMilliseconds(100);

    public override string Name => name;

    public override bool Incremental => true;

    internal override int? MaxUnacknowledged => maxUnacknowledged;

    public override async IAsyncEnumerable<T> ReadAsync(EtlSourceContext context, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var run = context.Run;
        if (!run.PositionsTrackRows)
        {
            throw new InvalidOperationException(
                $"ETL job '{run.Job}' reads {name}, whose messages are acknowledged with the batch that loads them, but OrderBy or Aggregate hold every row until the source ends, which a queue does not: " +
                "each message would stay unacknowledged. Load the messages into a table first and sort or aggregate that, or aggregate in the target.");
        }

        var held = new Held(this, run);
        run.Acknowledgements = held;
        await held.SubscribeAsync(cancellationToken).ConfigureAwait(false);
        var reader = held.Reader;
        var threshold = Math.Max(1, maxUnacknowledged / 2);

        // Whether an idle source waits a little for more before it loads the open batch: yes while messages arrive
        // faster than the stream takes them; no once a wait found none (a transport that hands a consumer one message
        // at a time, each waiting for its acknowledgement, sends no more until the open batch commits).
        var linger = true;
        var ready = held.Ready;
        while (true)
        {
            if (ready.Count == 0 && run.ReadConsumed is { } readConsumed && reader.TryRead(out var first))
            {
                // The sink records the messages each commit covers: skip those already recorded (delivered again after a
                // crash between a commit and its acknowledgements), checked for what has arrived at once.
                linger |= reader.Count > 0;
                await held.SkipConsumedAsync(first, reader, ready, readConsumed, cancellationToken).ConfigureAwait(false);
                continue;
            }

            // With a sink record, every delivery passes the check above first: one arriving after its TryRead found the
            // channel empty waits for the next turn of the loop.
            if (ready.TryDequeue(out var delivery) || (run.ReadConsumed is null && reader.TryRead(out delivery)))
            {
                linger |= reader.Count > 0;
                context.Offset++;
                context.Line = context.Offset;
                held.Take(context.Offset, delivery.Settled);
                run.MessageId = delivery.Settled.Id;
                yield return delivery.Message;

                // Back here, the row has passed every stage. Many rows that no batch covers (they were filtered out, or
                // quarantined): the transport would soon deliver no more, so they are committed and acknowledged now.
                if (context.Offset - run.SealedPosition >= threshold && run.SealOpenBatch is { } sealMany)
                {
                    await sealMany().ConfigureAwait(false);
                }

                continue;
            }

            if (context.Offset > run.SealedPosition)
            {
                // Idle, holding rows no sealed batch covers: after a short wait for more, the open batch is loaded.
                linger = linger && await WaitAsync(reader, run.Time, cancellationToken).ConfigureAwait(false);
                if (!linger && run.SealOpenBatch is { } sealIdle)
                {
                    await sealIdle().ConfigureAwait(false);
                }

                continue;
            }

            if (!await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                yield break;
            }
        }
    }

    /// <summary>Waits for a message for at most <see cref="Linger"/>: false when none came.</summary>
    private static async ValueTask<bool> WaitAsync(ChannelReader<(T Message, Delivery Settled)> reader, TimeProvider time, CancellationToken cancellationToken)
    {
        using var linger = new CancellationTokenSource(Linger, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, linger.Token);
        try
        {
            await reader.WaitToReadAsync(linked.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    /// <summary>The subscription of one run and the deliveries it holds, in the order the stream took them.</summary>
    private sealed class Held(TransportSource<T> source, EtlRun run) : IEtlAcknowledgements
    {
        private readonly Lock _gate = new();
        private readonly Queue<(long Position, Delivery Settled)> _taken = new();
        private readonly Queue<(long Position, string Id)> _consumed = new();
        private readonly HashSet<string> _holding = new(StringComparer.Ordinal);
        private readonly Dictionary<string, List<Delivery>> _copies = new(StringComparer.Ordinal);
        private readonly Channel<(T Message, Delivery Settled)> _channel =
            Channel.CreateBounded<(T, Delivery)>(new BoundedChannelOptions(source.MaxUnacknowledged!.Value)
            {
                SingleReader = true,
                SingleWriter = false,
                FullMode = BoundedChannelFullMode.Wait,
            });

        private TransportSubscription? _subscription;
        private bool _released;
        private bool _ended;

        public ChannelReader<(T Message, Delivery Settled)> Reader => _channel.Reader;

        /// <summary>Gets the deliveries read and checked against the sink's record, not yet taken by the stream.</summary>
        public Queue<(T Message, Delivery Settled)> Ready { get; } = new();

        public async ValueTask SubscribeAsync(CancellationToken cancellationToken)
        {
            var bus = source.Services.GetService<MessageBus>()
                ?? throw new InvalidOperationException($"ETL job '{run.Job}' reads {source.Name}, which needs the Patterns services: call AddPatterns() on the host builder and pass its services.");
            var serializer = source.Services.GetRequiredService<IMessageSerializer>();

            // Another process names the message by its logical type name: register the element type, or every such
            // message would be dead-lettered as an unknown type.
            bus.Registry.GetName(typeof(T));
            var logger = run.Logger;
            var system = bus.Transport.SystemName;
            var max = source.MaxUnacknowledged!.Value;
            _subscription = await bus.SubscribeAsync(
                new SubscriptionRequest
                {
                    Address = source.Address,
                    ConsumerGroup = source.Group,

                    // Each held message keeps its handler waiting: the concurrency is the bound on messages in flight, and
                    // the transport's prefetch follows it.
                    Concurrency = max,
                    Capacity = Math.Max(max, 10_000),
                },
                async (envelope, ct) =>
                {
                    if (!MessageMaterializer.TryGet(envelope, bus.Registry, serializer, logger, system, source.Address.Name, source.Group, out T message, out var rejection))
                    {
                        return rejection;
                    }

                    var settled = new Delivery(envelope.DeliveryCount, envelope.MessageId == Guid.Empty ? null : envelope.MessageId.ToString("N"));
                    try
                    {
                        if (Volatile.Read(ref _released))
                        {
                            return HandBack;
                        }

                        await _channel.Writer.WriteAsync((message, settled), ct).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is ChannelClosedException or OperationCanceledException)
                    {
                        return HandBack;
                    }

                    using (ct.UnsafeRegister(static s => ((Delivery)s!).TrySetResult(HandBack), settled))
                    {
                        return await settled.Task.ConfigureAwait(false);
                    }
                },
                cancellationToken).ConfigureAwait(false);
        }

        /// <summary>The stream took the message at <paramref name="position"/> (stream task).</summary>
        public void Take(long position, Delivery settled)
        {
            lock (_gate)
            {
                _taken.Enqueue((position, settled));
                if (settled.Id is { } id && run.ReadConsumed is not null)
                {
                    _consumed.Enqueue((position, id));
                    _holding.Add(id);
                }
            }
        }

        public IReadOnlyList<string> TakeConsumed(long position, out IReadOnlyList<long> positions)
        {
            List<string>? ids = null;
            List<long>? at = null;
            lock (_gate)
            {
                while (_consumed.TryPeek(out var next) && next.Position <= position)
                {
                    var (taken, id) = _consumed.Dequeue();
                    (ids ??= []).Add(id);
                    (at ??= []).Add(taken);
                }
            }

            positions = (IReadOnlyList<long>?)at ?? [];
            return (IReadOnlyList<string>?)ids ?? [];
        }

        /// <summary>
        /// Reads <paramref name="first"/> and what else has arrived (up to 256), acknowledges at once those the sink recorded
        /// as consumed, keeps a copy of a message the run holds (or that arrived twice) with the held one, and queues the
        /// others in <paramref name="ready"/> (stream task).
        /// </summary>
        /// <remarks>
        /// A copy is never acknowledged before the commit that covers its message: on RabbitMQ a second copy exists because
        /// the first copy's channel closed, and the first copy's hand-back can then no longer reach the broker, so the copy
        /// is the one that must be handed back if that commit never happens.
        /// </remarks>
        public async ValueTask SkipConsumedAsync(
            (T Message, Delivery Settled) first,
            ChannelReader<(T Message, Delivery Settled)> reader,
            Queue<(T Message, Delivery Settled)> ready,
            Func<IReadOnlyList<string>, CancellationToken, ValueTask<IReadOnlySet<string>>> readConsumed,
            CancellationToken cancellationToken)
        {
            var arrived = new List<(T Message, Delivery Settled)>(Math.Min(reader.Count + 1, 256)) { first };
            while (arrived.Count < 256 && reader.TryRead(out var more))
            {
                arrived.Add(more);
            }

            var ids = arrived.Where(a => a.Settled.Id is not null).Select(a => a.Settled.Id!).ToList();

            // The ids held before the sink's record is read: one whose commit (and acknowledgement) lands in between is
            // then found in the record, or in this snapshot, never in neither.
            HashSet<string> heldBefore;
            lock (_gate)
            {
                heldBefore = ids.Count == 0 ? [] : [.. ids.Where(_holding.Contains)];
            }

            IReadOnlySet<string>? recorded;
            try
            {
                recorded = ids.Count == 0 ? null : await readConsumed(ids, cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                // The run ends: these are handed back with the rest.
                foreach (var delivery in arrived)
                {
                    ready.Enqueue(delivery);
                }

                throw;
            }

            var skipped = 0;
            var fresh = new HashSet<string>(StringComparer.Ordinal);
            foreach (var delivery in arrived)
            {
                var settled = delivery.Settled;
                Settlement? now = null;
                if (settled.Id is not { } id)
                {
                    ready.Enqueue(delivery);
                    continue;
                }

                lock (_gate)
                {
                    if (recorded!.Contains(id))
                    {
                        now = Settlement.Ack;
                    }
                    else if (_ended)
                    {
                        now = HandBack;
                    }
                    else if (_holding.Contains(id) || fresh.Contains(id))
                    {
                        // A copy of a message the run holds or has queued: settled with it (acknowledged with its commit,
                        // handed back when the run ends without one).
                        if (!_copies.TryGetValue(id, out var copies))
                        {
                            _copies[id] = copies = [];
                        }

                        copies.Add(settled);
                    }
                    else if (heldBefore.Contains(id))
                    {
                        // Held when the record was read, acknowledged since: a commit covers it.
                        now = Settlement.Ack;
                    }
                    else
                    {
                        fresh.Add(id);
                        ready.Enqueue(delivery);
                        continue;
                    }
                }

                if (now is { } settlement)
                {
                    // Only an acknowledged copy is skipped: a kept copy is settled with its held message, a handed-back
                    // one is delivered again.
                    skipped += settlement.Kind == SettlementKind.Ack ? 1 : 0;
                    settled.TrySetResult(settlement);
                }
            }

            if (skipped > 0)
            {
                EtlLog.SkippedConsumed(run.Logger, run.Job, skipped, source.Name);
            }
        }

        public void Acknowledge(long position)
        {
            List<Delivery>? done = null;
            lock (_gate)
            {
                while (_taken.TryPeek(out var next) && next.Position <= position)
                {
                    var settled = _taken.Dequeue().Settled;
                    (done ??= []).Add(settled);
                    if (settled.Id is { } id && _holding.Remove(id) && _copies.Remove(id, out var copies))
                    {
                        done.AddRange(copies);
                    }
                }
            }

            if (done is not null)
            {
                foreach (var settled in done)
                {
                    settled.TrySetResult(Settlement.Ack);
                }
            }
        }

        public async ValueTask EndAsync(Exception? failure, EtlBlame blame)
        {
            // The subscription stops first, so that what is handed back is not delivered to it again (and counted as
            // another failed attempt); its stop waits for the handlers, which the hand-back below releases.
            Volatile.Write(ref _released, true);
            var stopping = _subscription?.StopAsync(CancellationToken.None) ?? Task.CompletedTask;
            _channel.Writer.TryComplete();
            List<(long Position, Delivery Settled)> back;
            lock (_gate)
            {
                _ended = true;
                back = [.. _taken];
                _taken.Clear();
                _consumed.Clear();
                _holding.Clear();

                // Copies of held or queued messages: handed back with Release, which counts no delivery (the held copy
                // counts the failure). On RabbitMQ, one the subscription's stop cannot settle before its drain deadline goes
                // back with the closing channel instead, and the broker's redelivered flag then counts a delivery.
                back.AddRange(_copies.Values.SelectMany(c => c).Select(c => (long.MaxValue, c)));
                _copies.Clear();
            }

            while (Ready.TryDequeue(out var checkedIn))
            {
                back.Add((long.MaxValue, checkedIn.Settled));
            }

            while (_channel.Reader.TryRead(out var waiting))
            {
                back.Add((long.MaxValue, waiting.Settled));
            }

            // Taken but not covered by a commit, or still in the channel: back to the transport, to be delivered again. A
            // message the run blames (in the batch that failed; or the only one: too big for a batch of its own, or whose
            // row a stage failed on) counts a failed delivery and, once delivered maxDeliveries times, is dead-lettered
            // with a reason that names what failed, the message and the error; the others are handed back uncounted.
            foreach (var (position, settled) in back)
            {
                if (failure is null || !blame.Covers(position))
                {
                    settled.TrySetResult(HandBack);
                }
                else if (settled.DeliveryCount + 1 >= source.MaxDeliveries)
                {
                    settled.TrySetResult(Settlement.DeadLetter(DeadLetterReason(run.Job, blame.Cause, settled, failure), failure));
                }
                else
                {
                    settled.TrySetResult(Settlement.Retry(TimeSpan.Zero, failure));
                }
            }

            if (back.Count > 0)
            {
                EtlLog.HandedBack(run.Logger, run.Job, back.Count, source.Name);
            }

            await stopping.ConfigureAwait(false);
            if (_subscription is { } subscription)
            {
                await subscription.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// A message handed back (the run stopped, or failed on a later batch): delivered again at once without counting a
    /// delivery (<see cref="Settlement.Release"/>), so restarts never bring it nearer to <c>maxDeliveries</c>; only a batch
    /// that includes the message failing does.
    /// </summary>
    private static Settlement HandBack { get; } = Settlement.Release("the ETL run stopped before the batch that includes the message committed");

    private int MaxDeliveries => maxDeliveries;

    /// <summary>
    /// Why a message is dead-lettered: the job, what failed (the stage and its place in the flow, the multicast branch, the
    /// batch's sink, the loader), the message id, the delivery, and the error's type and message; in the words of the
    /// kernel's consumers (<c>Handler X failed on delivery N with Type: message</c>).
    /// </summary>
    internal static string DeadLetterReason(string job, string cause, Delivery settled, Exception failure) =>
        string.Create(CultureInfo.InvariantCulture, $"ETL job '{job}': {cause} failed on message {settled.Id ?? "(no id)"} on delivery {settled.DeliveryCount + 1} with {failure.GetType().FullName}: {failure.Message}");

    private IServiceProvider Services => services;

    private TransportAddress Address => address;

    private string Group => group;
}

/// <summary>A delivery the source holds: settled when a commit covers it or the run ends.</summary>
/// <param name="deliveryCount">The failed deliveries before this one.</param>
/// <param name="id">The message id (<c>N</c> format), or null when the message has none.</param>
internal sealed class Delivery(int deliveryCount, string? id) : TaskCompletionSource<Settlement>(TaskCreationOptions.RunContinuationsAsynchronously)
{
    /// <summary>Gets the failed deliveries before this one.</summary>
    public int DeliveryCount => deliveryCount;

    /// <summary>Gets the message id, or null.</summary>
    public string? Id => id;
}
