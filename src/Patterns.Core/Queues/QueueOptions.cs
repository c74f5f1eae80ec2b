using System.ComponentModel.DataAnnotations;
using Patterns.Transport;

namespace Patterns.Queues;

/// <summary>Options of one point-to-point queue.</summary>
public sealed class QueueOptions
{
    /// <summary>Gets or sets how many messages the queue buffers before senders wait (or are rejected).</summary>
    /// <value>
    /// Default 1024. On the in-memory transport the buffer is split into one lane per consumer worker of
    /// ⌈Capacity ÷ workers⌉ each; messages buffered while no consumer was attached stay in the first worker's lane,
    /// so the bound is at most twice <see cref="Capacity"/>.
    /// </value>
    [Range(1, 10_000_000)]
    public int Capacity { get; set; } = 1024;

    /// <summary>Gets or sets what a send does when the queue is full.</summary>
    /// <value>Default <see cref="QueueFullMode.Wait"/>: the sender waits for space.</value>
    public QueueFullMode FullMode { get; set; } = QueueFullMode.Wait;

    /// <summary>Gets or sets the capacity of the queue's dead-letter queue.</summary>
    /// <value>Default 10,000; the oldest dead letters are discarded, and logged, past it.</value>
    [Range(0, 10_000_000)]
    public int DeadLetterCapacity { get; set; } = 10_000;
}
