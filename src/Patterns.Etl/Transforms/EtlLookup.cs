using Patterns.Storage;

namespace Patterns.Etl;

/// <summary>Creates dimension lookups for <see cref="EtlFlow{T}.Lookup{TKey, TValue, TOut}"/>.</summary>
public static class EtlLookup
{
    /// <summary>A fully cached dimension: every entry is loaded once, at the first row, then looked up in memory.</summary>
    /// <typeparam name="TKey">The key type.</typeparam>
    /// <typeparam name="TValue">The value type.</typeparam>
    /// <param name="load">Reads the whole dimension.</param>
    /// <returns>The lookup.</returns>
    public static EtlLookup<TKey, TValue> Full<TKey, TValue>(Func<CancellationToken, IAsyncEnumerable<KeyValuePair<TKey, TValue>>> load)
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(load);
        return new FullLookup<TKey, TValue>(load);
    }

    /// <summary>
    /// A dimension read key by key, with the most recently used entries (found or not) cached: at most
    /// <paramref name="capacity"/> of them and, with <paramref name="maxBytes"/>, at most that many bytes (the least
    /// recently used are evicted to make room; an entry larger than the whole budget is not cached).
    /// </summary>
    /// <typeparam name="TKey">The key type.</typeparam>
    /// <typeparam name="TValue">The value type.</typeparam>
    /// <param name="find">Reads one key; <see langword="default"/> when absent.</param>
    /// <param name="capacity">The most entries cached.</param>
    /// <param name="maxBytes">The most bytes cached (each entry's key and value plus 64 bytes of list and table entry), or <see langword="null"/> for a bound in entries only.</param>
    /// <param name="keySize">Measures a key; strings and types without references are measured without it.</param>
    /// <param name="valueSize">Measures a value (never called with <see langword="null"/>, which counts 0); strings and types without references are measured without it.</param>
    /// <returns>The lookup.</returns>
    /// <exception cref="ArgumentException">A byte budget is set, and a type cannot be measured without its measure.</exception>
    public static EtlLookup<TKey, TValue> Lru<TKey, TValue>(Func<TKey, CancellationToken, ValueTask<TValue?>> find, int capacity = 10_000, long? maxBytes = null, Func<TKey, long>? keySize = null, Func<TValue, long>? valueSize = null)
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(find);
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        EtlMemory.CheckBudget(maxBytes, "The LRU lookup", nameof(maxBytes));
        if (maxBytes is null)
        {
            return new LruLookup<TKey, TValue>(find, capacity, null, null);
        }

        var sizeOfKey = EtlMemory.SizeOf(keySize, "The LRU lookup", "keySize: k => ...");
        var sizeOfValue = EtlMemory.SizeOf(valueSize, "The LRU lookup", "valueSize: v => ...");
        return new LruLookup<TKey, TValue>(find, capacity, maxBytes, (k, v) => (2 * EtlMemory.EntryOverhead) + sizeOfKey(k) + (v is null ? 0 : sizeOfValue(v)));
    }

    /// <summary>A dimension read for every row, without a cache.</summary>
    /// <typeparam name="TKey">The key type.</typeparam>
    /// <typeparam name="TValue">The value type.</typeparam>
    /// <param name="find">Reads one key; <see langword="default"/> when absent.</param>
    /// <returns>The lookup.</returns>
    public static EtlLookup<TKey, TValue> Uncached<TKey, TValue>(Func<TKey, CancellationToken, ValueTask<TValue?>> find)
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(find);
        return new UncachedLookup<TKey, TValue>(find);
    }
}

/// <summary>A dimension to look rows up in, with its caching. Each run opens its own cache.</summary>
/// <typeparam name="TKey">The key type.</typeparam>
/// <typeparam name="TValue">The value type.</typeparam>
public abstract class EtlLookup<TKey, TValue>
    where TKey : notnull
{
    private protected EtlLookup()
    {
    }

    internal abstract LookupSession Open();

    /// <summary>The cache of one run; used on the pipeline's task only.</summary>
    internal abstract class LookupSession
    {
        /// <summary>Gets the number of times the dimension itself was read (for tests and diagnostics).</summary>
        public int Loads { get; protected set; }

        public abstract ValueTask<TValue?> FindAsync(TKey key, CancellationToken cancellationToken);

        /// <summary>
        /// Whether <paramref name="error"/>, raised by <see cref="FindAsync"/>, means the dimension could not be read rather
        /// than that it refused the key; if so the run records it as a failure no row caused (<see cref="EtlRun.FailedWithoutRow"/>).
        /// </summary>
        /// <returns>Always false: the error goes on unwinding (an exception filter).</returns>
        public bool Unreachable(EtlRun run, Exception error) => IsOutage(error, run.StorageErrorClassifiers) && run.FailedWithoutRow(error);

        /// <summary>Whether a failure of <see cref="FindAsync"/> is the dimension's (its source is down), not the key's.</summary>
        protected abstract bool IsOutage(Exception error, IReadOnlyList<IStorageErrorClassifier> classifiers);
    }
}

/// <summary>
/// Tells a dimension that is down from one that refuses a key, for lookups read key by key: a failure is an outage when
/// it, or an error inside it, is one the kernel's <see cref="StorageErrors"/> deems worth retrying, asking the store
/// drivers' classifiers first (<see cref="EtlRunOptions.StorageErrorClassifiers"/>: SQLite's busy, locked, I/O and
/// cannot-open codes, PostgreSQL's connection, resource, shutdown and statement-timeout states) and otherwise the generic rules (a timeout, a
/// <see cref="System.Data.Common.DbException"/> its driver reports transient: a dropped connection), a
/// <see cref="System.Net.Sockets.SocketException"/>, an <see cref="IOException"/> other than a missing file, folder or
/// too long a path, an <see cref="HttpRequestException"/> without a status code or with 408, 429 or 5xx, or a client's
/// cancellation (a client's own timeout: HttpClient's is a <see cref="TaskCanceledException"/> around a
/// <see cref="TimeoutException"/>, a find bounded by its own <c>CancelAfter</c> ends with a bare one; or a stop, after
/// which the message goes back uncounted too). Anything else is the key's.
/// </summary>
internal static class EtlDimensionOutage
{
    public static bool Is(Exception error, IReadOnlyList<IStorageErrorClassifier> classifiers)
    {
        for (var e = error; e is not null; e = e.InnerException)
        {
            if (e is OperationCanceledException)
            {
                // Never the key's fault: a client's own timeout (HttpClient reports its Timeout as a TaskCanceledException
                // around a TimeoutException; a find bounded by its own CancelAfter ends with a bare cancellation), or a stop
                // (the run's, or the application's), after which the message goes back uncounted too.
                return true;
            }

            if (e is FileNotFoundException or DirectoryNotFoundException or PathTooLongException)
            {
                // IOExceptions that name what is missing: the key's file or folder, every time, not an outage.
                return false;
            }

            if (e is System.Net.Sockets.SocketException or IOException || Retryable(e, classifiers)
                || (e is HttpRequestException http && (http.StatusCode is null or System.Net.HttpStatusCode.RequestTimeout or System.Net.HttpStatusCode.TooManyRequests || (int)http.StatusCode >= 500)))
            {
                return true;
            }

            if (e is AggregateException { InnerExceptions.Count: > 1 } aggregate)
            {
                return aggregate.InnerExceptions.Any(inner => Is(inner, classifiers));
            }
        }

        return false;
    }

    /// <summary>Whether the first classifier that knows <paramref name="error"/> (or, when none does, the kernel's generic rules) deems it worth retrying.</summary>
    private static bool Retryable(Exception error, IReadOnlyList<IStorageErrorClassifier> classifiers)
    {
        foreach (var classifier in classifiers)
        {
            if (classifier.Classify(error) is not null)
            {
                return StorageErrors.IsRetryable(error, classifier);
            }
        }

        return StorageErrors.IsRetryable(error) || SqliteUnavailable(error);
    }

    /// <summary>
    /// When no registered classifier knows the error (a lookup that queries SQLite itself, in an application that does not
    /// call <c>UseSqlite</c>): SQLite's busy (5), locked (6), I/O error (10) and cannot-open (14) codes, which
    /// Microsoft.Data.Sqlite does not report as <see cref="System.Data.Common.DbException.IsTransient"/>. This package does
    /// not depend on the driver, so the exception is recognised by its type name; its primary code is in
    /// <see cref="System.Runtime.InteropServices.ExternalException.ErrorCode"/>.
    /// </summary>
    private static bool SqliteUnavailable(Exception error) =>
        error is System.Data.Common.DbException db && db.GetType().FullName == "Microsoft.Data.Sqlite.SqliteException" && (db.ErrorCode & 0xFF) is 5 or 6 or 10 or 14;
}

internal sealed class FullLookup<TKey, TValue>(Func<CancellationToken, IAsyncEnumerable<KeyValuePair<TKey, TValue>>> load) : EtlLookup<TKey, TValue>
    where TKey : notnull
{
    internal override LookupSession Open() => new Session(load);

    private sealed class Session(Func<CancellationToken, IAsyncEnumerable<KeyValuePair<TKey, TValue>>> load) : LookupSession
    {
        private Dictionary<TKey, TValue>? _entries;

        public override ValueTask<TValue?> FindAsync(TKey key, CancellationToken cancellationToken) =>
            _entries is { } entries ? new(entries.TryGetValue(key, out var value) ? value : default) : LoadAsync(key, cancellationToken);

        private async ValueTask<TValue?> LoadAsync(TKey key, CancellationToken cancellationToken)
        {
            var entries = new Dictionary<TKey, TValue>();
            await foreach (var (k, v) in load(cancellationToken).WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                entries[k] = v;
            }

            Loads++;
            _entries = entries;
            return entries.TryGetValue(key, out var value) ? value : default;
        }

        // The load reads the whole dimension, whatever the row: its failure, a cancellation included (a client's own timeout
        // or a stop), is never the row's.
        protected override bool IsOutage(Exception error, IReadOnlyList<IStorageErrorClassifier> classifiers) => true;
    }
}

internal sealed class LruLookup<TKey, TValue>(Func<TKey, CancellationToken, ValueTask<TValue?>> find, int capacity, long? maxBytes, Func<TKey, TValue?, long>? size) : EtlLookup<TKey, TValue>
    where TKey : notnull
{
    internal override LookupSession Open() => new Session(find, capacity, maxBytes, size);

    private sealed class Session(Func<TKey, CancellationToken, ValueTask<TValue?>> find, int capacity, long? maxBytes, Func<TKey, TValue?, long>? size) : LookupSession
    {
        private readonly Dictionary<TKey, LinkedListNode<(TKey Key, TValue? Value)>> _index = new(Math.Min(capacity, 4096));
        private readonly LinkedList<(TKey Key, TValue? Value)> _recent = new();
        private long _bytes;

        public override ValueTask<TValue?> FindAsync(TKey key, CancellationToken cancellationToken)
        {
            if (_index.TryGetValue(key, out var node))
            {
                _recent.Remove(node);
                _recent.AddFirst(node);
                return new(node.Value.Value);
            }

            return MissAsync(key, cancellationToken);
        }

        private async ValueTask<TValue?> MissAsync(TKey key, CancellationToken cancellationToken)
        {
            var value = await find(key, cancellationToken).ConfigureAwait(false);
            Loads++;
            var bytes = size is null ? 0 : size(key, value);
            if (bytes > maxBytes)
            {
                return value;
            }

            while (_recent.Last is { } oldest && (_index.Count >= capacity || _bytes + bytes > maxBytes))
            {
                _recent.RemoveLast();
                _index.Remove(oldest.Value.Key);
                _bytes -= size is null ? 0 : size(oldest.Value.Key, oldest.Value.Value);
            }

            _index[key] = _recent.AddFirst((key, value));
            _bytes += bytes;
            return value;
        }

        protected override bool IsOutage(Exception error, IReadOnlyList<IStorageErrorClassifier> classifiers) => EtlDimensionOutage.Is(error, classifiers);
    }
}

internal sealed class UncachedLookup<TKey, TValue>(Func<TKey, CancellationToken, ValueTask<TValue?>> find) : EtlLookup<TKey, TValue>
    where TKey : notnull
{
    internal override LookupSession Open() => new Session(find);

    private sealed class Session(Func<TKey, CancellationToken, ValueTask<TValue?>> find) : LookupSession
    {
        public override ValueTask<TValue?> FindAsync(TKey key, CancellationToken cancellationToken)
        {
            Loads++;
            return find(key, cancellationToken);
        }

        protected override bool IsOutage(Exception error, IReadOnlyList<IStorageErrorClassifier> classifiers) => EtlDimensionOutage.Is(error, classifiers);
    }
}
