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
}
