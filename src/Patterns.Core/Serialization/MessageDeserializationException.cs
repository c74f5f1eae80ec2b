namespace Patterns.Serialization;

/// <summary>Thrown when a payload cannot be turned back into a message body.</summary>
public sealed class MessageDeserializationException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="MessageDeserializationException"/> class.</summary>
    public MessageDeserializationException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="MessageDeserializationException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    public MessageDeserializationException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="MessageDeserializationException"/> class.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The serializer's exception.</param>
    public MessageDeserializationException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
