using System.Runtime.InteropServices;
using Patterns.Messaging;

namespace Patterns.Batching;

/// <summary>The open batches of a batcher that groups by key: one open batch per key.</summary>
internal abstract class BatchKeyIndex<T>
{
    public abstract ValueTask<bool> AddAsync(BatchEngine<T> engine, T item, long size, in Envelope envelope, object? ticket, CancellationToken cancellationToken);

    public abstract bool TryAdd(BatchEngine<T> engine, T item, long size, in Envelope envelope, object? ticket);

    /// <summary>Hands off every open batch (explicit flush, completion, pressure). Caller holds the lock.</summary>
    public abstract void HandOffAllLocked(BatchEngine<T> engine);

    /// <summary>Hands off the batches older than the max age and returns when the next one falls due. Caller holds the lock.</summary>
    public abstract long HandOffExpiredLocked(BatchEngine<T> engine, long now);
}

internal sealed class BatchKeyIndex<T, TKey>(Func<T, TKey> keySelector) : BatchKeyIndex<T>
    where TKey : notnull
{
    private readonly Dictionary<TKey, BatchBuffer<T>?> _open = [];
    private readonly List<TKey> _expired = [];

    public override ValueTask<bool> AddAsync(BatchEngine<T> engine, T item, long size, in Envelope envelope, object? ticket, CancellationToken cancellationToken)
    {
        var key = keySelector(item);
        AddStatus status;
        var owner = engine.Gate.EnterAsProducer();
        try
        {
            status = engine.CheckLocked();
            if (status == AddStatus.Added)
            {
                AppendLocked(engine, key, item, size, envelope, ticket);
                return new ValueTask<bool>(true);
            }
        }
        finally
        {
            engine.Gate.Exit(owner);
        }

        if (status == AddStatus.Completed)
        {
            engine.ThrowCompleted();
        }

        return engine.FullMode == BatchFullMode.Wait
            ? AddSlowAsync(engine, key, item, size, envelope, ticket, cancellationToken)
            : new ValueTask<bool>(engine.RejectOrDrop());
    }

    public override bool TryAdd(BatchEngine<T> engine, T item, long size, in Envelope envelope, object? ticket)
    {
        var key = keySelector(item);
        var owner = engine.Gate.EnterAsProducer();
        try
        {
            if (engine.CheckLocked() != AddStatus.Added)
            {
                return false;
            }

            AppendLocked(engine, key, item, size, envelope, ticket);
            return true;
        }
        finally
        {
            engine.Gate.Exit(owner);
        }
    }

    public override void HandOffAllLocked(BatchEngine<T> engine)
    {
        if (_open.Count == 0)
        {
            return;
        }

        foreach (var buffer in _open.Values)
        {
            engine.HandOffLocked(buffer!);
        }

        _open.Clear();
    }

    public override long HandOffExpiredLocked(BatchEngine<T> engine, long now)
    {
        var next = long.MaxValue;
        foreach (var (key, buffer) in _open)
        {
            if (engine.IsExpired(buffer!, now))
            {
                engine.HandOffLocked(buffer!);
                _expired.Add(key);
            }
            else
            {
                next = Math.Min(next, engine.DueAt(buffer!));
            }
        }

        foreach (var key in _expired)
        {
            _open.Remove(key);
        }

        _expired.Clear();
        return next;
    }

    private void AppendLocked(BatchEngine<T> engine, TKey key, T item, long size, in Envelope envelope, object? ticket)
    {
        var workers = engine.Workers;
        var worker = workers == 1 ? 0 : (int)((uint)EqualityComparer<TKey>.Default.GetHashCode(key) % (uint)workers);
        ref var slot = ref CollectionsMarshal.GetValueRefOrAddDefault(_open, key, out _);
        engine.AppendLocked(ref slot, slot is null ? key : null, worker, item, size, envelope, ticket);
        if (slot is null)
        {
            _open.Remove(key);
        }
    }

    private async ValueTask<bool> AddSlowAsync(BatchEngine<T> engine, TKey key, T item, long size, Envelope envelope, object? ticket, CancellationToken cancellationToken)
    {
        while (true)
        {
            await engine.WaitForSpaceAsync(cancellationToken).ConfigureAwait(false);
            var owner = engine.Gate.EnterAsProducer();
            try
            {
                var status = engine.CheckLocked();
                if (status == AddStatus.Added)
                {
                    AppendLocked(engine, key, item, size, envelope, ticket);
                    return true;
                }

                if (status == AddStatus.Completed)
                {
                    engine.ThrowCompleted();
                }
            }
            finally
            {
                engine.Gate.Exit(owner);
            }
        }
    }
}
