using System.Threading.Channels;

namespace Patterns.Streaming;

internal sealed class WhereStage<T> : ForwardingStage<T, T>
{
    private readonly Func<T, bool> _predicate;
    private readonly StageGuard _guard;
    private readonly Func<T, CancellationToken, ValueTask<bool>> _attempt;

    public WhereStage(Stage<T> next, Func<T, bool> predicate, StageGuard guard)
        : base(next)
    {
        _predicate = predicate;
        _guard = guard;
        _attempt = (item, _) => new ValueTask<bool>(predicate(item));
    }

    public override ValueTask OnNextAsync(T item)
    {
        bool pass;
        try
        {
            pass = _predicate(item);
        }
        catch (Exception ex)
        {
            return RecoverAsync(item, ex);
        }

        return pass ? Next.OnNextAsync(item) : default;
    }

    private async ValueTask RecoverAsync(T item, Exception failure)
    {
        var (ok, pass) = await _guard.RecoverAsync(item, failure, _attempt).ConfigureAwait(false);
        if (ok && pass)
        {
            await Next.OnNextAsync(item).ConfigureAwait(false);
        }
    }
}

internal sealed class SelectStage<TIn, TOut> : ForwardingStage<TIn, TOut>
{
    private readonly Func<TIn, TOut> _selector;
    private readonly StageGuard _guard;
    private readonly Func<TIn, CancellationToken, ValueTask<TOut>> _attempt;

    public SelectStage(Stage<TOut> next, Func<TIn, TOut> selector, StageGuard guard)
        : base(next)
    {
        _selector = selector;
        _guard = guard;
        _attempt = (item, _) => new ValueTask<TOut>(selector(item));
    }

    public override ValueTask OnNextAsync(TIn item)
    {
        TOut value;
        try
        {
            value = _selector(item);
        }
        catch (Exception ex)
        {
            return RecoverAsync(item, ex);
        }

        return Next.OnNextAsync(value);
    }

    private async ValueTask RecoverAsync(TIn item, Exception failure)
    {
        var (ok, value) = await _guard.RecoverAsync(item, failure, _attempt).ConfigureAwait(false);
        if (ok)
        {
            await Next.OnNextAsync(value).ConfigureAwait(false);
        }
    }
}

internal sealed class SelectManyStage<TIn, TOut> : ForwardingStage<TIn, TOut>
{
    private readonly Func<TIn, IEnumerable<TOut>> _selector;
    private readonly StageGuard _guard;
    private readonly Func<TIn, CancellationToken, ValueTask<List<TOut>>> _attempt;

    public SelectManyStage(Stage<TOut> next, Func<TIn, IEnumerable<TOut>> selector, StageGuard guard)
        : base(next)
    {
        _selector = selector;
        _guard = guard;
        _attempt = (item, _) => new ValueTask<List<TOut>>([.. selector(item)]);
    }

    public override async ValueTask OnNextAsync(TIn item)
    {
        IEnumerator<TOut> enumerator;
        try
        {
            enumerator = _selector(item).GetEnumerator();
        }
        catch (Exception ex)
        {
            await RecoverAsync(item, ex, emitted: false).ConfigureAwait(false);
            return;
        }

        using (enumerator)
        {
            var emitted = false;
            while (true)
            {
                TOut current;
                try
                {
                    if (!enumerator.MoveNext())
                    {
                        return;
                    }

                    current = enumerator.Current;
                }
                catch (Exception ex)
                {
                    await RecoverAsync(item, ex, emitted).ConfigureAwait(false);
                    return;
                }

                emitted = true;
                await Next.OnNextAsync(current).ConfigureAwait(false);
            }
        }
    }

    private async ValueTask RecoverAsync(TIn item, Exception failure, bool emitted)
    {
        // Once some outputs went downstream a retry would repeat them, so the element is only dead-lettered (or stops the pipeline).
        var (ok, values) = await _guard.RecoverAsync(item, failure, emitted ? static (_, _) => throw new InvalidOperationException("Not retried after partial output.") : _attempt).ConfigureAwait(false);
        if (ok)
        {
            foreach (var value in values)
            {
                await Next.OnNextAsync(value).ConfigureAwait(false);
            }
        }
    }
}

/// <summary>Async map with bounded parallelism, emitting in input order: at most <c>parallelism</c> calls run at once.</summary>
internal sealed class OrderedAsyncMapStage<TIn, TOut>(Stage<TOut> next, Func<TIn, CancellationToken, ValueTask<TOut>> selector, int parallelism, StageGuard guard)
    : ForwardingStage<TIn, TOut>(next)
{
    private readonly Queue<(TIn Item, ValueTask<TOut> Pending)> _inFlight = new();

    public override ValueTask OnNextAsync(TIn item)
    {
        ValueTask<TOut> pending;
        try
        {
            pending = selector(item, guard.Token);
        }
        catch (Exception ex)
        {
            pending = ValueTask.FromException<TOut>(ex);
        }

        if (_inFlight.Count == 0 && pending.IsCompletedSuccessfully)
        {
            return Next.OnNextAsync(pending.Result);
        }

        _inFlight.Enqueue((item, pending));
        return _inFlight.Count >= parallelism || _inFlight.Peek().Pending.IsCompleted ? DrainAsync(parallelism - 1) : default;
    }

    public override async ValueTask OnCompletedAsync(bool final)
    {
        await DrainAsync(0).ConfigureAwait(false);
        await Next.OnCompletedAsync(final).ConfigureAwait(false);
    }

    /// <summary>A snapshot: every call in flight completes and its result goes on first, so the snapshot includes them.</summary>
    public override async ValueTask OnCheckpointAsync()
    {
        await DrainAsync(0).ConfigureAwait(false);
        await Next.OnCheckpointAsync().ConfigureAwait(false);
    }

    private async ValueTask DrainAsync(int keep)
    {
        while (_inFlight.Count > keep || (_inFlight.Count > 0 && _inFlight.Peek().Pending.IsCompleted))
        {
            var (item, pending) = _inFlight.Dequeue();
            TOut value;
            try
            {
                value = await pending.ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                var (ok, recovered) = await guard.RecoverAsync(item, ex, selector).ConfigureAwait(false);
                if (!ok)
                {
                    continue;
                }

                value = recovered;
            }

            await Next.OnNextAsync(value).ConfigureAwait(false);
        }
    }
}

/// <summary>Async map with bounded parallelism, emitting results as they complete.</summary>
internal sealed class UnorderedAsyncMapStage<TIn, TOut>(Stage<TOut> next, Func<TIn, CancellationToken, ValueTask<TOut>> selector, int parallelism, StageGuard guard)
    : ForwardingStage<TIn, TOut>(next)
{
    private readonly Channel<(TIn Item, Task<TOut> Task)> _completed = Channel.CreateUnbounded<(TIn, Task<TOut>)>(new UnboundedChannelOptions { SingleReader = true });
    private int _inFlight;

    public override ValueTask OnNextAsync(TIn item)
    {
        ValueTask<TOut> pending;
        try
        {
            pending = selector(item, guard.Token);
        }
        catch (Exception ex)
        {
            pending = ValueTask.FromException<TOut>(ex);
        }

        if (_inFlight == 0 && pending.IsCompletedSuccessfully)
        {
            return Next.OnNextAsync(pending.Result);
        }

        _inFlight++;
        var task = pending.AsTask();
        var writer = _completed.Writer;
        task.ContinueWith(
            static (t, s) => ((ChannelWriter<(TIn, Task<TOut>)>)((object[])s!)[0]).TryWrite(((TIn)((object[])s!)[1], t)),
            new object[] { writer, item! },
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
        return EmitAsync(parallelism - 1);
    }

    public override async ValueTask OnCompletedAsync(bool final)
    {
        await EmitAsync(0).ConfigureAwait(false);
        await Next.OnCompletedAsync(final).ConfigureAwait(false);
    }

    /// <summary>A snapshot: every call in flight completes and its result goes on first, so the snapshot includes them.</summary>
    public override async ValueTask OnCheckpointAsync()
    {
        await EmitAsync(0).ConfigureAwait(false);
        await Next.OnCheckpointAsync().ConfigureAwait(false);
    }

    private async ValueTask EmitAsync(int keep)
    {
        while (true)
        {
            if (!_completed.Reader.TryRead(out var done))
            {
                if (_inFlight <= keep)
                {
                    return;
                }

                done = await _completed.Reader.ReadAsync(guard.Token).ConfigureAwait(false);
            }

            _inFlight--;
            TOut value;
            try
            {
                value = await done.Task.ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                var (ok, recovered) = await guard.RecoverAsync(done.Item, ex, selector).ConfigureAwait(false);
                if (!ok)
                {
                    continue;
                }

                value = recovered;
            }

            await Next.OnNextAsync(value).ConfigureAwait(false);
        }
    }
}

/// <summary>The end of a pipeline: a user delegate, a channel, a batcher, the transport.</summary>
internal sealed class SinkStage<T> : Stage<T>
{
    private readonly Func<T, CancellationToken, ValueTask> _sink;
    private readonly Func<bool, CancellationToken, ValueTask>? _onCompleted;
    private readonly StageGuard _guard;
    private readonly Func<T, CancellationToken, ValueTask<bool>> _attempt;

    public SinkStage(Func<T, CancellationToken, ValueTask> sink, Func<bool, CancellationToken, ValueTask>? onCompleted, StageGuard guard)
    {
        _sink = sink;
        _onCompleted = onCompleted;
        _guard = guard;
        _attempt = async (item, ct) =>
        {
            await sink(item, ct).ConfigureAwait(false);
            return true;
        };
    }

    public override ValueTask OnNextAsync(T item)
    {
        ValueTask pending;
        try
        {
            pending = _sink(item, _guard.Token);
        }
        catch (Exception ex)
        {
            return RecoverAsync(item, ex);
        }

        return pending.IsCompletedSuccessfully ? default : AwaitAsync(pending, item);
    }

    public override ValueTask OnCompletedAsync(bool final) => _onCompleted?.Invoke(final, _guard.Token) ?? default;

    public override ValueTask OnTickAsync() => default;

    private async ValueTask AwaitAsync(ValueTask pending, T item)
    {
        try
        {
            await pending.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            await RecoverAsync(item, ex).ConfigureAwait(false);
        }
    }

    private async ValueTask RecoverAsync(T item, Exception failure) =>
        await _guard.RecoverAsync(item, failure, _attempt).ConfigureAwait(false);
}

/// <summary>
/// The end of a pipeline in the store (documents or outbox messages): results are held until the next snapshot and
/// written into its unit of work, so a result reaches the store exactly when the state that produced it does.
/// </summary>
internal sealed class UnitOfWorkSinkStage<T> : Stage<T>
{
    private readonly RunContext _run;
    private readonly Action<Storage.UnitOfWork, T, Serialization.IMessageSerializer> _write;
    private readonly Serialization.IMessageSerializer _serializer;
    private List<T> _pending = [];

    /// <param name="context">The chain.</param>
    /// <param name="what">What the sink writes, for the error when the snapshot store has no units of work.</param>
    /// <param name="write">Adds one result to the unit of work.</param>
    public UnitOfWorkSinkStage(ChainContext context, string what, Action<Storage.UnitOfWork, T, Serialization.IMessageSerializer> write)
    {
        _run = context.Run;
        _write = write;
        _serializer = (_run.Store as StoreStreamSnapshotStore)?.Serializer ?? throw new InvalidOperationException(
            $"Stream '{_run.Name}' writes to {what} in the unit of work of its snapshots, which needs a snapshot store on a store with units of work: choose one with AddEventSourcing(es => es.UseSqlite(...)) (the host then uses it), or set StreamOptions.SnapshotStore to a StoreStreamSnapshotStore.");
    }

    public override ValueTask OnNextAsync(T item)
    {
        _pending.Add(item);
        return default;
    }

    public override ValueTask OnCompletedAsync(bool final)
    {
        HandOver();
        return default;
    }

    public override ValueTask OnTickAsync() => default;

    public override ValueTask OnCheckpointAsync()
    {
        HandOver();
        return default;
    }

    private void HandOver()
    {
        if (_pending.Count == 0)
        {
            return;
        }

        var items = _pending;
        _pending = [];
        _run.AddPendingWrite(unit =>
        {
            foreach (var item in items)
            {
                _write(unit, item, _serializer);
            }
        });
    }
}
