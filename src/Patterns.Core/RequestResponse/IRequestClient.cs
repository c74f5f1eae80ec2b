using Patterns.Messaging;

namespace Patterns.RequestResponse;

/// <summary>Sends requests and waits for their responses.</summary>
/// <remarks>
/// On the in-memory transport the handler is called directly on the caller's thread: a handler that
/// completes synchronously costs no allocation and no thread hop. On other transports the request travels
/// as a message and the response comes back on a reply queue.
/// </remarks>
public interface IRequestClient
{
    /// <summary>Sends a request with the default timeout (<see cref="RequestResponseOptions.DefaultTimeout"/>).</summary>
    /// <typeparam name="TRequest">The request type.</typeparam>
    /// <typeparam name="TResponse">The response type.</typeparam>
    /// <param name="request">The request.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>The response.</returns>
    /// <exception cref="HandlerNotFoundException">No handler is registered for <typeparamref name="TRequest"/>.</exception>
    /// <exception cref="RequestFailedException">The handler threw; carries the remote error type and message.</exception>
    /// <exception cref="RequestTimeoutException">No response arrived within the timeout.</exception>
    /// <exception cref="Transport.TransportUnavailableException">The transport lost its connection before the response arrived, or could not reach its broker in time.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    ValueTask<TResponse> SendAsync<TRequest, TResponse>(TRequest request, CancellationToken cancellationToken = default)
        where TRequest : notnull;

    /// <summary>Sends a request with its own timeout.</summary>
    /// <typeparam name="TRequest">The request type.</typeparam>
    /// <typeparam name="TResponse">The response type.</typeparam>
    /// <param name="request">The request.</param>
    /// <param name="timeout">How long to wait; <see cref="Timeout.InfiniteTimeSpan"/> for no limit.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>The response.</returns>
    /// <exception cref="HandlerNotFoundException">No handler is registered for <typeparamref name="TRequest"/>.</exception>
    /// <exception cref="RequestFailedException">The handler threw; carries the remote error type and message.</exception>
    /// <exception cref="RequestTimeoutException">No response arrived within <paramref name="timeout"/>.</exception>
    /// <exception cref="Transport.TransportUnavailableException">The transport lost its connection before the response arrived, or could not reach its broker in time.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    ValueTask<TResponse> SendAsync<TRequest, TResponse>(TRequest request, TimeSpan timeout, CancellationToken cancellationToken = default)
        where TRequest : notnull;

    /// <summary>Sends a request whose type names its response (<see cref="IRequest{TResponse}"/>), with the default timeout: <c>await client.SendAsync(new GetQuote("MSFT"))</c>.</summary>
    /// <typeparam name="TResponse">The response type, inferred from the request.</typeparam>
    /// <param name="request">The request; its handler is found by its run-time type.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>The response.</returns>
    /// <exception cref="HandlerNotFoundException">No handler is registered for the request's type and <typeparamref name="TResponse"/>.</exception>
    /// <exception cref="RequestFailedException">The handler threw; carries the remote error type and message.</exception>
    /// <exception cref="RequestTimeoutException">No response arrived within the timeout.</exception>
    ValueTask<TResponse> SendAsync<TResponse>(IRequest<TResponse> request, CancellationToken cancellationToken = default);

    /// <summary>Sends a request whose type names its response (<see cref="IRequest{TResponse}"/>), with its own timeout.</summary>
    /// <typeparam name="TResponse">The response type, inferred from the request.</typeparam>
    /// <param name="request">The request; its handler is found by its run-time type.</param>
    /// <param name="timeout">How long to wait; <see cref="Timeout.InfiniteTimeSpan"/> for no limit.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>The response.</returns>
    /// <exception cref="HandlerNotFoundException">No handler is registered for the request's type and <typeparamref name="TResponse"/>.</exception>
    /// <exception cref="RequestFailedException">The handler threw; carries the remote error type and message.</exception>
    /// <exception cref="RequestTimeoutException">No response arrived within <paramref name="timeout"/>.</exception>
    ValueTask<TResponse> SendAsync<TResponse>(IRequest<TResponse> request, TimeSpan timeout, CancellationToken cancellationToken = default);

    /// <summary>
    /// Sends a request with headers, a correlation id or a message id of the caller's choosing, and returns the response with
    /// the headers its handler set (<see cref="RequestContext.ResponseHeaders"/>).
    /// </summary>
    /// <typeparam name="TRequest">The request type.</typeparam>
    /// <typeparam name="TResponse">The response type.</typeparam>
    /// <param name="request">The request.</param>
    /// <param name="options">Headers, correlation id, causation id and message id for the request (<see cref="MessageOptions"/>).</param>
    /// <param name="timeout">How long to wait; <see cref="RequestResponseOptions.DefaultTimeout"/> when <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>The response and its headers.</returns>
    /// <exception cref="HandlerNotFoundException">No handler is registered for <typeparamref name="TRequest"/>.</exception>
    /// <exception cref="RequestFailedException">The handler threw; carries the remote error type and message.</exception>
    /// <exception cref="RequestTimeoutException">No response arrived within the timeout.</exception>
    ValueTask<Response<TResponse>> GetResponseAsync<TRequest, TResponse>(TRequest request, MessageOptions options, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
        where TRequest : notnull;
}
