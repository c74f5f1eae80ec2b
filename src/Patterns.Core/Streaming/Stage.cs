namespace Patterns.Streaming;

/// <summary>
/// One push stage of a running pipeline. Stages between two concurrency boundaries are called synchronously,
/// one element at a time, by the driver that owns them (never concurrently), so they keep state without locks.
/// Every method returns a completed <see cref="ValueTask"/> unless it really had to wait (a slow sink, a full buffer).
/// </summary>
internal abstract class Stage<T>
{
    /// <summary>Handles one element.</summary>
    public abstract ValueTask OnNextAsync(T item);

    /// <summary>
    /// The input ended. <paramref name="final"/>: the source is exhausted, so windows fire and buffers flush;
    /// otherwise the pipeline is stopping to resume later, so windows keep their state (for the snapshot).
    /// </summary>
    public abstract ValueTask OnCompletedAsync(bool final);

    /// <summary>A timer fired on the owning driver (processing-time windows); forwarded down the chain.</summary>
    public abstract ValueTask OnTickAsync();
}

/// <summary>A stage with one downstream stage; forwards completion and ticks.</summary>
internal abstract class ForwardingStage<TIn, TOut>(Stage<TOut> next) : Stage<TIn>
{
    protected Stage<TOut> Next { get; } = next;

    public override ValueTask OnCompletedAsync(bool final) => Next.OnCompletedAsync(final);

    public override ValueTask OnTickAsync() => Next.OnTickAsync();
}

/// <summary>What a stage being built knows: the run, the partition it runs in, and the driver that calls it.</summary>
internal sealed record ChainContext(RunContext Run, int Partition, int PartitionCount, Driver Driver)
{
    /// <summary>The stage's name for logs, dead letters and snapshots: kind and position, plus the partition.</summary>
    public string StageId(string kind, int depth) => Partition < 0 ? $"{kind}@{depth}" : $"{kind}@{depth}#p{Partition}";
}
