namespace Patterns.RequestResponse;

/// <summary>Answers requests of one type.</summary>
/// <typeparam name="TRequest">The request type.</typeparam>
/// <typeparam name="TResponse">The response type.</typeparam>
/// <remarks>Implement <see cref="IRequestContextHandler{TRequest, TResponse}"/> instead to read the request's headers and correlation id, set response headers or send follow-ups.</remarks>
public interface IRequestHandler<in TRequest, TResponse>
{
    /// <summary>Handles one request.</summary>
    /// <param name="request">The request.</param>
    /// <param name="cancellationToken">Cancelled when the caller cancels or the request times out.</param>
    /// <returns>The response. An exception reaches the caller as a <see cref="RequestFailedException"/>.</returns>
    ValueTask<TResponse> HandleAsync(TRequest request, CancellationToken cancellationToken);
}

/// <summary>Answers requests of one type, with the request's context: headers, correlation id, response headers and follow-ups.</summary>
/// <typeparam name="TRequest">The request type.</typeparam>
/// <typeparam name="TResponse">The response type.</typeparam>
/// <remarks>
/// Registered like any request handler (<see cref="RequestResponseBuilder.AddHandler{TRequest, TResponse, THandler}"/>);
/// Patterns calls the overload that takes the context. It extends <see cref="IRequestHandler{TRequest, TResponse}"/>, whose
/// method it implements for you, so code written against the plain interface keeps working.
/// </remarks>
public interface IRequestContextHandler<in TRequest, TResponse> : IRequestHandler<TRequest, TResponse>
{
    /// <summary>Handles one request.</summary>
    /// <param name="request">The request.</param>
    /// <param name="context">The request's envelope and headers, the response's headers, and follow-up sending.</param>
    /// <param name="cancellationToken">Cancelled when the caller cancels or the request times out.</param>
    /// <returns>The response. An exception reaches the caller as a <see cref="RequestFailedException"/>.</returns>
    ValueTask<TResponse> HandleAsync(TRequest request, RequestContext context, CancellationToken cancellationToken);

    /// <summary>Called without a context, e.g. by code that holds the handler as a plain <see cref="IRequestHandler{TRequest, TResponse}"/>.</summary>
    /// <param name="request">The request.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The response.</returns>
    /// <exception cref="InvalidOperationException">Always: this handler needs its context.</exception>
    ValueTask<TResponse> IRequestHandler<TRequest, TResponse>.HandleAsync(TRequest request, CancellationToken cancellationToken) =>
        throw new InvalidOperationException($"'{GetType().FullName}' handles requests with a RequestContext; call it through IRequestClient or pass a context.");
}
