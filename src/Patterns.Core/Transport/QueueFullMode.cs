namespace Patterns.Transport;

/// <summary>What a send does when the destination buffer is full.</summary>
public enum QueueFullMode
{
    /// <summary>The sender waits for space (back-pressure). The default.</summary>
    Wait,

    /// <summary>The send fails at once with <see cref="QueueFullException"/>.</summary>
    Reject,
}
