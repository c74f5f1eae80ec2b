using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.EventSourcing;
using Patterns.Storage;
using Patterns.Transport;

namespace Patterns.Outbox;

/// <summary>
/// Hands committed outbox messages to the transport, in sequence order (so in commit order per partition key), and
/// removes them once handed over: at least once, resuming where it stopped. One relay runs at a time across the
/// processes that share the store (a lease); the others stand by.
/// </summary>
internal sealed partial class OutboxRelay : IHostedService, IDisposable
{
    private readonly IServiceProvider _services;
    private IOutboxStore _outbox = null!;
    private ILeaseStore _leases = null!;
    private IUnitOfWorkStorage _units = null!;
    private MessageTransport _transport = null!;
    private OutboxHandoff _handoff = null!;
    private readonly OutboxOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly string _owner = EventProcessorOwner.Create();
    private CancellationTokenSource? _stopping;
    private Task? _run;

    /// <remarks>The store's parts are resolved at start, after options validation has named any that is missing.</remarks>
    public OutboxRelay(IServiceProvider services, IOptions<OutboxOptions> options, TimeProvider timeProvider, ILoggerFactory loggerFactory)
    {
        _services = services;
        _options = options.Value;
        _timeProvider = timeProvider;
        _logger = loggerFactory.CreateLogger("Patterns.Outbox.Relay");
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (_options.RunRelay)
        {
            _outbox = _services.GetRequiredService<IOutboxStore>();
            _leases = _services.GetRequiredService<ILeaseStore>();
            _units = _services.GetRequiredService<IUnitOfWorkStorage>();
            _transport = _services.GetRequiredService<MessageTransport>();
            _handoff = _services.GetRequiredService<OutboxHandoff>();
            _stopping = new CancellationTokenSource();
            var runner = new LeaseRunner(_leases, "outbox-relay", _owner, _options.LeaseDuration, _timeProvider);
            var stopping = _stopping.Token;
            _run = Task.Run(() => runner.RunAsync(RelayAsync, static () => { }, lease => LeaseLost(_logger, lease.Token), ex => StoreFailed(_logger, ex), stopping), CancellationToken.None);
        }

        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_stopping is null || _run is null)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        await _run.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    public void Dispose() => _stopping?.Dispose();

    /// <summary>Gets the relay's run, once started: it ends when the relay stopped.</summary>
    internal Task? Completion => _run;

    /// <summary>
    /// The longest the relay waits, after the store announced a commit or a gap showed, for the commits of its process in
    /// progress at that moment before it reads the store anyway: a commit of this process that hangs (a slow lock) does
    /// not hold up another process's messages longer.
    /// </summary>
    internal static readonly TimeSpan MaxSettleWait = TimeSpan.FromSeconds(1);

    /// <summary>How often (in removals) the relay removes from the start of the outbox rather than from its previous removal.</summary>
    internal const int FullRemovalEvery = 64;

    /// <remarks>
    /// <para>
    /// The relay hands messages over in sequence order, from two sources. Messages this process's sessions committed are
    /// given to it in memory with their sequence numbers (<see cref="OutboxHandoff"/>); it takes one only when its number
    /// follows the last one handed over, so a run handed over from memory has no gap where a message it was not given
    /// could sit, and removing that run by range removes nothing else. Everything else (messages from other processes,
    /// from this one outside a session, from before the relay owned the outbox, and any the handoff did not keep) is read
    /// from the store: at start; when the next number is missing (a gap before a message handed over); and when the store
    /// announces a commit (<see cref="IOutboxStore.WaitForOutboxAsync"/>) that handed nothing over in memory. Before
    /// reading for a gap or an announcement, the relay waits for the commits of this process that were in progress at that
    /// moment (they may hand the missing number over), but at most <see cref="MaxSettleWait"/>. Only for a store that
    /// declares <see cref="IUnitOfWorkStorage.NumbersOutboxConsecutively"/>: with another, everything is read from the store.
    /// </para>
    /// <para>
    /// A batch read that is shorter than <see cref="OutboxOptions.BatchSize"/> held everything committed when it was read
    /// (sequence numbers become visible in order), so the relay then waits instead of reading an empty batch first.
    /// </para>
    /// <para>
    /// The removal of what was handed over runs while the relay hands over more (one removal at a time; the next covers
    /// everything handed over meanwhile), so its round trip and commit are not on the way of the next message. A relay
    /// stopped in between sends those messages again: at least once.
    /// </para>
    /// </remarks>
    private async Task<LeaseRunner.Outcome> RelayAsync(Lease lease, CancellationToken owned)
    {
        var removals = new Removals(_outbox, _options.BatchSize, lease, owned);
        if (_units.NumbersOutboxConsecutively)
        {
            _handoff.Open(); // otherwise it keeps nothing, takes no ticket, and every message is read from the store
        }

        // Completes when the relay stops or loses the outbox, so no wait below outlives that.
        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stopped = owned.Register(static state => ((TaskCompletionSource)state!).TrySetResult(), stop);
        try
        {
            var taken = new List<StoredOutboxMessage>(Math.Min(_options.BatchSize, 1024));
            var after = await ReadStoreAsync(0, removals, lease, owned).ConfigureAwait(false);
            Task? announced = null;
            var announcedAfter = 0L;
            (long Mark, long After, Task? Deadline)? barrier = null;
            while (true)
            {
                var changed = _handoff.Changed; // before looking, so a hand-over after the look still wakes the wait
                taken.Clear();
                if (_handoff.Take(after, _options.BatchSize, taken) > 0)
                {
                    foreach (var message in taken)
                    {
                        await DispatchAsync(message, lease, owned).ConfigureAwait(false);
                        after = message.Sequence;
                    }

                    await removals.HandedOverAsync(after, force: false).ConfigureAwait(false);
                    continue;
                }

                if (barrier is { } wait)
                {
                    if (!_handoff.Settled(wait.Mark) && wait.Deadline?.IsCompleted != true)
                    {
                        var deadline = wait.Deadline ?? SettleDeadline(owned);
                        barrier = wait with { Deadline = deadline };
                        // A commit of this process in progress when the gap or the store's announcement showed may fill
                        // it; one that hangs does not hold the store read up longer than MaxSettleWait.
                        await Task.WhenAny(changed, removals.Running ?? changed, deadline, stop.Task).ConfigureAwait(false);
                        owned.ThrowIfCancellationRequested();
                        await removals.PumpAsync(force: false).ConfigureAwait(false);
                        continue;
                    }

                    barrier = null;
                    if (after == wait.After || wait.Deadline?.IsCompleted == true)
                    {
                        // Those commits ended and handed nothing over that moved the relay, or one still hangs: only the
                        // store holds what follows (a store read is always in order: numbers become visible in order).
                        var kept = _handoff.HighestPending;
                        after = await ReadStoreAsync(after, removals, lease, owned).ConfigureAwait(false);
                        _handoff.DropThrough(kept);
                        continue;
                    }
                }

                if (_handoff.HighestPending > 0)
                {
                    // A gap: the next number was not handed over (another process's message, a commit outside a session, a
                    // rolled-back number, or a commit of this process still in progress).
                    barrier = (_handoff.Mark, after, null);
                    continue;
                }

                if (announced is null)
                {
                    // Also while commits of this process are in progress (each wakes the relay when it ends): another
                    // process's message is announced by the store, not only shown as a gap before the next of them.
                    announced = _outbox.WaitForOutboxAsync(after, owned).AsTask();
                    announcedAfter = after;
                }

                if (!announced.IsCompleted)
                {
                    // With no commit of this process in progress, remove what was handed over now.
                    await removals.PumpAsync(force: _handoff.Idle).ConfigureAwait(false);
                    await Task.WhenAny(announced, changed, removals.Running ?? changed, stop.Task).ConfigureAwait(false);
                    owned.ThrowIfCancellationRequested();
                    await removals.PumpAsync(force: false).ConfigureAwait(false);
                }

                if (announced.IsCompleted)
                {
                    await announced.ConfigureAwait(false);
                    announced = null;
                    barrier = (_handoff.Mark, announcedAfter, null);
                }
            }
        }
        catch (Exception) when (owned.IsCancellationRequested)
        {
            return LeaseRunner.Outcome.Lost;
        }
        catch (LeaseLostException)
        {
            return LeaseRunner.Outcome.Lost;
        }
        catch (Exception ex)
        {
            // The store failed: stand by, then take the lease again and resume from what is left in the outbox.
            StoreFailed(_logger, ex);
            await Task.Delay(_options.RetryDelay, _timeProvider, owned).ConfigureAwait(false);
            return LeaseRunner.Outcome.Lost;
        }
        finally
        {
            _handoff.Close();

            // A removal still running when the relay stops or fails ends before the relay does (so nothing of the relay
            // touches the store after it stopped); whether it removed anything no longer matters: what it did not
            // remove is sent again.
            await removals.EndAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Completes after <see cref="MaxSettleWait"/> (or when the relay stops), whatever else happens.</summary>
    private Task SettleDeadline(CancellationToken owned) =>
        Task.Delay(MaxSettleWait, _timeProvider, owned).ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

    /// <summary>Reads the store after <paramref name="after"/> and hands over what it holds, up to the first batch shorter than <see cref="OutboxOptions.BatchSize"/>.</summary>
    /// <returns>The last sequence number handed over.</returns>
    private async Task<long> ReadStoreAsync(long after, Removals removals, Lease lease, CancellationToken owned)
    {
        while (true)
        {
            var batch = await _outbox.ReadOutboxAsync(after, _options.BatchSize, owned).ConfigureAwait(false);
            foreach (var stored in batch)
            {
                await DispatchAsync(stored, lease, owned).ConfigureAwait(false);
                after = stored.Sequence;
            }

            if (batch.Count > 0)
            {
                await removals.HandedOverAsync(after, force: true).ConfigureAwait(false);
            }

            if (batch.Count < _options.BatchSize)
            {
                return after;
            }
        }
    }

    private async Task DispatchAsync(StoredOutboxMessage stored, Lease lease, CancellationToken owned)
    {
        var delay = _options.RetryDelay;
        for (var attempt = 1; ; attempt++)
        {
            Exception failure;
            try
            {
                var envelope = OutboxCodec.Decode(stored.Message.Payload);
                if (stored.Message.Kind == OutboxMessageKind.Send)
                {
                    await _transport.SendAsync(stored.Message.Destination, envelope, owned).ConfigureAwait(false);
                }
                else
                {
                    await _transport.PublishAsync(stored.Message.Destination, envelope, owned).ConfigureAwait(false);
                }

                return;
            }
            catch (FormatException ex)
            {
                // It can never be sent: record it instead of blocking the messages behind it.
                await DeadLetterAsync(stored, lease, ex, owned).ConfigureAwait(false);
                return;
            }
            catch (Exception ex) when (!owned.IsCancellationRequested)
            {
                failure = ex;
            }

            if (failure is not TransportUnavailableException && attempt >= _options.MaxAttempts)
            {
                await DeadLetterAsync(stored, lease, failure, owned).ConfigureAwait(false);
                return;
            }

            DispatchFailed(_logger, failure, stored.Sequence, stored.Message.Destination, attempt, delay);
            await Task.Delay(delay, _timeProvider, owned).ConfigureAwait(false);
            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, _options.MaxRetryDelay.Ticks));
        }
    }

    private async Task DeadLetterAsync(StoredOutboxMessage stored, Lease lease, Exception reason, CancellationToken owned)
    {
        DeadLettered(_logger, reason, stored.Sequence, stored.Message.Destination);
        var record = new System.Buffers.ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(record))
        {
            writer.WriteStartObject();
            writer.WriteNumber("sequence", stored.Sequence);
            writer.WriteString("destination", stored.Message.Destination);
            writer.WriteString("kind", stored.Message.Kind.ToString());
            writer.WriteString("partitionKey", stored.Message.PartitionKey);
            writer.WriteBase64String("payload", stored.Message.Payload.Span);
            writer.WriteString("error", $"{reason.GetType().FullName}: {reason.Message}");
            writer.WriteString("enqueuedAt", stored.EnqueuedAt);
            writer.WriteString("deadLetteredAt", _timeProvider.GetUtcNow());
            writer.WriteEndObject();
        }

        var id = stored.Sequence.ToString("D19", System.Globalization.CultureInfo.InvariantCulture);
        await _units.CommitAsync(new UnitOfWork().RequireLease(lease).Upsert(_options.DeadLetterCollection, id, record.WrittenMemory), owned).ConfigureAwait(false);
    }

    /// <summary>
    /// Removes what the relay handed over, under its lease, one removal at a time: a removal covers everything handed
    /// over since the end of the previous one (so the store does not pass over what it removed before), and starts when
    /// the previous one ended and either a batch (<see cref="OutboxOptions.BatchSize"/>) is waiting, or the relay asks
    /// (after a store read, and when it waits while no commit of its process is in progress): a removal per message
    /// handed over from memory would cost a store transaction each. Every <see cref="FullRemovalEvery"/>-th removal
    /// starts at 0, so rows a server crash brought back (a removal commits without waiting for its flush) do not stay
    /// until the relay restarts.
    /// </summary>
    private sealed class Removals(IOutboxStore outbox, int batchSize, Lease lease, CancellationToken owned)
    {
        private Task? _running;
        private long _removedThrough;
        private long _handedThrough;
        private int _count;

        /// <summary>Gets the removal in progress, to wake the relay when it ends (it may then start the next).</summary>
        public Task? Running => _running;

        /// <summary>Records that every message through <paramref name="sequence"/> was handed over, and starts a removal when one is due.</summary>
        public ValueTask HandedOverAsync(long sequence, bool force)
        {
            _handedThrough = sequence;
            return PumpAsync(force);
        }

        /// <summary>Observes a removal that ended (its failure ends the relay's turn) and starts the next when one is due.</summary>
        /// <param name="force">Remove whatever was handed over, not only a whole batch.</param>
        public async ValueTask PumpAsync(bool force)
        {
            if (_running is { } running)
            {
                if (!running.IsCompleted)
                {
                    return;
                }

                _running = null;
                await running.ConfigureAwait(false);
            }

            var waiting = _handedThrough - _removedThrough;
            if (waiting > 0 && (force || waiting >= batchSize))
            {
                var from = ++_count % FullRemovalEvery == 0 ? 0 : _removedThrough;
                _running = outbox.DeleteOutboxRangeAsync(from, _handedThrough, lease, owned).AsTask();
                _removedThrough = _handedThrough;
            }
        }

        /// <summary>Waits for the removal in progress to end, whatever its outcome.</summary>
        public Task EndAsync() => _running is { } running
            ? running.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default)
            : Task.CompletedTask;
    }

    [LoggerMessage(EventId = 4101, Level = LogLevel.Warning, Message = "The outbox relay could not hand message {Sequence} to '{Destination}' (attempt {Attempt}); it tries again in {Delay}.")]
    private static partial void DispatchFailed(ILogger logger, Exception exception, long sequence, string destination, int attempt, TimeSpan delay);

    [LoggerMessage(EventId = 4102, Level = LogLevel.Error, Message = "The outbox relay moved message {Sequence} for '{Destination}' to the outbox dead letters: it cannot be handed to the transport.")]
    private static partial void DeadLettered(ILogger logger, Exception exception, long sequence, string destination);

    [LoggerMessage(EventId = 4103, Level = LogLevel.Warning, Message = "The outbox relay lost its lease (token {Token}); it stands by.")]
    private static partial void LeaseLost(ILogger logger, long token);

    [LoggerMessage(EventId = 4104, Level = LogLevel.Warning, Message = "The outbox relay could not reach the store; it tries again.")]
    private static partial void StoreFailed(ILogger logger, Exception exception);
}
