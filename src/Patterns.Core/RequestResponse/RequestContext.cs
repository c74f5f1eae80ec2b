using Patterns.Hosting;
using Patterns.Messaging;

namespace Patterns.RequestResponse;

/// <summary>
/// What a request handler knows about the request it answers (headers, correlation id, the envelope), the headers it
/// wants on its response, and a way to send follow-up messages that continue the request's conversation.
/// </summary>
/// <remarks>
/// Created only for handlers that implement <see cref="IRequestContextHandler{TRequest, TResponse}"/> or take a context
/// delegate, so a plain <see cref="IRequestHandler{TRequest, TResponse}"/> pays nothing for it. Valid until the handler's
/// task completes.
/// </remarks>
public sealed class RequestContext
{
    private readonly MessageBus _bus;
    private Dictionary<string, string>? _responseHeaders;

    internal RequestContext(in Envelope envelope, IServiceProvider services, MessageBus bus)
    {
        Envelope = envelope;
        Services = services;
        _bus = bus;
    }

    /// <summary>Gets the envelope the request arrived in; in-process, the envelope the client built for it.</summary>
    public Envelope Envelope { get; private set; }

    /// <summary>Gets the services of the handler's scope.</summary>
    public IServiceProvider Services { get; private set; }

    /// <summary>Gets the request's message id.</summary>
    public Guid MessageId => Envelope.MessageId;

    /// <summary>Gets the request's correlation id: the one its sender gave, or else the request's own message id.</summary>
    public Guid CorrelationId => Envelope.CorrelationId ?? Envelope.MessageId;

    /// <summary>Gets the headers the sender put on the request; empty when it put none.</summary>
    public IReadOnlyDictionary<string, string> Headers => Envelope.Headers ?? EmptyHeaders.Instance;

    /// <summary>Gets the headers to put on the response. The caller reads them from <see cref="Response{TResponse}.Headers"/> (see <see cref="IRequestClient.GetResponseAsync"/>).</summary>
    public IDictionary<string, string> ResponseHeaders => _responseHeaders ??= new Dictionary<string, string>(StringComparer.Ordinal);

    internal IReadOnlyDictionary<string, string>? ResponseHeadersOrNull => _responseHeaders is { Count: > 0 } headers ? headers : null;

    /// <summary>Publishes a follow-up message to a topic, with this request's correlation id and the request as its cause.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="topic">The topic; the message type's name when <see langword="null"/>.</param>
    /// <param name="message">The message.</param>
    /// <param name="cancellationToken">Cancels waiting for buffer space.</param>
    /// <returns>A task that completes when the transport has accepted the message.</returns>
    public ValueTask PublishAsync<TMessage>(string? topic, TMessage message, CancellationToken cancellationToken = default)
        where TMessage : notnull =>
        _bus.PublishCoreAsync(topic, message, FollowUp(), cancellationToken);

    /// <summary>Sends a follow-up message to a queue, with this request's correlation id and the request as its cause.</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="queue">The queue.</param>
    /// <param name="message">The message.</param>
    /// <param name="cancellationToken">Cancels waiting for queue space.</param>
    /// <returns>A task that completes when the transport has accepted the message.</returns>
    public ValueTask SendAsync<TMessage>(string queue, TMessage message, CancellationToken cancellationToken = default)
        where TMessage : notnull =>
        _bus.SendAsync(queue, message, FollowUp(), cancellationToken);

    internal void UseEnvelope(in Envelope envelope) => Envelope = envelope;

    internal void UseScope(IServiceProvider services) => Services = services;

    private MessageOptions FollowUp() => new() { CorrelationId = CorrelationId, CausationId = Envelope.MessageId };

    private static class EmptyHeaders
    {
        public static readonly IReadOnlyDictionary<string, string> Instance = new Dictionary<string, string>(0, StringComparer.Ordinal);
    }
}
