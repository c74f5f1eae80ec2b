using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Patterns.Batching;

/// <summary>
/// Collects items into batches and hands each batch to a handler. A batch is flushed on whichever comes first:
/// <see cref="BatchOptions.MaxCount"/> items, <see cref="BatchOptions.MaxSize"/> in total size,
/// <see cref="BatchOptions.MaxAge"/> since its first item, <see cref="FlushAsync"/>, or <see cref="CompleteAsync"/>.
/// </summary>
/// <typeparam name="T">The item type.</typeparam>
/// <remarks>
/// <para>
/// Thread-safe: any number of producers may add at once. The batcher holds at most <see cref="BatchOptions.Capacity"/>
/// items (open, waiting and being handled); a producer that finds it full waits, unless
/// <see cref="BatchOptions.FullMode"/> says to drop or reject.
/// </para>
/// <para>
/// Nothing is lost: completion (and host shutdown) flushes what is left and waits for the handlers until the drain
/// deadline; after the deadline handlers see a cancelled token, and items they then fail are dead-lettered.
/// </para>
/// </remarks>
public abstract class Batcher<T> : IAsyncDisposable
{
    private protected Batcher()
    {
    }

    /// <summary>Gets the batcher's name, used in logs, telemetry and dead letters.</summary>
    public abstract string Name { get; }

    /// <summary>Gets the number of items held: in open batches, waiting for a handler, and being handled.</summary>
    public abstract int Count { get; }

    /// <summary>Gets the most items the batcher holds.</summary>
    public abstract int Capacity { get; }

    /// <summary>Gets a task that completes when the batcher has completed and every batch has been handled.</summary>
    public abstract Task Completion { get; }

    /// <summary>Adds an item; waits for space when the batcher is full and <see cref="BatchOptions.FullMode"/> is <see cref="BatchFullMode.Wait"/>.</summary>
    /// <param name="item">The item.</param>
    /// <param name="cancellationToken">Cancels waiting for space.</param>
    /// <returns><see langword="true"/> when the item was added; <see langword="false"/> when it was dropped (<see cref="BatchFullMode.DropNewest"/>).</returns>
    /// <exception cref="Transport.QueueFullException">The batcher is full and <see cref="BatchOptions.FullMode"/> is <see cref="BatchFullMode.Reject"/>.</exception>
    /// <exception cref="InvalidOperationException">The batcher is completed.</exception>
    public abstract ValueTask<bool> AddAsync(T item, CancellationToken cancellationToken = default);

    /// <summary>Adds an item if there is space now, without waiting.</summary>
    /// <param name="item">The item.</param>
    /// <returns><see langword="true"/> when the item was added; <see langword="false"/> when the batcher is full or completed.</returns>
    public abstract bool TryAdd(T item);

    /// <summary>Flushes every open batch now and waits until every batch flushed so far has been handled.</summary>
    /// <param name="cancellationToken">Cancels the wait (the flush itself has happened).</param>
    /// <returns>A task that completes when those batches are handled.</returns>
    public abstract Task FlushAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Stops accepting items, flushes what is open, and waits until every batch has been handled. Producers still
    /// waiting for space get <see cref="InvalidOperationException"/>.
    /// </summary>
    /// <param name="drainDeadline">When cancelled, handlers' tokens are cancelled; the task still waits for them to return.</param>
    /// <returns>The <see cref="Completion"/> task.</returns>
    public abstract Task CompleteAsync(CancellationToken drainDeadline = default);

    /// <summary>Completes the batcher (see <see cref="CompleteAsync"/>) without a drain deadline.</summary>
    /// <returns>A task that completes when every batch has been handled.</returns>
    public async ValueTask DisposeAsync()
    {
        await CompleteAsync(CancellationToken.None).ConfigureAwait(false);
        GC.SuppressFinalize(this);
    }
}

/// <summary>Creates in-process batchers.</summary>
public static class Batcher
{
    /// <summary>Creates a batcher whose batches hold items in the order they were added.</summary>
    /// <typeparam name="T">The item type.</typeparam>
    /// <param name="handler">Handles each batch.</param>
    /// <param name="options">Flush limits, capacity, concurrency and retries; the defaults when <see langword="null"/>.</param>
    /// <param name="sizeOf">Measures an item for <see cref="BatchOptions.MaxSize"/> (for example its bytes); required when a size limit is set.</param>
    /// <param name="onDeadLetter">Receives items that still fail after their retries; without it they are logged and counted.</param>
    /// <param name="timeProvider">The clock for <see cref="BatchOptions.MaxAge"/> and retry delays; the system clock when <see langword="null"/>.</param>
    /// <param name="logger">Where to log; nowhere when <see langword="null"/>.</param>
    /// <param name="name">The batcher's name, for logs, telemetry and dead letters.</param>
    /// <returns>The running batcher.</returns>
    /// <exception cref="ArgumentException">The options are invalid; the message lists every problem.</exception>
    public static Batcher<T> Create<T>(
        BatchHandler<T> handler,
        BatchOptions? options = null,
        Func<T, long>? sizeOf = null,
        Func<FailedItem<T>, CancellationToken, ValueTask>? onDeadLetter = null,
        TimeProvider? timeProvider = null,
        ILogger? logger = null,
        string name = "batcher")
    {
        ArgumentNullException.ThrowIfNull(handler);
        return new InProcessBatcher<T>(
            handler, Validated(options, sizeOf, name), sizeOf, keys: null, onDeadLetter, timeProvider ?? TimeProvider.System, logger ?? NullLogger.Instance, name);
    }

    /// <summary>Creates a batcher that groups items by key: each batch holds items of one key, and one key's batches are handled in order.</summary>
    /// <typeparam name="T">The item type.</typeparam>
    /// <typeparam name="TKey">The key type.</typeparam>
    /// <param name="keySelector">Gets an item's key; <see cref="Batch{T}.Key"/> carries it.</param>
    /// <param name="handler">Handles each batch.</param>
    /// <param name="options">Flush limits (per key), capacity (for all keys together), concurrency and retries.</param>
    /// <param name="sizeOf">Measures an item for <see cref="BatchOptions.MaxSize"/>; required when a size limit is set.</param>
    /// <param name="onDeadLetter">Receives items that still fail after their retries; without it they are logged and counted.</param>
    /// <param name="timeProvider">The clock for <see cref="BatchOptions.MaxAge"/> and retry delays.</param>
    /// <param name="logger">Where to log.</param>
    /// <param name="name">The batcher's name.</param>
    /// <returns>The running batcher.</returns>
    /// <exception cref="ArgumentException">The options are invalid; the message lists every problem.</exception>
    public static Batcher<T> Create<T, TKey>(
        Func<T, TKey> keySelector,
        BatchHandler<T> handler,
        BatchOptions? options = null,
        Func<T, long>? sizeOf = null,
        Func<FailedItem<T>, CancellationToken, ValueTask>? onDeadLetter = null,
        TimeProvider? timeProvider = null,
        ILogger? logger = null,
        string name = "batcher")
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(keySelector);
        ArgumentNullException.ThrowIfNull(handler);
        return new InProcessBatcher<T>(
            handler,
            Validated(options, sizeOf, name),
            sizeOf,
            new BatchKeyIndex<T, TKey>(keySelector),
            onDeadLetter,
            timeProvider ?? TimeProvider.System,
            logger ?? NullLogger.Instance,
            name);
    }

    private static BatchOptions Validated<T>(BatchOptions? options, Func<T, long>? sizeOf, string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        options ??= new BatchOptions();
        var errors = BatchOptionsValidation.Validate(options, $"Batcher '{name}'");
        if (options.MaxSize is not null && sizeOf is null)
        {
            errors.Add($"Batcher '{name}': MaxSize is set but no size function was given (sizeOf).");
        }

        return errors.Count == 0 ? options : throw new ArgumentException(string.Join(Environment.NewLine, errors), nameof(options));
    }
}
