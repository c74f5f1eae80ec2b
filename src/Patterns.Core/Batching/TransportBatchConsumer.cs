using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Telemetry;
using Patterns.Transport;

namespace Patterns.Batching;

/// <summary>
/// Consumes a queue or a subscription in batches. Each delivery's settlement stays pending while its message
/// waits in a batch; when the batch is done (after the retries of its failed items) every message is settled by
/// its own item's outcome: ack, redeliver, or dead-letter.
/// </summary>
internal sealed class TransportBatchConsumer<TMessage> : BatchEngine<TMessage>
{
    private readonly BatchHandlerInvoker<TMessage> _invoker;
    private readonly BatchConsumerOptions _options;
    private readonly Func<TMessage, long>? _sizeOf;
    private readonly MessageBus _bus;
    private readonly IMessageSerializer _serializer;
    private readonly string _source;
    private readonly string _system;
    private readonly ConcurrentQueue<SettlementSource> _settlements = new();
    private readonly TagList _tags;
    private readonly ConsumerStop? _stop;

    public TransportBatchConsumer(
        BatchHandlerInvoker<TMessage> invoker,
        BatchConsumerOptions options,
        Func<TMessage, long>? sizeOf,
        MessageBus bus,
        IMessageSerializer serializer,
        ILogger logger,
        string source,
        string consumerGroup,
        ConsumerStop? stop = null)
        : base(options, keys: null, tracked: true, bus.TimeProvider, logger, consumerGroup, bus.Transport.SystemName)
    {
        _invoker = invoker;
        _stop = stop;
        _options = options;
        _sizeOf = sizeOf;
        _bus = bus;
        _serializer = serializer;
        _source = source;
        _system = bus.Transport.SystemName;
        _tags = PatternsTelemetry.Tags(_system, source, consumerGroup);

        // Messages from other processes carry only the logical type name: register it before the first delivery.
        bus.Registry.GetName(typeof(TMessage));
    }

    public ValueTask<Settlement> HandleAsync(Envelope envelope, CancellationToken cancellationToken)
    {
        if (!MessageMaterializer.TryGet(envelope, _bus.Registry, _serializer, Logger, _system, _source, Name, out TMessage message, out var rejection))
        {
            return new ValueTask<Settlement>(rejection);
        }

        var ticket = SettlementSource.Rent(_settlements);
        var pending = ticket.Task;
        ValueTask<bool> adding;
        try
        {
            adding = AddCoreAsync(message, _sizeOf?.Invoke(message) ?? (int)envelope.PayloadLength, envelope, ticket, cancellationToken);
        }
        catch (InvalidOperationException ex)
        {
            // The consumer is stopping: hand the message back for redelivery, not counted as a delivery (it was never handled).
            ticket.Complete(Settlement.Release("the batch consumer stopped before the message was added: " + ex.Message));
            return pending;
        }

        return adding.IsCompletedSuccessfully ? pending : AwaitAddAsync(adding, ticket, pending);
    }

    internal override long SizeOf(TMessage item) => _sizeOf?.Invoke(item) ?? 0;

    protected override ValueTask InvokeHandlerAsync(Batch<TMessage> batch, CancellationToken cancellationToken) =>
        _invoker.InvokeAsync(batch, cancellationToken);

    protected override ValueTask CompleteBatchAsync(BatchBuffer<TMessage> buffer)
    {
        var envelopes = buffer.Envelopes!;
        var tickets = buffer.Tickets!;
        var failures = buffer.Failures;
        var acked = 0;
        for (var i = 0; i < buffer.Count; i++)
        {
            var ticket = (SettlementSource)tickets[i]!;
            if (failures?[i] is { } exception)
            {
                ticket.Complete(OnFailed(envelopes[i], exception, buffer.Attempt + 1));
            }
            else
            {
                acked++;
                ticket.Complete(Settlement.Ack);
            }
        }

        if (acked > 0 && PatternsTelemetry.Consumed.Enabled)
        {
            PatternsTelemetry.Consumed.Add(acked, _tags);
        }

        return default;
    }

    private static async ValueTask<Settlement> AwaitAddAsync(ValueTask<bool> adding, SettlementSource ticket, ValueTask<Settlement> pending)
    {
        try
        {
            await adding.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidOperationException or OperationCanceledException)
        {
            ticket.Complete(Settlement.Release("the batch consumer stopped before the message was added: " + ex.Message));
        }

        return await pending.ConfigureAwait(false);
    }

    private Settlement OnFailed(in Envelope envelope, Exception exception, int attempts)
    {
        var handlerStopped = exception is Messaging.HandlerStoppedException && _stop is { HostStopping: true };
        if (handlerStopped || (exception is OperationCanceledException && StopToken.IsCancellationRequested))
        {
            // Stopped, not failed (the consumer is stopping, or the handler said its host is, and it is): handed back
            // uncounted, so a stop never moves the message towards the dead-letter queue. A HandlerStoppedException while
            // the host is not stopping is a failure like any other: never counted, it could come back forever.
            if (handlerStopped)
            {
                // A broker would hand the message straight back to this consumer, whose handler stops again.
                _stop!.StopTakingDeliveries();
            }

            return Settlement.Release(exception is Messaging.HandlerStoppedException ? exception.Message : "the batch consumer stopped at its drain deadline");
        }

        PatternsTelemetry.Failed.Add(1, _tags);

        if (envelope.DeliveryCount < _options.MaxRedeliveries)
        {
            BatchingLog.MessageFailed(Logger, exception, Name, envelope.MessageId, attempts, "redelivered");
            PatternsTelemetry.Retried.Add(1, _tags);
            return Settlement.Retry(_options.RedeliveryDelay, exception);
        }

        BatchingLog.MessageFailed(Logger, exception, Name, envelope.MessageId, attempts, "dead-lettered");
        return Settlement.DeadLetter(
            $"Batch handler {_invoker.HandlerName} failed on delivery {envelope.DeliveryCount + 1} after {attempts} attempt(s) with {exception.GetType().FullName}: {exception.Message}",
            exception);
    }
}
