namespace Patterns.Messaging;

/// <summary>
/// Thrown by a message handler that gives its message up, unhandled, because its host (or the component the handler hands
/// the message to) is stopping: not a failure of the message. The kernel's consumer path then releases the delivery
/// (<see cref="Transport.Settlement.Release"/>) instead of failing it: it is delivered again, to another consumer of the
/// group or after the restart, and the attempt counts neither towards <see cref="ConsumerOptions.MaxRedeliveries"/> nor as
/// a failure, and is not retried by the consumer's resilience pipeline.
/// </summary>
/// <remarks>
/// Throw it only for a stop. It is honoured only once the host has begun to stop: thrown while the host runs, it is a failed
/// attempt (counted and dead-lettered as configured, not retried in process), so that it can never bring a message back
/// forever uncounted. After the first such release, the consumer takes no more deliveries for the rest of the stop (a
/// broker would hand the message straight back). Any other exception, an <see cref="OperationCanceledException"/> included
/// (a timeout, a cancelled call), is a failed attempt, retried and then dead-lettered as configured. The consumer's own stop
/// (its token cancelled at the drain deadline) needs no such exception: a handler that throws
/// <see cref="OperationCanceledException"/> for that token is released the same way. Request handlers do not recognise it
/// (their caller gets the exception).
/// </remarks>
public sealed class HandlerStoppedException : OperationCanceledException
{
    /// <summary>Initializes a new instance of the <see cref="HandlerStoppedException"/> class.</summary>
    public HandlerStoppedException()
        : base("The handler stopped because its host is stopping; the message is released to be delivered again.")
    {
    }

    /// <summary>Initializes a new instance of the <see cref="HandlerStoppedException"/> class.</summary>
    /// <param name="message">What stopped.</param>
    public HandlerStoppedException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="HandlerStoppedException"/> class.</summary>
    /// <param name="message">What stopped.</param>
    /// <param name="innerException">The cancellation the stop caused.</param>
    public HandlerStoppedException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="HandlerStoppedException"/> class.</summary>
    /// <param name="message">What stopped.</param>
    /// <param name="innerException">The cancellation the stop caused.</param>
    /// <param name="token">The stopping token that was cancelled.</param>
    public HandlerStoppedException(string message, Exception? innerException, CancellationToken token)
        : base(message, innerException, token)
    {
    }
}
