using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Logging;

namespace Patterns.Streaming;

/// <summary>Options of one stream pipeline, given to its source (<see cref="DataStream.From{T}(IAsyncEnumerable{T}, StreamOptions?)"/> and the other sources).</summary>
public sealed class StreamOptions
{
    /// <summary>Gets or sets the pipeline's name, used in logs, telemetry, dead letters and snapshots.</summary>
    /// <value>Default <see langword="null"/>: the name it is registered under on the host, or <c>stream</c>.</value>
    public string? Name { get; set; }

    /// <summary>
    /// Gets or sets the capacity of every buffer between stages that run concurrently: each partition's input
    /// (<see cref="DataStream{T}.PartitionBy"/>), the merge in front of the sink, and the input of a transport source.
    /// A full buffer makes the stage in front of it wait, so memory stays flat when the sink is slow.
    /// </summary>
    /// <value>Default 256.</value>
    [Range(1, 10_000_000)]
    public int BufferCapacity { get; set; } = 256;

    /// <summary>Gets or sets the failure policy of stages that are not given one.</summary>
    /// <value>Default <see cref="FailurePolicy.Stop"/>.</value>
    public FailurePolicy DefaultFailurePolicy { get; set; } = FailurePolicy.Stop;

    /// <summary>Gets or sets the dead-letter output: elements skipped by a <see cref="FailurePolicy.Resume"/> stage, with their exception, and late events of windows that have no late output of their own.</summary>
    /// <value>Default <see langword="null"/>: each is logged as a warning and counted in <c>patterns.messages.dead_lettered</c>.</value>
    public Func<StreamDeadLetter, CancellationToken, ValueTask>? OnDeadLetter { get; set; }

    /// <summary>Gets or sets where window state is saved when the pipeline stops, and loaded from when it starts.</summary>
    /// <value>Default <see langword="null"/>: on the host, the registered <see cref="IStreamSnapshotStore"/>; otherwise none.</value>
    public IStreamSnapshotStore? SnapshotStore { get; set; }

    /// <summary>
    /// Gets or sets how often the pipeline saves a snapshot while it runs, on its <see cref="TimeProvider"/>, besides the
    /// one it saves when it stops. The snapshot is taken between two elements; with a store that has units of work it
    /// commits together with the results a transactional sink (<see cref="DataStream{T}.ToDocuments"/>) emitted since the
    /// last one, and a transport source acknowledges the messages it includes only then. Needs a pipeline without
    /// <c>SelectAsync</c> and <c>PartitionBy</c> (the run fails at start otherwise).
    /// </summary>
    /// <value>Default <see langword="null"/>: a snapshot only when the pipeline stops (or when <see cref="MaxUnacknowledged"/> is reached).</value>
    public TimeSpan? SnapshotInterval { get; set; }

    /// <summary>
    /// Gets or sets how many messages a transport source holds unacknowledged until a snapshot that includes them
    /// commits, when snapshots go to a store with units of work; reaching it forces a snapshot. It is also how many
    /// deliveries the transport hands over at once.
    /// </summary>
    /// <value>Default 256.</value>
    [Range(1, 1_000_000)]
    public int MaxUnacknowledged { get; set; } = 256;

    /// <summary>Gets or sets the clock for processing-time windows and retry delays.</summary>
    /// <value>Default <see langword="null"/>: the host's <see cref="System.TimeProvider"/>, or the system clock.</value>
    public TimeProvider? TimeProvider { get; set; }

    /// <summary>Gets or sets where the pipeline logs.</summary>
    /// <value>Default <see langword="null"/>: the host's logging, or nowhere.</value>
    public ILoggerFactory? LoggerFactory { get; set; }
}

/// <summary>An element a stage skipped (or a late event without a late output of its own), with why.</summary>
/// <param name="Pipeline">The pipeline's name.</param>
/// <param name="Stage">The stage that failed, for example <c>Select@2</c>.</param>
/// <param name="Element">The element.</param>
/// <param name="Exception">The failure (<see cref="LateEventException"/> for a late event).</param>
/// <param name="At">When, from the pipeline's <see cref="TimeProvider"/>.</param>
public sealed record StreamDeadLetter(string Pipeline, string Stage, object? Element, Exception Exception, DateTimeOffset At);

/// <summary>Records in the dead-letter output that an event arrived after its windows had closed for good.</summary>
public sealed class LateEventException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="LateEventException"/> class.</summary>
    public LateEventException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="LateEventException"/> class.</summary>
    /// <param name="message">What happened.</param>
    public LateEventException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="LateEventException"/> class.</summary>
    /// <param name="message">What happened.</param>
    /// <param name="innerException">The cause.</param>
    public LateEventException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
