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

    /// <summary>
    /// A periodic snapshot is being taken between two elements: stateful stages save their state, a transactional sink
    /// hands over the results it holds; forwarded down the chain.
    /// </summary>
    public virtual ValueTask OnCheckpointAsync() => default;
}

/// <summary>A stage with one downstream stage; forwards completion and ticks.</summary>
internal abstract class ForwardingStage<TIn, TOut>(Stage<TOut> next) : Stage<TIn>
{
    protected Stage<TOut> Next { get; } = next;

    public override ValueTask OnCompletedAsync(bool final) => Next.OnCompletedAsync(final);

    public override ValueTask OnTickAsync() => Next.OnTickAsync();

    public override ValueTask OnCheckpointAsync() => Next.OnCheckpointAsync();
}

/// <summary>What a stage being built knows: the run, the partition it runs in, and the driver that calls it.</summary>
internal sealed record ChainContext(RunContext Run, int Partition, int PartitionCount, Driver Driver)
{
    /// <summary>
    /// The stage's id for logs, dead letters and snapshots: its name, plus the partition. Registers it with the run,
    /// which fails on a second stage of the same id.
    /// </summary>
    public string StageId(string name)
    {
        var id = Partition < 0 ? name : $"{name}#p{Partition}";
        Run.RegisterStage(id);
        return id;
    }
}

/// <summary>Stage names: given with an operator's <c>name:</c> argument, or derived from its kind and position.</summary>
internal static class StageNames
{
    /// <summary>The name of a stage: <paramref name="name"/>, or <c>{kind}@{position}</c> (for example <c>Select@1</c>) without one.</summary>
    public static string Of(string? name, string kind, int depth) => name ?? $"{kind}@{depth.ToString(System.Globalization.CultureInfo.InvariantCulture)}";

    /// <summary>Checks a name given to an operator.</summary>
    public static string? Validate(string? name, string parameter = "name")
    {
        if (name is null)
        {
            return null;
        }

        if (string.IsNullOrWhiteSpace(name))
        {
            throw new ArgumentException("A stage name must not be empty or white space.", parameter);
        }

        if (name.Contains('#', StringComparison.Ordinal))
        {
            throw new ArgumentException($"Stage name '{name}' contains '#', which separates a stage name from its partition ('{{name}}#p2').", parameter);
        }

        return name;
    }
}
