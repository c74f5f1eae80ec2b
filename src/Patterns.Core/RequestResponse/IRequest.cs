namespace Patterns.RequestResponse;

/// <summary>
/// Marks a request with its response type, so that <see cref="IRequestClient.SendAsync{TResponse}(IRequest{TResponse}, CancellationToken)"/>
/// infers both types from the request alone: <c>await client.SendAsync(new GetQuote("MSFT"))</c>.
/// </summary>
/// <typeparam name="TResponse">The response type.</typeparam>
/// <remarks>A marker: it has no members, and a request need not implement it (the two-type-argument overloads take any request).</remarks>
#pragma warning disable CA1040 // A marker interface is the point: it carries the response type to the compiler.
public interface IRequest<out TResponse>
#pragma warning restore CA1040
{
}
