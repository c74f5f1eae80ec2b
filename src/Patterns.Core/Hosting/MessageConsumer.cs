using System.Diagnostics;
using System.Runtime.ExceptionServices;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Telemetry;
using Patterns.Transport;
using Polly;

namespace Patterns.Hosting;

/// <summary>
/// Turns a transport delivery into a call of the user's handler: materializes the body, runs the
/// resilience pipeline, and decides the settlement (ack, redeliver, dead-letter). Never throws.
/// </summary>
internal sealed class MessageConsumer<TMessage>
{
    private readonly MessageHandlerInvoker<TMessage> _invoker;
    private readonly ConsumerIdentity _identity;
    private readonly ConsumerOptions _options;
    private readonly ResiliencePipeline? _pipeline;
    private readonly bool _retryOnly;
    private readonly IMessageSerializer _serializer;
    private readonly ILogger _logger;
    private readonly string _system;
    private readonly ConsumerStop? _stop;

    public MessageConsumer(
        MessageHandlerInvoker<TMessage> invoker,
        ConsumerIdentity identity,
        ConsumerOptions options,
        ResiliencePipeline? pipeline,
        IMessageSerializer serializer,
        ILogger logger,
        ConsumerStop? stop = null)
    {
        _stop = stop;
        _invoker = invoker;
        _identity = identity;
        _options = options;
        _pipeline = pipeline;
        _serializer = serializer;
        _logger = logger;
        _system = identity.Bus.Transport.SystemName;

        // With only a retry strategy, the first attempt runs outside Polly (no cost on success) and a
        // failure is replayed into the retry pipeline as its first outcome, so Polly still decides every
        // retry, delay and backoff. Breakers, timeouts and limits must see every attempt, so they go in full.
        _retryOnly = pipeline is not null && options.Retry is not null && options.CircuitBreaker is null
            && options.AttemptTimeout is null && options.MaxConcurrentCalls is null && options.ConfigurePipeline is null;
    }

    public ValueTask<Settlement> HandleAsync(Envelope envelope, CancellationToken cancellationToken)
    {
        if (!TryGetMessage(envelope, out var message, out var rejection))
        {
            return new ValueTask<Settlement>(rejection);
        }

        if ((_pipeline is null || _retryOnly) && !PatternsTelemetry.Source.HasListeners() && !PatternsTelemetry.ProcessDuration.Enabled)
        {
            ValueTask pending;
            try
            {
                pending = _invoker.InvokeAsync(message, envelope, _identity, cancellationToken);
            }
            catch (Exception ex)
            {
                return ContinueAfterFailureAsync(message, envelope, ExceptionDispatchInfo.Capture(ex), cancellationToken);
            }

            if (pending.IsCompletedSuccessfully)
            {
                // Consume the result even though it is known: a ValueTask backed by a pooled source is recycled by it.
                #pragma warning disable CA1849 // Completed already, so it does not block.
                pending.GetAwaiter().GetResult();
                #pragma warning restore CA1849
                OnConsumed();
                return new ValueTask<Settlement>(Settlement.Ack);
            }

            return AwaitFirstAttemptAsync(pending, message, envelope, cancellationToken);
        }

        return HandleInstrumentedAsync(message, envelope, cancellationToken);
    }

    private async ValueTask<Settlement> AwaitFirstAttemptAsync(ValueTask pending, TMessage message, Envelope envelope, CancellationToken cancellationToken)
    {
        try
        {
            await pending.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            return await ContinueAfterFailureAsync(message, envelope, ExceptionDispatchInfo.Capture(ex), cancellationToken).ConfigureAwait(false);
        }

        OnConsumed();
        return Settlement.Ack;
    }

    private async ValueTask<Settlement> HandleInstrumentedAsync(TMessage message, Envelope envelope, CancellationToken cancellationToken)
    {
        using var activity = PatternsTelemetry.StartProcess(_system, _identity.Source, _identity.ConsumerGroup, envelope);
        var started = Stopwatch.GetTimestamp();
        try
        {
            if (_pipeline is null)
            {
                await _invoker.InvokeAsync(message, envelope, _identity, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await _pipeline.ExecuteAsync(
                    static (state, ct) => state.Invoker.InvokeAsync(state.Message, state.Envelope, state.Identity, ct),
                    (Invoker: _invoker, Message: message, Envelope: envelope, Identity: _identity),
                    cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception ex)
        {
            PatternsTelemetry.RecordError(activity, ex);
            return OnFailed(envelope, ex, cancellationToken);
        }
        finally
        {
            if (PatternsTelemetry.ProcessDuration.Enabled)
            {
                PatternsTelemetry.ProcessDuration.Record(
                    Stopwatch.GetElapsedTime(started).TotalSeconds,
                    PatternsTelemetry.Tags(_system, _identity.Source, _identity.ConsumerGroup));
            }
        }

        OnConsumed();
        return Settlement.Ack;
    }

    private async ValueTask<Settlement> ContinueAfterFailureAsync(
        TMessage message, Envelope envelope, ExceptionDispatchInfo firstFailure, CancellationToken cancellationToken)
    {
        if (_pipeline is null || cancellationToken.IsCancellationRequested || IsStop(firstFailure.SourceException, cancellationToken))
        {
            return OnFailed(envelope, firstFailure.SourceException, cancellationToken);
        }

        // Replays the failed first attempt into Polly, then lets it run the retries.
        var state = new RetryState(_invoker, message, envelope, _identity, firstFailure);
        try
        {
            await _pipeline.ExecuteAsync(
                static (s, ct) =>
                {
                    if (s.FirstFailure is { } failure)
                    {
                        s.FirstFailure = null;
                        failure.Throw();
                    }

                    return s.Invoker.InvokeAsync(s.Message, s.Envelope, s.Identity, ct);
                },
                state,
                cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            return OnFailed(envelope, ex, cancellationToken);
        }

        OnConsumed();
        return Settlement.Ack;
    }

    private Settlement OnFailed(in Envelope envelope, Exception exception, CancellationToken cancellationToken)
    {
        if (exception is Storage.DuplicateMessageException duplicate)
        {
            // The handler's unit of work found the message in its consumer's inbox: an earlier copy was handled and
            // committed, so this copy is settled as handled, with no effect.
            HostingLog.Duplicate(_logger, envelope.MessageId, duplicate.Consumer, _identity.Source);
            OnConsumed();
            return Settlement.Ack;
        }

        if (IsStop(exception, cancellationToken))
        {
            if (exception is HandlerStoppedException)
            {
                // Its handler gives messages up because the host stops: a broker would hand this one straight back.
                _stop?.StopTakingDeliveries();
            }

            // Stopped, not failed: the consumer is stopping (its token was cancelled at the drain deadline) or the handler
            // said its host is stopping. The message goes back uncounted, to another consumer or to this one after the
            // restart, so a stop never moves it towards the dead-letter queue.
            var reason = exception is HandlerStoppedException ? exception.Message : "the consumer stopped at its drain deadline";
            HostingLog.Released(_logger, _invoker.HandlerName, envelope.MessageId, _identity.Source, reason);
            return Settlement.Release(reason);
        }

        var tags = PatternsTelemetry.Tags(_system, _identity.Source, _identity.ConsumerGroup);
        PatternsTelemetry.Failed.Add(1, tags);

        if (envelope.DeliveryCount < _options.MaxRedeliveries)
        {
            HostingLog.HandlerFailed(_logger, exception, _invoker.HandlerName, envelope.MessageId, _identity.Source, envelope.DeliveryCount + 1, "redelivered");
            PatternsTelemetry.Retried.Add(1, tags);
            return Settlement.Retry(_options.RedeliveryDelay, exception);
        }

        HostingLog.HandlerFailed(_logger, exception, _invoker.HandlerName, envelope.MessageId, _identity.Source, envelope.DeliveryCount + 1, "dead-lettered");
        return Settlement.DeadLetter(
            $"Handler {_invoker.HandlerName} failed on delivery {envelope.DeliveryCount + 1} with {exception.GetType().FullName}: {exception.Message}",
            exception);
    }

    /// <summary>
    /// Whether <paramref name="exception"/> ended the handler because of a stop rather than a failure: a
    /// <see cref="HandlerStoppedException"/> while the host stops, or a cancellation while the consumer's own token is
    /// cancelled. Any other <see cref="OperationCanceledException"/> (a timeout, a call the handler cancelled), and a
    /// <see cref="HandlerStoppedException"/> thrown while the host is not stopping (it could otherwise come back forever,
    /// never counted), is a failed attempt.
    /// </summary>
    private bool IsStop(Exception exception, CancellationToken cancellationToken) =>
        (exception is HandlerStoppedException && _stop is { HostStopping: true })
        || (exception is OperationCanceledException && cancellationToken.IsCancellationRequested);

    private void OnConsumed()
    {
        if (PatternsTelemetry.Consumed.Enabled)
        {
            PatternsTelemetry.Consumed.Add(1, PatternsTelemetry.Tags(_system, _identity.Source, _identity.ConsumerGroup));
        }
    }

    private bool TryGetMessage(in Envelope envelope, out TMessage message, out Settlement rejection) =>
        MessageMaterializer.TryGet(envelope, _identity.Bus.Registry, _serializer, _logger, _system, _identity.Source, _identity.ConsumerGroup, out message, out rejection);

    private sealed class RetryState(MessageHandlerInvoker<TMessage> invoker, TMessage message, Envelope envelope, ConsumerIdentity identity, ExceptionDispatchInfo firstFailure)
    {
        public MessageHandlerInvoker<TMessage> Invoker { get; } = invoker;

        public TMessage Message { get; } = message;

        public Envelope Envelope { get; } = envelope;

        public ConsumerIdentity Identity { get; } = identity;

        public ExceptionDispatchInfo? FirstFailure { get; set; } = firstFailure;
    }
}
