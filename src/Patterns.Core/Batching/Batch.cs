using System.Runtime.CompilerServices;
using Patterns.Messaging;

namespace Patterns.Batching;

/// <summary>
/// A view of one batch handed to a batch handler: the items, in the order they were added, and a way to
/// mark single items failed.
/// </summary>
/// <typeparam name="T">The item type.</typeparam>
/// <remarks>
/// <para>
/// <b>A batch is valid only until its handler returns</b> (until the returned task completes). Its items live
/// in a pooled array that is cleared and reused for a later batch as soon as the handler is done, so a batch,
/// its <see cref="Items"/> span and its enumerator must not be stored. Copy what must outlive the handler
/// (<see cref="ToArray"/>). Any use of a batch after its handler has returned throws
/// <see cref="ObjectDisposedException"/>.
/// </para>
/// <para>
/// Items that the handler marks with <see cref="Fail(int, Exception)"/> are retried (in a new, smaller batch
/// that holds only the failed items) through the resilience pipeline and then dead-lettered one by one;
/// the other items count as handled. A handler that throws fails every item of the batch.
/// </para>
/// <para>Not thread-safe: one handler call owns the batch.</para>
/// </remarks>
public readonly struct Batch<T>
{
    private readonly BatchBuffer<T> _buffer;
    private readonly int _version;

    internal Batch(BatchBuffer<T> buffer)
    {
        _buffer = buffer;
        _version = buffer.Version;
    }

    /// <summary>Gets the number of items in the batch.</summary>
    public int Count => Buffer.Count;

    /// <summary>Gets the items, in the order they were added. Valid until the handler returns.</summary>
    public ReadOnlySpan<T> Items
    {
        get
        {
            var buffer = Buffer;
            return new ReadOnlySpan<T>(buffer.Items, 0, buffer.Count);
        }
    }

    /// <summary>Gets the key the batch was grouped by, or <see langword="null"/> when the batcher does not group.</summary>
    public object? Key => Buffer.Key;

    /// <summary>Gets how many times these items were handed to the handler before: 0 for the first attempt, 1 or more for retries of failed items.</summary>
    public int Attempt => Buffer.Attempt;

    /// <summary>Gets the total size of the items, as measured by the batcher's size function (0 without one).</summary>
    public long Size => Buffer.Size;

    /// <summary>
    /// Gets the transport envelopes of the items, index for index, when the batch was consumed from a queue or a
    /// subscription; empty for an in-process batcher.
    /// </summary>
    public ReadOnlySpan<Envelope> Envelopes
    {
        get
        {
            var buffer = Buffer;
            return buffer.Envelopes is { } envelopes ? new ReadOnlySpan<Envelope>(envelopes, 0, buffer.Count) : default;
        }
    }

    /// <summary>Gets the number of items marked failed so far.</summary>
    public int FailedCount => Buffer.FailedCount;

    private BatchBuffer<T> Buffer
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            var buffer = _buffer;
            if (buffer is null || buffer.Version != _version)
            {
                ThrowExpired();
            }

            return buffer!;
        }
    }

    /// <summary>Gets the item at <paramref name="index"/>.</summary>
    /// <param name="index">The position in the batch.</param>
    /// <returns>The item.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is outside the batch.</exception>
    public T this[int index]
    {
        get
        {
            var buffer = Buffer;
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)buffer.Count, nameof(index));
            return buffer.Items[index];
        }
    }

    /// <summary>
    /// Marks one item failed. It is retried through the resilience pipeline and then dead-lettered with
    /// <paramref name="exception"/>; the rest of the batch is handled. Marking an item again replaces its exception.
    /// </summary>
    /// <param name="index">The item's position in this batch.</param>
    /// <param name="exception">Why it failed; recorded on its dead letter.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is outside the batch.</exception>
    public void Fail(int index, Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        var buffer = Buffer;
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)buffer.Count, nameof(index));
        buffer.MarkFailed(index, exception);
    }

    /// <summary>Gets a value indicating whether the item at <paramref name="index"/> is marked failed.</summary>
    /// <param name="index">The item's position in this batch.</param>
    /// <returns><see langword="true"/> when it is marked failed.</returns>
    public bool IsFailed(int index)
    {
        var buffer = Buffer;
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)buffer.Count, nameof(index));
        return buffer.Failures is { } failures && failures[index] is not null;
    }

    /// <summary>Copies the items to a new array, for use after the handler returns.</summary>
    /// <returns>The items.</returns>
    public T[] ToArray() => Items.ToArray();

    /// <summary>Gets an enumerator over the items, for <c>foreach</c>.</summary>
    /// <returns>The enumerator.</returns>
    public ReadOnlySpan<T>.Enumerator GetEnumerator() => Items.GetEnumerator();

    private static void ThrowExpired() =>
        throw new ObjectDisposedException(
            nameof(Batch<T>),
            "A batch is valid only until its handler returns: its pooled buffer has been reused. Copy the items (ToArray) to keep them.");
}
