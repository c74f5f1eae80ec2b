using Patterns.Streaming;

namespace Patterns.Etl;

/// <summary>
/// Placed just before a stage of the flow: counts the rows that reach it, for the run's per-stage progress
/// (<see cref="EtlStageProgress"/>), a synchronous call in the stream's chain that allocates nothing per row (the loader
/// counts the rows that reach the sink itself), and, when the run reads a transport source, names the stage (or the
/// loader) that raised an
/// error, for the dead-letter reasons: it sees that stage's errors (and those of the stages after it, which the tag
/// nearer to them saw first) with an exception filter, which records them without catching them.
/// </summary>
/// <typeparam name="T">The type of the rows the stage takes.</typeparam>
internal sealed class EtlStageTag<T>(Stage<T> next, EtlRun run, string? stage, int index) : ForwardingStage<T, T>(next)
{
    private readonly EtlStageCounts _counts = run.StageCounts;

    /// <summary>Counts the rows that reach stage <paramref name="index"/>, and tags it when the run reads a transport source (other runs blame no message, and are not tagged).</summary>
    public static DataStream<T> Before(DataStream<T> stream, EtlRun run, string stage, int index) =>
        new OperatorStream<T, T>(stream, null, null, (next, _, _) => new EtlStageTag<T>(next, run, run.MaxUnacknowledged is null ? null : stage, index), null);

    /// <summary>Counts the rows that reach stage <paramref name="index"/>, without tagging it.</summary>
    public static DataStream<T> Counted(DataStream<T> stream, EtlRun run, int index) =>
        new OperatorStream<T, T>(stream, null, null, (next, _, _) => new EtlStageTag<T>(next, run, null, index), null);

    /// <summary>Tags <paramref name="stage"/> without counting its rows (the loader counts its own).</summary>
    public static DataStream<T> Tagged(DataStream<T> stream, EtlRun run, string stage) =>
        new OperatorStream<T, T>(stream, null, null, (next, _, _) => new EtlStageTag<T>(next, run, stage, -1), null);

    public override ValueTask OnNextAsync(T item)
    {
        if (index >= 0)
        {
            _counts.In(index);
        }

        if (stage is null)
        {
            return Next.OnNextAsync(item);
        }

        try
        {
            var handled = Next.OnNextAsync(item);
            return handled.IsCompletedSuccessfully ? default : AwaitAsync(handled);
        }
        catch (Exception ex) when (run.StageFailed(stage, ex))
        {
            throw;
        }
    }

    public override ValueTask OnCompletedAsync(bool final)
    {
        if (stage is null)
        {
            return Next.OnCompletedAsync(final);
        }

        try
        {
            var completed = Next.OnCompletedAsync(final);
            return completed.IsCompletedSuccessfully ? default : AwaitAsync(completed);
        }
        catch (Exception ex) when (run.StageFailed(stage, ex))
        {
            throw;
        }
    }

    private async ValueTask AwaitAsync(ValueTask pending)
    {
        try
        {
            await pending.ConfigureAwait(false);
        }
        catch (Exception ex) when (run.StageFailed(stage!, ex))
        {
            throw;
        }
    }
}

/// <summary>
/// The rows that reached each stage of a run and those each quarantined: stage 0 is the source, 1 to n the flow's
/// stages, n + 1 the sink. Each stage's count is written by the one task that runs the stage and read, a little behind,
/// by the loader when it reports progress.
/// </summary>
internal sealed class EtlStageCounts
{
    private readonly string[] _labels;
    private readonly long[] _in;
    private readonly long[] _quarantined;
    private readonly long[] _reportedOut;

    public EtlStageCounts(IReadOnlyList<string> stageLabels)
    {
        _labels = ["source", .. stageLabels, "sink"];
        _in = new long[_labels.Length];
        _quarantined = new long[_labels.Length];
        _reportedOut = new long[_labels.Length];
    }

    /// <summary>Counts a row that reached stage <paramref name="index"/> (on the task that runs it).</summary>
    public void In(int index) => _in[index]++;

    /// <summary>Counts a row that reached the sink (on the stream's task, as the loader takes it).</summary>
    public void InSink() => _in[^1]++;

    /// <summary>Counts a row stage <paramref name="index"/> set aside.</summary>
    public void Quarantined(int index) => Interlocked.Increment(ref _quarantined[index]);

    /// <summary>The stages so far: the source's rows in are <paramref name="read"/>, the sink's rows out <paramref name="loaded"/>.</summary>
    public IReadOnlyList<EtlStageProgress> Snapshot(long read, long loaded)
    {
        var stages = new EtlStageProgress[_labels.Length];
        for (var i = 0; i < stages.Length; i++)
        {
            var rowsIn = i == 0 ? read : Volatile.Read(ref _in[i]);
            var rowsOut = i == stages.Length - 1 ? loaded : Volatile.Read(ref _in[i + 1]);
            stages[i] = new EtlStageProgress(i, _labels[i], rowsIn, rowsOut, Volatile.Read(ref _quarantined[i]));
        }

        return stages;
    }

    /// <summary>Adds each stage's rows out since the last call to the <c>patterns.etl.stage.rows</c> counter, when it has listeners.</summary>
    public void Record(long loaded, System.Diagnostics.TagList job)
    {
        if (!EtlTelemetry.StageRows.Enabled)
        {
            return;
        }

        lock (_reportedOut)
        {
            for (var i = 0; i < _labels.Length; i++)
            {
                var rowsOut = i == _labels.Length - 1 ? loaded : Volatile.Read(ref _in[i + 1]);
                if (rowsOut > _reportedOut[i])
                {
                    var tags = job;
                    tags.Add(EtlTelemetry.StageTag, _labels[i]);
                    EtlTelemetry.StageRows.Add(rowsOut - _reportedOut[i], tags);
                    _reportedOut[i] = rowsOut;
                }
            }
        }
    }
}
