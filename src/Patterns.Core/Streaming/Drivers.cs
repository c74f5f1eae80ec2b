using System.Runtime.CompilerServices;
using System.Threading.Channels;

namespace Patterns.Streaming;

/// <summary>
/// Pulls elements from one input and pushes them, one at a time, through the stages it owns. Timers of
/// processing-time windows do not call stages directly: they ask the driver for a tick, which the driver
/// delivers between two elements (or wakes up for when the input is idle), so stages are never called concurrently.
/// </summary>
internal abstract class Driver(RunContext run)
{
    private int _tick;
    private int _checkpoint;
    private TaskCompletionSource? _tickSignal;
    private TaskCompletionSource? _barrier;

    protected RunContext Run { get; } = run;

    /// <summary>Gets a value indicating whether a stage of this driver uses timers, so idle waits must wake up for ticks.</summary>
    protected bool UsesTimers { get; private set; }

    protected bool TickPending => Volatile.Read(ref _tick) != 0 || Volatile.Read(ref _checkpoint) != 0 || Volatile.Read(ref _barrier) is not null;

    /// <summary>Gets a value indicating whether the driver has pushed every element its input holds: a barrier is taken only then.</summary>
    protected virtual bool InputDrained => true;

    /// <summary>Gets a value indicating whether the driver reports itself when its source is attached (<see cref="RunContext.Started"/>); others are attached at once.</summary>
    public virtual bool ReportsStart => false;

    public void UseTimers() => UsesTimers = true;

    /// <summary>Thread-safe: asks for a tick to be delivered to the stages.</summary>
    public void RequestTick()
    {
        Volatile.Write(ref _tick, 1);
        Interlocked.Exchange(ref _tickSignal, null)?.TrySetResult();
    }

    /// <summary>Thread-safe: asks for a snapshot to be taken between two elements (a periodic snapshot, or too many unacknowledged messages).</summary>
    public void RequestCheckpoint()
    {
        Volatile.Write(ref _checkpoint, 1);
        Interlocked.Exchange(ref _tickSignal, null)?.TrySetResult();
    }

    /// <summary>
    /// Thread-safe: asks the driver to save its stages' state for a snapshot once it has pushed every element it was
    /// given so far (a snapshot barrier: the driver upstream waits, so nothing new arrives meanwhile). The task
    /// completes when the state is saved, or fails with what failed.
    /// </summary>
    public Task BarrierAsync()
    {
        var barrier = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (Interlocked.CompareExchange(ref _barrier, barrier, null) is { } pending)
        {
            return pending.Task;
        }

        Interlocked.Exchange(ref _tickSignal, null)?.TrySetResult();
        return barrier.Task;
    }

    public abstract Task RunAsync();

    /// <summary>Takes the pending barrier once the input is drained; null when there is none (or the input still holds elements).</summary>
    protected TaskCompletionSource? TakeBarrier() =>
        Volatile.Read(ref _barrier) is not null && InputDrained ? Interlocked.Exchange(ref _barrier, null) : null;

    protected bool TakeTick() => Interlocked.Exchange(ref _tick, 0) != 0;

    protected bool TakeCheckpoint() => Interlocked.Exchange(ref _checkpoint, 0) != 0;

    /// <summary>A task that completes at the next tick request (at once when one is pending).</summary>
    protected Task WaitForTickAsync()
    {
        var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Interlocked.Exchange(ref _tickSignal, signal);
        if (TickPending)
        {
            signal.TrySetResult();
        }

        return signal.Task;
    }
}

internal abstract class Driver<T>(RunContext run) : Driver(run)
{
    public Stage<T> Head { get; set; } = null!;

    /// <summary>Waits for <paramref name="pending"/>, delivering ticks meanwhile.</summary>
    protected async ValueTask<TResult> AwaitWithTicksAsync<TResult>(Task<TResult> pending)
    {
        while (!pending.IsCompleted)
        {
            await Task.WhenAny(pending, WaitForTickAsync()).ConfigureAwait(false);
            await DeliverTicksAsync().ConfigureAwait(false);
        }

        return await pending.ConfigureAwait(false);
    }

    protected async ValueTask DeliverTicksAsync()
    {
        while (TakeTick())
        {
            await Head.OnTickAsync().ConfigureAwait(false);
        }

        if (TakeCheckpoint())
        {
            await Run.CheckpointAsync(Head).ConfigureAwait(false);
        }

        if (TakeBarrier() is { } barrier)
        {
            try
            {
                await Head.OnCheckpointAsync().ConfigureAwait(false);
                barrier.TrySetResult();
            }
            catch (Exception ex)
            {
                barrier.TrySetException(ex);
                throw;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected static ValueTask Push(Stage<T> head, T item) => head.OnNextAsync(item);
}

/// <summary>An in-memory sequence, pushed synchronously (arrays without an enumerator).</summary>
internal sealed class EnumerableDriver<T>(RunContext run, IEnumerable<T> source) : Driver<T>(run)
{
    public override async Task RunAsync()
    {
        var head = Head;
        var stop = Run.StopToken;
        var abort = Run.AbortToken;
        var stopped = false;
        if (source is T[] array)
        {
            for (var i = 0; i < array.Length; i++)
            {
                if ((i & 63) == 0 && Interrupted(stop, abort))
                {
                    stopped = true;
                    break;
                }

                var pending = head.OnNextAsync(array[i]);
                if (!pending.IsCompletedSuccessfully)
                {
                    await pending.ConfigureAwait(false);
                }

                if (TickPending)
                {
                    await DeliverTicksAsync().ConfigureAwait(false);
                }
            }
        }
        else
        {
            var n = 0;
            foreach (var item in source)
            {
                if ((n++ & 63) == 0 && Interrupted(stop, abort))
                {
                    stopped = true;
                    break;
                }

                var pending = head.OnNextAsync(item);
                if (!pending.IsCompletedSuccessfully)
                {
                    await pending.ConfigureAwait(false);
                }

                if (TickPending)
                {
                    await DeliverTicksAsync().ConfigureAwait(false);
                }
            }
        }

        await head.OnCompletedAsync(final: !stopped).ConfigureAwait(false);
    }

    private static bool Interrupted(CancellationToken stop, CancellationToken abort)
    {
        abort.ThrowIfCancellationRequested();
        return stop.IsCancellationRequested;
    }
}

/// <summary>An <see cref="IAsyncEnumerable{T}"/>, pulled one element at a time: the source produces only as fast as the stages take.</summary>
internal sealed class AsyncEnumerableDriver<T>(RunContext run, IAsyncEnumerable<T> source) : Driver<T>(run)
{
    public override async Task RunAsync()
    {
        var head = Head;
        var stopped = false;
        var enumerator = source.GetAsyncEnumerator(Run.StopToken);
        try
        {
            while (true)
            {
                var moving = enumerator.MoveNextAsync();
                bool more;
                if (moving.IsCompletedSuccessfully)
                {
                    more = moving.Result;
                }
                else if (UsesTimers)
                {
                    more = await AwaitWithTicksAsync(moving.AsTask()).ConfigureAwait(false);
                }
                else
                {
                    more = await moving.ConfigureAwait(false);
                }

                if (!more)
                {
                    break;
                }

                var pending = head.OnNextAsync(enumerator.Current);
                if (!pending.IsCompletedSuccessfully)
                {
                    await pending.ConfigureAwait(false);
                }

                if (TickPending)
                {
                    await DeliverTicksAsync().ConfigureAwait(false);
                }

                if (Run.StopToken.IsCancellationRequested)
                {
                    stopped = true;
                    break;
                }
            }
        }
        catch (OperationCanceledException) when (Run.StopToken.IsCancellationRequested && !Run.AbortToken.IsCancellationRequested)
        {
            stopped = true;
        }
        finally
        {
            await enumerator.DisposeAsync().ConfigureAwait(false);
        }

        await head.OnCompletedAsync(final: !stopped).ConfigureAwait(false);
    }
}

/// <summary>
/// A channel, read in synchronous runs of <c>TryRead</c> (no await per element while elements are there).
/// A user's channel stops being read at a graceful stop; an internal one (a partition, a transport source) is drained.
/// </summary>
internal class ChannelDriver<T>(RunContext run, ChannelReader<T> reader, bool honorStop) : Driver<T>(run)
{
    protected override bool InputDrained => !reader.CanCount || reader.Count == 0;

    /// <summary>Gets a value indicating whether the input ended because the pipeline is stopping, not because it was exhausted.</summary>
    protected virtual bool EndedByStop => false;

    /// <summary>Gets a value indicating whether the source holds input whose settlement waits for a snapshot: an idle driver then takes one, since the transport may deliver nothing more until it is settled.</summary>
    protected virtual bool HoldsUnsettledInput => false;

    public override async Task RunAsync()
    {
        var head = Head;
        var stop = honorStop ? Run.StopToken : CancellationToken.None;
        var abort = Run.AbortToken;
        var stopped = false;
        Task<bool>? waiting = null;
        using var linked = honorStop ? CancellationTokenSource.CreateLinkedTokenSource(stop, abort) : null;
        var waitToken = linked?.Token ?? abort;
        while (true)
        {
            while (reader.TryRead(out var item))
            {
                var pending = head.OnNextAsync(item);
                if (!pending.IsCompletedSuccessfully)
                {
                    await pending.ConfigureAwait(false);
                }

                if (TickPending)
                {
                    await DeliverTicksAsync().ConfigureAwait(false);
                }

                if (stop.IsCancellationRequested)
                {
                    break;
                }
            }

            if (stop.IsCancellationRequested)
            {
                stopped = true;
                break;
            }

            if (HoldsUnsettledInput)
            {
                await Run.CheckpointAsync(head).ConfigureAwait(false);
                continue;
            }

            bool more;
            try
            {
                if (waiting is null)
                {
                    var wait = reader.WaitToReadAsync(waitToken);
                    if (wait.IsCompletedSuccessfully)
                    {
                        more = wait.Result;
                        goto Waited;
                    }

                    waiting = wait.AsTask();
                }

                more = UsesTimers ? await AwaitWithTicksAsync(waiting).ConfigureAwait(false) : await waiting.ConfigureAwait(false);
                waiting = null;
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested && !abort.IsCancellationRequested)
            {
                stopped = true;
                break;
            }

        Waited:
            if (!more)
            {
                break;
            }
        }

        await head.OnCompletedAsync(final: !(stopped || EndedByStop)).ConfigureAwait(false);
    }
}
