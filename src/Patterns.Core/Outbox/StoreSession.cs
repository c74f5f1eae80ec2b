using Microsoft.Extensions.DependencyInjection;
using Patterns.EventSourcing;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.Outbox;

/// <summary>The <see cref="IStoreSession"/> (one per resolution): collects a <see cref="UnitOfWork"/> and commits it.</summary>
internal sealed class StoreSession(IServiceProvider services) : IStoreSession
{
    private readonly IUnitOfWorkStorage _units = services.GetRequiredService<IUnitOfWorkStorage>();
    private readonly IMessageSerializer _serializer = services.GetRequiredService<IMessageSerializer>();
    private readonly TimeProvider _timeProvider = services.GetRequiredService<TimeProvider>();
    private readonly OutboxHandoff? _handoff = services.GetService<OutboxHandoff>();
    private MessageBus? _bus;
    private UnitOfWork? _work;
    private MessageOptions? _followUp;

    public bool HasChanges => _work is { IsEmpty: false };

    public void Append(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<EventData> events)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        ArgumentNullException.ThrowIfNull(events);
        var types = services.GetService<EventTypeMap>()
            ?? throw new InvalidOperationException("IStoreSession.Append needs event sourcing: call AddEventSourcing(...) to register the event types.");
        var timestamp = _timeProvider.GetUtcNow();
        var serialized = new SerializedEvent[events.Count];
        for (var i = 0; i < serialized.Length; i++)
        {
            var data = events[i] ?? throw new ArgumentException($"The events appended to stream '{streamId}' contain null.", nameof(events));
            serialized[i] = types.Serialize(data, timestamp);
        }

        var inline = services.GetService<InlineProjector>() is { Entries.Count: > 0 } projector ? projector.For(streamId, events) : null;
        Work.Append(streamId, expectedVersion, serialized, inline);
    }

    public void Store<TDocument>(string collection, string id, TDocument document)
        where TDocument : class
    {
        ArgumentNullException.ThrowIfNull(document);
        Work.Upsert(collection, id, _serializer.SerializeToMemory(document, typeof(TDocument)));
    }

    public void Delete(string collection, string id) => Work.Delete(collection, id);

    public void Publish<TMessage>(string? topic, TMessage message, MessageOptions options = default)
        where TMessage : notnull
    {
        Work.Enqueue(OutboxCodec.Message(Bus, _serializer, topic, OutboxMessageKind.Publish, message, WithFollowUp(options)));
    }

    public void Send<TMessage>(string queue, TMessage message, MessageOptions options = default)
        where TMessage : notnull
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(queue);
        Work.Enqueue(OutboxCodec.Message(Bus, _serializer, queue, OutboxMessageKind.Send, message, WithFollowUp(options)));
    }

    public void Handles(MessageContext context)
    {
        Work.ClaimInbox(context.ConsumerGroup, context.MessageId.ToString());
        _followUp = context.FollowUp();
    }

    public async ValueTask<UnitOfWorkResult> CommitAsync(CancellationToken cancellationToken = default)
    {
        if (_work is not { IsEmpty: false } work)
        {
            return UnitOfWorkResult.Empty;
        }

        // In a handler of the kernel's de-duplicating consumer path, the first commit claims the message in the same
        // transaction as the handler's writes, so a copy handled at the same moment elsewhere cannot commit too.
        var delivery = Consuming.InboxDelivery.Current is { Claimed: false } current ? current : null;
        if (delivery is not null && !work.InboxClaims.Contains(new InboxClaim(delivery.Group, delivery.MessageId)))
        {
            work.ClaimInbox(delivery.Group, delivery.MessageId);
        }

        var result = await CommitCoreAsync(work, cancellationToken).ConfigureAwait(false);
        if (delivery is not null)
        {
            delivery.Claimed = true;
        }

        return result;
    }

    private async ValueTask<UnitOfWorkResult> CommitCoreAsync(UnitOfWork work, CancellationToken cancellationToken)
    {
        if (_handoff is null || work.Outbox.Count == 0)
        {
            var committed = await _units.CommitAsync(work, cancellationToken).ConfigureAwait(false);
            _work = null;
            return committed;
        }

        // The relay of this process is given the messages with their sequence numbers, so it need not read them back.
        var ticket = _handoff.Begin();
        UnitOfWorkResult? result = null;
        try
        {
            result = await _units.CommitAsync(work, cancellationToken).ConfigureAwait(false);
            _work = null;
            return result;
        }
        finally
        {
            _handoff.Complete(ticket, result?.LastOutboxSequence ?? 0, work.Outbox, _timeProvider.GetUtcNow());
        }
    }

    // Made on first use, and again after a commit: a session that commits once allocates one unit.
    private UnitOfWork Work => _work ??= new UnitOfWork();

    private MessageBus Bus => _bus ??= services.GetService<MessageBus>()
        ?? throw new InvalidOperationException("IStoreSession.Publish and Send need messaging: call AddPatterns(...) to choose a transport.");

    private MessageOptions WithFollowUp(MessageOptions options) => _followUp is not { } followUp
        ? options
        : options with
        {
            CorrelationId = options.CorrelationId ?? followUp.CorrelationId,
            CausationId = options.CausationId ?? followUp.CausationId,
        };
}
