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

    /// <remarks>
    /// <para>
    /// The removal of a handed-over batch runs while the next batch is read and handed over (it is awaited before the
    /// next removal, and before the relay waits for new messages), so its round trip and commit are not on the way
    /// of the next message. A relay stopped in between sends the batch again: at least once, as before.
    /// </para>
    /// <para>
    /// A batch shorter than <see cref="OutboxOptions.BatchSize"/> held everything committed when it was read (sequence
    /// numbers become visible in order), so the relay waits next instead of reading an empty batch first: the wait
    /// returns at once for messages committed since.
    /// </para>
    /// </remarks>
    /// <summary>How often (in removals) the relay removes from the start of the outbox rather than from its previous removal.</summary>
    internal const int FullRemovalEvery = 64;

    private async Task<LeaseRunner.Outcome> RelayAsync(Lease lease, CancellationToken owned)
    {
        Task? removing = null;
        try
        {
            long after = 0;
            long removedThrough = 0;
            var removals = 0;
            while (true)
            {
                var batch = await _outbox.ReadOutboxAsync(after, _options.BatchSize, owned).ConfigureAwait(false);
                if (batch.Count > 0)
                {
                    foreach (var stored in batch)
                    {
                        await DispatchAsync(stored, lease, owned).ConfigureAwait(false);
                        after = stored.Sequence;
                    }

                    if (removing is not null)
                    {
                        await removing.ConfigureAwait(false);
                    }

                    // Handed over: removed under the lease, so a relay that lost it cannot remove what the new owner reads.
                    // From the end of the previous removal (awaited just above), so the store does not pass over what it
                    // removed before; every FullRemovalEvery-th removal starts at 0, so rows a server crash brought back
                    // (a removal commits without waiting for its flush) do not stay until the relay restarts.
                    var from = ++removals % FullRemovalEvery == 0 ? 0 : removedThrough;
                    removing = _outbox.DeleteOutboxRangeAsync(from, after, lease, owned).AsTask();
                    removedThrough = after;
                    if (batch.Count >= _options.BatchSize)
                    {
                        continue;
                    }
                }

                if (removing is not null)
                {
                    await removing.ConfigureAwait(false);
                    removing = null;
                }

                await _outbox.WaitForOutboxAsync(after, owned).ConfigureAwait(false);
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
            // A removal still running when the relay stops or fails ends before the relay does (so nothing of the relay
            // touches the store after it stopped); whether it removed anything no longer matters: what it did not
            // remove is sent again.
            if (removing is not null)
            {
                await removing.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default).ConfigureAwait(false);
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

    [LoggerMessage(EventId = 4101, Level = LogLevel.Warning, Message = "The outbox relay could not hand message {Sequence} to '{Destination}' (attempt {Attempt}); it tries again in {Delay}.")]
    private static partial void DispatchFailed(ILogger logger, Exception exception, long sequence, string destination, int attempt, TimeSpan delay);

    [LoggerMessage(EventId = 4102, Level = LogLevel.Error, Message = "The outbox relay moved message {Sequence} for '{Destination}' to the outbox dead letters: it cannot be handed to the transport.")]
    private static partial void DeadLettered(ILogger logger, Exception exception, long sequence, string destination);

    [LoggerMessage(EventId = 4103, Level = LogLevel.Warning, Message = "The outbox relay lost its lease (token {Token}); it stands by.")]
    private static partial void LeaseLost(ILogger logger, long token);

    [LoggerMessage(EventId = 4104, Level = LogLevel.Warning, Message = "The outbox relay could not reach the store; it tries again.")]
    private static partial void StoreFailed(ILogger logger, Exception exception);
}
