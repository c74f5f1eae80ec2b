namespace Patterns.Transport;

/// <summary>
/// The failure of a handler that ran in another process, carried back by a transport that settles on the sender's
/// side (peer links): the original exception cannot cross the process boundary, so its type name and message do.
/// Dead-letter records name <see cref="RemoteType"/>, not this type, so they read the same wherever the handler ran.
/// </summary>
internal sealed class RemoteHandlerException : Exception
{
    public RemoteHandlerException()
    {
    }

    public RemoteHandlerException(string message)
        : base(message)
    {
    }

    public RemoteHandlerException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public RemoteHandlerException(string remoteType, string message)
        : base(message) => RemoteType = remoteType;

    /// <summary>Gets the full type name of the exception the remote handler threw.</summary>
    public string? RemoteType { get; }

    /// <summary>Gets the type name a dead-letter record shows for <paramref name="exception"/>.</summary>
    public static string TypeNameOf(Exception exception) =>
        exception is RemoteHandlerException { RemoteType: { } remote } ? remote : exception.GetType().FullName ?? exception.GetType().Name;
}
