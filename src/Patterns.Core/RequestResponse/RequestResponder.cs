using Microsoft.Extensions.Logging;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.RequestResponse;

/// <summary>Answers requests that travel over a transport: calls the handler and sends the response (or the error) to the reply address.</summary>
internal sealed class RequestResponder<TRequest, TResponse>(
    RequestHandlerEntry<TRequest, TResponse> entry, MessageBus bus, IMessageSerializer serializer, ILogger logger)
    where TRequest : notnull
{
    internal static readonly ReadOnlyMemory<byte> EmptyJsonObject = "{}"u8.ToArray();

    public async ValueTask<Settlement> HandleAsync(Envelope envelope, CancellationToken cancellationToken)
    {
        if (envelope.ReplyTo is not { Length: > 0 } replyTo)
        {
            return Settlement.DeadLetter($"Request {envelope.MessageId} of type '{envelope.MessageType}' has no ReplyTo address, so it cannot be answered.");
        }

        Envelope reply;
        try
        {
            var request = envelope.Body is TRequest typed
                ? typed
                : envelope.PayloadLength == 0
                    ? throw new MessageDeserializationException($"The request has no body of type '{typeof(TRequest).FullName}'.")
                    : (TRequest)serializer.Deserialize(envelope.PayloadSequence, typeof(TRequest));
            var context = entry.WantsContext ? new RequestContext(envelope, entry.Services, bus) : null;
            var response = await entry.InvokeFilteredAsync(request, context, envelope, cancellationToken).ConfigureAwait(false);
            reply = new Envelope
            {
                MessageId = MessageIds.Next(),
                CorrelationId = envelope.MessageId,
                CausationId = envelope.MessageId,
                MessageType = response is null ? null : bus.Registry.GetName(response.GetType()),
                Body = response,
                Payload = response is null ? EmptyJsonObject : default,
                SentAt = bus.TimeProvider.GetUtcNow(),
                TraceParent = envelope.TraceParent,
                TraceState = envelope.TraceState,
                Headers = context?.ResponseHeadersOrNull,
            };
        }
        catch (Storage.DuplicateMessageException ex) when (ex.MessageId == envelope.MessageId.ToString())
        {
            // With de-duplication, the handler's store session claimed this request in its commit, and a copy handled at
            // the same time (in another process) committed first: that copy answers. An error reply from this one could
            // reach the caller first and fail a request that was handled.
            HostingLog.Duplicate(logger, envelope.MessageId, ex.Consumer, entry.Queue);
            return Settlement.Ack;
        }
        catch (Exception ex)
        {
            reply = new Envelope
            {
                MessageId = MessageIds.Next(),
                CorrelationId = envelope.MessageId,
                CausationId = envelope.MessageId,
                Payload = EmptyJsonObject,
                ContentType = "application/json",
                SentAt = bus.TimeProvider.GetUtcNow(),
                Headers = new Dictionary<string, string>(StringComparer.Ordinal)
                {
                    [EnvelopeHeaders.ResponseError] = "true",
                    [EnvelopeHeaders.ExceptionType] = ex.GetType().FullName ?? ex.GetType().Name,
                    [EnvelopeHeaders.ExceptionMessage] = ex.Message,
                },
            };
        }

        try
        {
            await bus.Transport.SendAsync(replyTo, reply, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // The caller is gone (or its reply queue is): its own timeout reports the failure.
            HostingLog.ReplyFailed(logger, ex, envelope.MessageId, replyTo);
        }

        return Settlement.Ack;
    }
}
