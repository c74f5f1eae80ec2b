using System.Buffers;
using System.Runtime.CompilerServices;
using Patterns.Messaging;

namespace Patterns.Batching;

/// <summary>
/// The storage behind a <see cref="Batch{T}"/>: a pooled item array plus the batch's bookkeeping. Buffers are
/// recycled by their batcher; <see cref="Version"/> changes on every recycle so a stale <see cref="Batch{T}"/> fails.
/// </summary>
internal sealed class BatchBuffer<T>
{
    private static readonly bool ClearItems = RuntimeHelpers.IsReferenceOrContainsReferences<T>();

    public T[] Items { get; private set; } = [];

    public int Count { get; private set; }

    public long Size { get; private set; }

    /// <summary>When the first item arrived, as a <see cref="TimeProvider"/> timestamp.</summary>
    public long OpenedAt { get; set; }

    public object? Key { get; set; }

    /// <summary>The handler worker this batch goes to.</summary>
    public int Worker { get; set; }

    public int Version { get; private set; }

    public int Attempt { get; set; }

    /// <summary>The hand-off order, for flush waiters; 0 for retry buffers, which never count against capacity.</summary>
    public long Sequence { get; set; }

    public Exception?[]? Failures { get; private set; }

    /// <summary>The next buffer in its batcher's list of free buffers.</summary>
    internal BatchBuffer<T>? NextFree;

    public int FailedCount { get; private set; }

    /// <summary>Transport consumers only: each item's envelope.</summary>
    public Envelope[]? Envelopes { get; private set; }

    /// <summary>Transport consumers only: each item's settlement source.</summary>
    public object?[]? Tickets { get; private set; }

    public void Append(T item, long size, int maxCount, bool tracked, in Envelope envelope, object? ticket)
    {
        var count = Count;
        if (count == Items.Length)
        {
            Grow(maxCount, tracked);
        }

        Items[count] = item;
        if (tracked)
        {
            Envelopes![count] = envelope;
            Tickets![count] = ticket;
        }

        Count = count + 1;
        Size += size;
    }

    /// <summary>Appends without growing; <see langword="false"/> when the array is full (the caller takes the slow path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAppend(T item)
    {
        var items = Items;
        var count = Count;
        if ((uint)count >= (uint)items.Length)
        {
            return false;
        }

        items[count] = item;
        Count = count + 1;
        return true;
    }

    public void MarkFailed(int index, Exception exception)
    {
        var failures = Failures;
        if (failures is null)
        {
            failures = ArrayPool<Exception?>.Shared.Rent(Count);
            Array.Clear(failures, 0, Count);
            Failures = failures;
        }

        if (failures[index] is null)
        {
            FailedCount++;
        }

        failures[index] = exception;
    }

    public void ClearFailure(int index)
    {
        if (Failures is { } failures && failures[index] is not null)
        {
            failures[index] = null;
            FailedCount--;
        }
    }

    public void FailAll(Exception exception)
    {
        for (var i = 0; i < Count; i++)
        {
            MarkFailed(i, exception);
        }
    }

    /// <summary>Empties the buffer for reuse (keeping its arrays) and invalidates every <see cref="Batch{T}"/> over it.</summary>
    public void Reset()
    {
        Version++;
        if (ClearItems)
        {
            Array.Clear(Items, 0, Count);
        }

        if (Envelopes is { } envelopes)
        {
            Array.Clear(envelopes, 0, Count);
            Array.Clear(Tickets!, 0, Count);
        }

        if (Failures is { } failures)
        {
            ArrayPool<Exception?>.Shared.Return(failures, clearArray: true);
            Failures = null;
        }

        Count = 0;
        Size = 0;
        FailedCount = 0;
        Attempt = 0;
        Sequence = 0;
        Key = null;
    }

    /// <summary>Gives the arrays back to the shared pool; the buffer is dropped afterwards.</summary>
    public void ReturnArrays()
    {
        Reset();
        if (Items.Length > 0)
        {
            ArrayPool<T>.Shared.Return(Items);
            Items = [];
        }

        if (Envelopes is { } envelopes)
        {
            ArrayPool<Envelope>.Shared.Return(envelopes);
            ArrayPool<object?>.Shared.Return(Tickets!);
            Envelopes = null;
            Tickets = null;
        }
    }

    private void Grow(int maxCount, bool tracked)
    {
        var size = Items.Length == 0 ? Math.Min(maxCount, 1024) : Math.Min(maxCount, Items.Length * 2);
        size = Math.Max(size, Count + 1);
        var items = ArrayPool<T>.Shared.Rent(size);
        Array.Copy(Items, items, Count);
        if (Items.Length > 0)
        {
            if (ClearItems)
            {
                Array.Clear(Items, 0, Count);
            }

            ArrayPool<T>.Shared.Return(Items);
        }

        Items = items;
        if (tracked)
        {
            var envelopes = ArrayPool<Envelope>.Shared.Rent(items.Length);
            var tickets = ArrayPool<object?>.Shared.Rent(items.Length);
            if (Envelopes is { } old)
            {
                Array.Copy(old, envelopes, Count);
                Array.Copy(Tickets!, tickets, Count);
                Array.Clear(old, 0, Count);
                Array.Clear(Tickets!, 0, Count);
                ArrayPool<Envelope>.Shared.Return(old);
                ArrayPool<object?>.Shared.Return(Tickets!);
            }

            Envelopes = envelopes;
            Tickets = tickets;
        }
    }
}
