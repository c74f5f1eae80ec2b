namespace Patterns.Transport;

/// <summary>Thrown when a send finds the destination full and its full mode is <see cref="QueueFullMode.Reject"/>.</summary>
public sealed class QueueFullException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="QueueFullException"/> class.</summary>
    public QueueFullException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="QueueFullException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    public QueueFullException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="QueueFullException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The cause.</param>
    public QueueFullException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="QueueFullException"/> class.</summary>
    /// <param name="queue">The queue that is full.</param>
    /// <param name="capacity">Its capacity.</param>
    public QueueFullException(string queue, int capacity)
        : base($"Queue '{queue}' is full (capacity {capacity}) and rejects new messages.")
    {
        Queue = queue;
        Capacity = capacity;
    }

    /// <summary>Gets the queue that is full.</summary>
    public string? Queue { get; }

    /// <summary>Gets the queue's capacity.</summary>
    public int Capacity { get; }
}

/// <summary>Thrown when a message is sent to, or a dead-letter queue is asked of, a queue that does not exist.</summary>
public sealed class QueueNotFoundException : InvalidOperationException
{
    /// <summary>Initializes a new instance of the <see cref="QueueNotFoundException"/> class.</summary>
    public QueueNotFoundException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="QueueNotFoundException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    public QueueNotFoundException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="QueueNotFoundException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The cause.</param>
    public QueueNotFoundException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="QueueNotFoundException"/> class.</summary>
    /// <param name="queue">The queue that does not exist.</param>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The cause, if any.</param>
    public QueueNotFoundException(string queue, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Queue = queue;
    }

    /// <summary>Gets the queue that does not exist.</summary>
    public string? Queue { get; }
}

/// <summary>Thrown when a message's payload is larger than the transport accepts.</summary>
public sealed class MessageTooLargeException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="MessageTooLargeException"/> class.</summary>
    public MessageTooLargeException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="MessageTooLargeException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    public MessageTooLargeException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="MessageTooLargeException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The cause.</param>
    public MessageTooLargeException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="MessageTooLargeException"/> class.</summary>
    /// <param name="destination">Where the message was going.</param>
    /// <param name="size">The payload size in bytes.</param>
    /// <param name="limit">The transport's limit in bytes.</param>
    public MessageTooLargeException(string destination, long size, long limit)
        : base($"The message to '{destination}' has a {size}-byte payload, larger than the transport's limit of {limit} bytes.")
    {
        Size = size;
        Limit = limit;
    }

    /// <summary>Initializes a new instance of the <see cref="MessageTooLargeException"/> class.</summary>
    /// <param name="destination">Where the message was going.</param>
    /// <param name="size">The payload size in bytes.</param>
    /// <param name="limit">The transport's limit in bytes.</param>
    /// <param name="limitOption">The option that sets the limit, e.g. <c>RabbitMqTransportOptions.MaxPayloadBytes</c>.</param>
    public MessageTooLargeException(string destination, long size, long limit, string limitOption)
        : base($"The message to '{destination}' has a {size}-byte payload, larger than the transport's limit of {limit} bytes (set by {limitOption}).")
    {
        Size = size;
        Limit = limit;
        LimitOption = limitOption;
    }

    /// <summary>Gets the option that sets the limit, when the transport named it.</summary>
    public string? LimitOption { get; }

    /// <summary>Gets the payload size in bytes.</summary>
    public long Size { get; }

    /// <summary>Gets the limit in bytes.</summary>
    public long Limit { get; }
}

/// <summary>
/// Thrown when a transport cannot reach its broker or server, or lost the connection while an operation
/// (a send, or a request waiting for its response) was in flight; on a broker-less transport (peer links), also when a
/// send's only consumers are on nodes that cannot be reached now (down or reconnecting). The condition is expected to pass:
/// retry later (the gateway answers it with 503 and <c>Retry-After</c>).
/// </summary>
public sealed class TransportUnavailableException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="TransportUnavailableException"/> class.</summary>
    public TransportUnavailableException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="TransportUnavailableException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    public TransportUnavailableException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="TransportUnavailableException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The cause.</param>
    public TransportUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
