namespace Patterns.RequestResponse;

/// <summary>A response with the headers its handler set on it.</summary>
/// <typeparam name="TResponse">The response type.</typeparam>
public readonly struct Response<TResponse>
{
    private static readonly IReadOnlyDictionary<string, string> NoHeaders = new Dictionary<string, string>(0, StringComparer.Ordinal);

    internal Response(TResponse message, IReadOnlyDictionary<string, string>? headers)
    {
        Message = message;
        Headers = headers ?? NoHeaders;
    }

    /// <summary>Gets the response.</summary>
    public TResponse Message { get; }

    /// <summary>Gets the headers the handler added through <see cref="RequestContext.ResponseHeaders"/>; empty when it added none.</summary>
    public IReadOnlyDictionary<string, string> Headers { get; }
}
