namespace Patterns.Transport;

/// <summary>How a transport should declare a point-to-point queue.</summary>
public sealed record QueueSettings
{
    /// <summary>Gets the most messages the queue holds before <see cref="FullMode"/> applies.</summary>
    /// <value>Default 1024.</value>
    public int Capacity { get; init; } = 1024;

    /// <summary>Gets what a send does when the queue is full.</summary>
    /// <value>Default <see cref="QueueFullMode.Wait"/>.</value>
    public QueueFullMode FullMode { get; init; } = QueueFullMode.Wait;

    /// <summary>Gets the capacity of the queue's dead-letter queue, where the transport bounds it.</summary>
    /// <value>Default 10,000.</value>
    public int DeadLetterCapacity { get; init; } = 10_000;
}
