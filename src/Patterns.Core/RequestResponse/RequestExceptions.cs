namespace Patterns.RequestResponse;

/// <summary>Thrown when a request has no handler.</summary>
public sealed class HandlerNotFoundException : InvalidOperationException
{
    /// <summary>Initializes a new instance of the <see cref="HandlerNotFoundException"/> class.</summary>
    public HandlerNotFoundException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="HandlerNotFoundException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    public HandlerNotFoundException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="HandlerNotFoundException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The cause.</param>
    public HandlerNotFoundException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="HandlerNotFoundException"/> class.</summary>
    /// <param name="requestType">The request type that has no handler.</param>
    /// <param name="responseType">The response type asked for.</param>
    public HandlerNotFoundException(Type requestType, Type responseType)
        : base($"No request handler is registered for request type '{requestType?.FullName}' with response type '{responseType?.FullName}'. Register one with AddRequestResponse(r => r.AddHandler<{requestType?.Name}, {responseType?.Name}, ...>()).")
    {
        RequestType = requestType;
    }

    /// <summary>Gets the request type that has no handler.</summary>
    public Type? RequestType { get; }
}

/// <summary>Thrown to the caller when a request handler failed; carries the remote error's type and message.</summary>
public sealed class RequestFailedException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="RequestFailedException"/> class.</summary>
    public RequestFailedException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="RequestFailedException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    public RequestFailedException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="RequestFailedException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The cause.</param>
    public RequestFailedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="RequestFailedException"/> class.</summary>
    /// <param name="requestType">The request's logical type name.</param>
    /// <param name="remoteErrorType">The full type name of the handler's exception.</param>
    /// <param name="remoteMessage">The handler's exception message.</param>
    /// <param name="innerException">The handler's exception itself, when the handler ran in this process.</param>
    public RequestFailedException(string requestType, string remoteErrorType, string remoteMessage, Exception? innerException)
        : base($"The handler for request '{requestType}' failed with {remoteErrorType}: {remoteMessage}", innerException)
    {
        RequestType = requestType;
        RemoteErrorType = remoteErrorType;
        RemoteMessage = remoteMessage;
    }

    /// <summary>Gets the request's logical type name.</summary>
    public string? RequestType { get; }

    /// <summary>Gets the full type name of the exception the handler threw.</summary>
    public string? RemoteErrorType { get; }

    /// <summary>Gets the message of the exception the handler threw.</summary>
    public string? RemoteMessage { get; }
}

/// <summary>Thrown when no response arrived within the request's timeout.</summary>
public sealed class RequestTimeoutException : TimeoutException
{
    /// <summary>Initializes a new instance of the <see cref="RequestTimeoutException"/> class.</summary>
    public RequestTimeoutException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="RequestTimeoutException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    public RequestTimeoutException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="RequestTimeoutException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The cause.</param>
    public RequestTimeoutException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="RequestTimeoutException"/> class.</summary>
    /// <param name="requestType">The request's logical type name.</param>
    /// <param name="timeout">The timeout that passed.</param>
    public RequestTimeoutException(string requestType, TimeSpan timeout)
        : base($"No response to request '{requestType}' arrived within {timeout}.")
    {
        RequestType = requestType;
        Timeout = timeout;
    }

    /// <summary>Gets the request's logical type name.</summary>
    public string? RequestType { get; }

    /// <summary>Gets the timeout that passed.</summary>
    public TimeSpan Timeout { get; }
}
