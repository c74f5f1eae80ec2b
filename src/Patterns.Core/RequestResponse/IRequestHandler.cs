namespace Patterns.RequestResponse;

/// <summary>Answers requests of one type.</summary>
/// <typeparam name="TRequest">The request type.</typeparam>
/// <typeparam name="TResponse">The response type.</typeparam>
public interface IRequestHandler<in TRequest, TResponse>
{
    /// <summary>Handles one request.</summary>
    /// <param name="request">The request.</param>
    /// <param name="cancellationToken">Cancelled when the caller cancels or the request times out.</param>
    /// <returns>The response. An exception reaches the caller as a <see cref="RequestFailedException"/>.</returns>
    ValueTask<TResponse> HandleAsync(TRequest request, CancellationToken cancellationToken);
}
