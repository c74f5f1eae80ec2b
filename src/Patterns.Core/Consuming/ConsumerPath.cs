using System.Collections.Concurrent;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.Storage;
using Patterns.Telemetry;
using Patterns.Transport;

namespace Patterns.Consuming;

/// <summary>
/// The kernel's consumer path: what happens to every delivery of one subscription around its handler, the same on every
/// transport, so a transport implements only the SPI primitives (deliver, and carry out the <see cref="Settlement"/>).
/// </summary>
/// <remarks>
/// <para>In order, for each delivery:</para>
/// <list type="number">
/// <item>A message scheduled for later (<see cref="EnvelopeHeaders.DeliverAt"/>) is put off until then
/// (<see cref="Settlement.Defer"/>); a transport that hands it over early only costs another hop.</item>
/// <item>A message whose time to live ended (<see cref="EnvelopeHeaders.ExpiresAt"/>) is dead-lettered with the reason
/// <see cref="EnvelopeHeaders.ExpiredReason"/> and never handled. One that is still alive is handled with a token that is
/// cancelled at its deadline; if the deadline passes before it is handled, it is dead-lettered the same way.</item>
/// <item>With de-duplication, a copy of a message that is being handled in this process waits for it; then a message whose
/// id the group's inbox holds is acknowledged without running the handler. If the inbox cannot be read, the message is put
/// off (<see cref="PatternsOptions.InboxRetryDelay"/>), not counted as a delivery. A store session the handler commits
/// claims the id in the same transaction as its writes (<see cref="InboxDelivery"/>), so of two copies handled at once only
/// one commits. After a successful handler the id is recorded; if that fails, the message is delivered again.</item>
/// <item>A handler that throws has the message dead-lettered with the exception (<see cref="Settlement.DeadLetter"/>).</item>
/// </list>
/// <para>Messages with none of these headers, without de-duplication, pass straight through.</para>
/// </remarks>
internal sealed class ConsumerPath
{
    private readonly DeliveryHandler _handler;
    private readonly string _group;
    private readonly bool _temporary;
    private readonly IInboxStore? _inbox;
    private readonly TimeSpan _inboxRetryDelay;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly string _system;
    private readonly ConcurrentDictionary<Guid, TaskCompletionSource>? _inFlight;

    public ConsumerPath(SubscriptionRequest request, DeliveryHandler handler, IInboxStore? inbox, TimeSpan inboxRetryDelay, TimeProvider timeProvider, ILogger logger, string system)
    {
        _handler = handler;
        _group = request.ConsumerGroup;
        _temporary = request.Temporary;

        // A temporary queue (a reply queue) is this subscription's own: nobody sends it the same message twice.
        _inbox = request.Temporary ? null : inbox;
        _inFlight = _inbox is null ? null : new ConcurrentDictionary<Guid, TaskCompletionSource>();
        _inboxRetryDelay = inboxRetryDelay;
        _timeProvider = timeProvider;
        _logger = logger;
        _system = system;
    }

    /// <summary>The <see cref="DeliveryHandler"/> a transport calls.</summary>
    public ValueTask<Settlement> HandleAsync(Envelope envelope, CancellationToken cancellationToken)
    {
        if (envelope.Headers is { } headers && (headers.ContainsKey(EnvelopeHeaders.DeliverAt) || headers.ContainsKey(EnvelopeHeaders.ExpiresAt)))
        {
            return HandleTimedAsync(envelope, cancellationToken);
        }

        return HandleNowAsync(envelope, cancellationToken);
    }

    private ValueTask<Settlement> HandleNowAsync(in Envelope envelope, CancellationToken cancellationToken) =>
        _inbox is null ? Invoke(envelope, cancellationToken) : HandleOnceAsync(envelope, cancellationToken);

    private async ValueTask<Settlement> HandleTimedAsync(Envelope envelope, CancellationToken cancellationToken)
    {
        if (!TryReadTime(envelope, EnvelopeHeaders.DeliverAt, out var deliverAt, out var problem)
            || !TryReadTime(envelope, EnvelopeHeaders.ExpiresAt, out var expiresAt, out problem))
        {
            return Settlement.DeadLetter(problem!);
        }

        var now = _timeProvider.GetUtcNow();
        if (expiresAt is { } expiry && now >= expiry)
        {
            return Expire(envelope, expiry);
        }

        if (deliverAt is { } due && due > now && !_temporary)
        {
            var wait = due - now;
            ConsumingLog.Deferred(_logger, envelope.MessageId, _group, due, wait);
            return Settlement.Defer(wait, $"scheduled for {due:O}");
        }

        if (expiresAt is not { } deadline)
        {
            return await HandleNowAsync(envelope, cancellationToken).ConfigureAwait(false);
        }

        // The handler's token is cancelled at the deadline, so the message's deadline (a request's timeout) reaches it.
        using var expiring = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var timer = _timeProvider.CreateTimer(static s => ((CancellationTokenSource)s!).Cancel(), expiring, deadline - now, Timeout.InfiniteTimeSpan);
        Settlement settlement;
        try
        {
            settlement = await HandleNowAsync(envelope, expiring.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && expiring.IsCancellationRequested)
        {
            return Expire(envelope, deadline);
        }

        return settlement.Kind != SettlementKind.Ack && !cancellationToken.IsCancellationRequested && _timeProvider.GetUtcNow() >= deadline
            ? Expire(envelope, deadline)
            : settlement;
    }

    private Settlement Expire(in Envelope envelope, DateTimeOffset expiresAt)
    {
        ConsumingLog.Expired(_logger, envelope.MessageId, _group, expiresAt);
        PatternsTelemetry.Failed.Add(1, PatternsTelemetry.Tags(_system, _group, _group));
        return Settlement.DeadLetter(EnvelopeHeaders.ExpiredReason);
    }

    /// <summary>Runs the handler; whatever it throws (other than for the subscription's own stop) becomes a dead letter.</summary>
    private ValueTask<Settlement> Invoke(in Envelope envelope, CancellationToken cancellationToken)
    {
        ValueTask<Settlement> pending;
        try
        {
            pending = _handler(envelope, cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception ex)
        {
            return new ValueTask<Settlement>(Settlement.HandlerThrew(ex));
        }

        return pending.IsCompletedSuccessfully ? pending : AwaitHandlerAsync(pending, cancellationToken);
    }

    private static async ValueTask<Settlement> AwaitHandlerAsync(ValueTask<Settlement> pending, CancellationToken cancellationToken)
    {
        try
        {
            return await pending.ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception ex)
        {
            return Settlement.HandlerThrew(ex);
        }
    }

    /// <summary>Handles a message at most once per group, as far as the inbox knows.</summary>
    private async ValueTask<Settlement> HandleOnceAsync(Envelope envelope, CancellationToken cancellationToken)
    {
        var inbox = _inbox!;
        var inFlight = _inFlight!;
        var id = envelope.MessageId;
        var claim = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        while (!inFlight.TryAdd(id, claim))
        {
            // Another copy is being handled here: wait for it, then ask the inbox whether it was handled.
            if (inFlight.TryGetValue(id, out var other))
            {
                await other.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        try
        {
            var key = id.ToString();
            bool seen;
            try
            {
                seen = await inbox.ContainsAsync(_group, key, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                throw;
            }
            catch (Exception ex)
            {
                // The store failed, not the message: put it off (not a delivery) rather than dead-letter every message
                // while the store is down.
                ConsumingLog.InboxCheckFailed(_logger, ex, id, _group, _inboxRetryDelay);
                return Settlement.Defer(_inboxRetryDelay, "the inbox store could not be read");
            }

            if (seen)
            {
                ConsumingLog.Duplicate(_logger, id, _group);
                return Settlement.Ack;
            }

            // The handler's store session claims the message in the same transaction as its writes (InboxDelivery): two
            // copies past the check above at once (in two processes) cannot both commit.
            Settlement settlement;
            var outer = InboxDelivery.Current;
            var delivery = new InboxDelivery(_group, key);
            InboxDelivery.Enter(delivery);
            try
            {
                settlement = await Invoke(envelope, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                // Work the handler started and left running (its flow keeps the ambient delivery) claims nothing later.
                delivery.Claimed = true;
                InboxDelivery.Enter(outer);
            }

            if (settlement.Kind != SettlementKind.Ack)
            {
                return settlement;
            }

            try
            {
                // False means another copy got there first (another process); either way it is handled.
                _ = await inbox.TryMarkHandledAsync(_group, key, CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                // Acknowledging now would leave a later copy unrecognised; deliver it again instead (at least once).
                ConsumingLog.InboxMarkFailed(_logger, ex, id, _group);
                return Settlement.Retry(TimeSpan.Zero, ex);
            }

            return Settlement.Ack;
        }
        finally
        {
            inFlight.TryRemove(new KeyValuePair<Guid, TaskCompletionSource>(id, claim));
            claim.TrySetResult();
        }
    }

    private static bool TryReadTime(in Envelope envelope, string header, out DateTimeOffset? time, out string? problem)
    {
        time = null;
        problem = null;
        if (!envelope.TryGetHeader(header, out var text))
        {
            return true;
        }

        if (DateTimeOffset.TryParseExact(text, "O", CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var parsed))
        {
            time = parsed;
            return true;
        }

        problem = $"Header '{header}' is not a round-trip (\"O\") ISO 8601 time: '{text}'.";
        return false;
    }
}
