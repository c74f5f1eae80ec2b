using Patterns.Streaming;

namespace Patterns.Etl;

/// <summary>
/// Names the stage that raised an error, for the dead-letter reasons of a transport source: placed just before a stage of
/// the flow, it sees that stage's errors (and those of the stages after it, which the tag nearer to them saw first)
/// with an exception filter, which records them without catching them.
/// </summary>
/// <typeparam name="T">The type of the rows the stage takes.</typeparam>
internal sealed class EtlStageTag<T>(Stage<T> next, EtlRun run, string stage) : ForwardingStage<T, T>(next)
{
    /// <summary>Tags the stage that <paramref name="stream"/> is about to go through, when the run reads a transport source (other runs blame no message, and are not tagged).</summary>
    public static DataStream<T> Before(DataStream<T> stream, EtlRun run, string stage) =>
        run.MaxUnacknowledged is null ? stream : new OperatorStream<T, T>(stream, null, null, (next, _, _) => new EtlStageTag<T>(next, run, stage), null);

    public override ValueTask OnNextAsync(T item)
    {
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
        catch (Exception ex) when (run.StageFailed(stage, ex))
        {
            throw;
        }
    }
}
