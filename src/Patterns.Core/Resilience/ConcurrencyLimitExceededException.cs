namespace Patterns.Resilience;

/// <summary>Thrown when a call finds every concurrency permit taken and the wait queue full.</summary>
public sealed class ConcurrencyLimitExceededException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="ConcurrencyLimitExceededException"/> class.</summary>
    public ConcurrencyLimitExceededException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="ConcurrencyLimitExceededException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    public ConcurrencyLimitExceededException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="ConcurrencyLimitExceededException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The cause.</param>
    public ConcurrencyLimitExceededException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
