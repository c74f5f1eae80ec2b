using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Patterns.Storage;

namespace Patterns.EventSourcing.InMemory;

/// <summary>
/// The in-process store: events, checkpoints, snapshots, read-model documents and inbox entries held in
/// memory. It is the default store and the one tests use; nothing survives the process.
/// </summary>
/// <remarks>
/// <para>
/// Appends (and deletes and truncations) run one at a time; each takes its global positions and publishes
/// its events under one lock, so positions are gap-free and in commit order, and a reader never sees an
/// event before every event with a lower position. Inline projections run inside the append, before the
/// events are published, against a buffer of document writes that is published with the events; an
/// exception thrown by a projection publishes nothing (<see cref="EventStorageCapabilities.TransactionalProjections"/>).
/// </para>
/// <para>
/// Reads copy a page of <see cref="InMemoryEventStorageOptions.PageSize"/> items under the lock and yield it
/// outside, so a slow reader never blocks writers. The store copies event data and documents on the way in
/// and documents on the way out, so callers may reuse their buffers. Thread-safe. It holds nothing to
/// dispose, so one instance may outlive a host (tests use that to restart a host on the same data).
/// </para>
/// </remarks>
[SuppressMessage("Design", "CA1001", Justification = "The SemaphoreSlim never allocates a wait handle (AvailableWaitHandle is not used), so there is nothing to release; the store stays usable as long as anyone holds it, across hosts.")]
public sealed partial class InMemoryEventStorage : IEventStorage, ICheckpointStore, ISnapshotStorage, IDocumentStorage, IInboxStore, IUnitOfWorkStorage, IOutboxStore, ILeaseStore
{
    private readonly SemaphoreSlim _writer = new(1, 1);
    private readonly Lock _gate = new();
    private readonly List<StoredEvent?> _log = [];
    private readonly Dictionary<string, StreamData> _streams = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _checkpoints = new(StringComparer.Ordinal);
    private readonly Dictionary<string, StoredSnapshot> _snapshots = new(StringComparer.Ordinal);
    private readonly Dictionary<string, SortedDictionary<string, byte[]>> _documents = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Consumer, string MessageId), DateTimeOffset> _inbox = [];
    private readonly TimeProvider _timeProvider;
    private readonly int _pageSize;
    private TaskCompletionSource? _appended;

    /// <summary>Initializes a new instance of the <see cref="InMemoryEventStorage"/> class.</summary>
    /// <param name="options">Its options; defaults when <see langword="null"/>.</param>
    /// <param name="timeProvider">The clock that stamps inbox entries; <see cref="TimeProvider.System"/> when <see langword="null"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><see cref="InMemoryEventStorageOptions.PageSize"/> is less than 1.</exception>
    public InMemoryEventStorage(InMemoryEventStorageOptions? options = null, TimeProvider? timeProvider = null)
    {
        _pageSize = options?.PageSize ?? new InMemoryEventStorageOptions().PageSize;
        ArgumentOutOfRangeException.ThrowIfLessThan(_pageSize, 1, nameof(options));
        _timeProvider = timeProvider ?? TimeProvider.System;
    }

    /// <inheritdoc />
    public EventStorageCapabilities Capabilities => EventStorageCapabilities.HardDelete | EventStorageCapabilities.TransactionalProjections;

    /// <inheritdoc />
    public async ValueTask<AppendResult> AppendAsync(
        string streamId,
        ExpectedVersion expectedVersion,
        IReadOnlyList<SerializedEvent> events,
        InlineProjection? inlineProjection = null,
        CancellationToken cancellationToken = default)
    {
        EventStorageArguments.ValidateAppend(streamId, events);
        await _writer.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            StoredEvent[] stored;
            lock (_gate)
            {
                var prepared = PrepareLocked(streamId, expectedVersion, events, null, out var retry);
                if (retry is not null)
                {
                    return retry.Value;
                }

                stored = prepared!;
            }

            // Appends are serialized by _writer, so the versions and positions taken above stay free while the
            // projection runs; nothing is visible until the commit below.
            DocumentBuffer? documents = null;
            if (inlineProjection is not null)
            {
                documents = new DocumentBuffer(this);
                await inlineProjection(stored, documents, cancellationToken).ConfigureAwait(false);
            }

            cancellationToken.ThrowIfCancellationRequested();
            TaskCompletionSource? appended;
            lock (_gate)
            {
                PublishLocked(streamId, stored);
                documents?.CommitLocked();
                appended = _appended;
                _appended = null;
            }

            appended?.TrySetResult();
            return new AppendResult(streamId, stored[^1].Version, stored[0].Position, stored[^1].Position);
        }
        finally
        {
            _writer.Release();
        }
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<StoredEvent> ReadStreamAsync(
        string streamId,
        ReadDirection direction = ReadDirection.Forward,
        long? fromVersion = null,
        long maxCount = long.MaxValue,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        var next = fromVersion;
        var remaining = maxCount;
        while (remaining > 0)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var page = ReadStreamPage(streamId, direction, next, (int)Math.Min(remaining, _pageSize));
            if (page.Length == 0)
            {
                yield break;
            }

            foreach (var e in page)
            {
                yield return e;
            }

            remaining -= page.Length;
            next = direction == ReadDirection.Forward ? page[^1].Version + 1 : page[^1].Version - 1;
            if (next < 1)
            {
                yield break;
            }

            await Task.Yield();
        }
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<StoredEvent> ReadAllAsync(
        long afterPosition = 0,
        EventFilter? filter = null,
        long maxCount = long.MaxValue,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(afterPosition);
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        filter = filter is { IsAll: false } ? filter : null;
        var after = afterPosition;
        var remaining = maxCount;
        while (remaining > 0)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var (page, scannedTo) = ReadAllPage(after, filter, (int)Math.Min(remaining, _pageSize));
            foreach (var e in page)
            {
                yield return e;
            }

            remaining -= page.Count;
            if (scannedTo == after)
            {
                yield break;
            }

            after = scannedTo;
            await Task.Yield();
        }
    }

    /// <inheritdoc />
    public ValueTask<StreamState> GetStreamStateAsync(string streamId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        lock (_gate)
        {
            return new ValueTask<StreamState>(_streams.TryGetValue(streamId, out var stream)
                ? new StreamState(streamId, stream.Version, stream.IsDeleted, stream.TruncatedBefore)
                : new StreamState(streamId, 0, false, 0));
        }
    }

    /// <inheritdoc />
    public ValueTask<long> GetHeadPositionAsync(CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            return new ValueTask<long>(_log.Count);
        }
    }

    /// <inheritdoc />
    public async ValueTask DeleteStreamAsync(
        string streamId,
        ExpectedVersion expectedVersion,
        StreamDeleteMode mode = StreamDeleteMode.Soft,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        await _writer.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            lock (_gate)
            {
                _streams.TryGetValue(streamId, out var stream);
                var current = stream?.Version ?? 0;
                if (!expectedVersion.IsSatisfiedBy(current))
                {
                    throw new WrongExpectedVersionException(streamId, expectedVersion, current);
                }

                if (stream is null)
                {
                    stream = new StreamData();
                    _streams.Add(streamId, stream);
                }

                stream.IsDeleted = true;
                if (mode == StreamDeleteMode.Hard)
                {
                    foreach (var e in stream.Events)
                    {
                        _log[(int)(e.Position - 1)] = null;
                    }

                    stream.Clear();
                    _snapshots.Remove(streamId);
                }
            }
        }
        finally
        {
            _writer.Release();
        }
    }

    /// <inheritdoc />
    public async ValueTask TruncateStreamAsync(string streamId, long beforeVersion, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        ArgumentOutOfRangeException.ThrowIfNegative(beforeVersion);
        await _writer.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            lock (_gate)
            {
                if (!_streams.TryGetValue(streamId, out var stream))
                {
                    return;
                }

                if (stream.IsDeleted)
                {
                    throw new StreamDeletedException(streamId);
                }

                stream.TruncatedBefore = Math.Max(stream.TruncatedBefore, beforeVersion);
            }
        }
        finally
        {
            _writer.Release();
        }
    }

    /// <inheritdoc />
    public ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }

        Task wait;
        lock (_gate)
        {
            if (_log.Count > afterPosition)
            {
                return default;
            }

            wait = (_appended ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }

        return new ValueTask(wait.WaitAsync(cancellationToken));
    }

    /// <inheritdoc />
    ValueTask<long?> ICheckpointStore.LoadAsync(string name, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        lock (_gate)
        {
            return new ValueTask<long?>(_checkpoints.TryGetValue(name, out var position) ? position : null);
        }
    }

    /// <inheritdoc />
    ValueTask ICheckpointStore.SaveAsync(string name, long position, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentOutOfRangeException.ThrowIfNegative(position);
        lock (_gate)
        {
            _checkpoints[name] = position;
        }

        return default;
    }

    /// <inheritdoc />
    ValueTask<StoredSnapshot?> ISnapshotStorage.LoadAsync(string streamId, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        lock (_gate)
        {
            return new ValueTask<StoredSnapshot?>(_snapshots.GetValueOrDefault(streamId));
        }
    }

    /// <inheritdoc />
    ValueTask ISnapshotStorage.SaveAsync(StoredSnapshot snapshot, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        ArgumentException.ThrowIfNullOrEmpty(snapshot.StreamId, nameof(snapshot));
        var copy = snapshot with { Data = snapshot.Data.ToArray() };
        lock (_gate)
        {
            if (!_snapshots.TryGetValue(snapshot.StreamId, out var existing) || existing.Version <= snapshot.Version)
            {
                _snapshots[snapshot.StreamId] = copy;
            }
        }

        return default;
    }

    /// <inheritdoc />
    public ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default)
    {
        ValidateDocumentKey(collection, id);
        lock (_gate)
        {
            return new ValueTask<byte[]?>(GetLocked(collection, id)?.ToArray());
        }
    }

    /// <inheritdoc />
    public ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default)
    {
        ValidateDocumentKey(collection, id);
        var copy = document.ToArray();
        lock (_gate)
        {
            UpsertLocked(collection, id, copy);
        }

        return default;
    }

    /// <inheritdoc />
    public ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default)
    {
        ValidateDocumentKey(collection, id);
        lock (_gate)
        {
            return new ValueTask<bool>(DeleteLocked(collection, id));
        }
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<KeyValuePair<string, byte[]>> ListAsync(
        string collection, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(collection);
        string? after = null;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var page = ListPage(collection, after);
            foreach (var document in page)
            {
                yield return document;
            }

            if (page.Count < _pageSize)
            {
                yield break;
            }

            after = page[^1].Key;
            await Task.Yield();
        }
    }

    /// <inheritdoc />
    public ValueTask ClearAsync(string collection, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(collection);
        lock (_gate)
        {
            _documents.Remove(collection);
        }

        return default;
    }

    /// <inheritdoc />
    public ValueTask<bool> ContainsAsync(string consumer, string messageId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(consumer);
        ArgumentException.ThrowIfNullOrEmpty(messageId);
        lock (_gate)
        {
            return new ValueTask<bool>(_inbox.ContainsKey((consumer, messageId)));
        }
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlySet<string>> ContainsManyAsync(string consumer, IReadOnlyCollection<string> messageIds, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(consumer);
        ArgumentNullException.ThrowIfNull(messageIds);
        cancellationToken.ThrowIfCancellationRequested();
        var found = new HashSet<string>(StringComparer.Ordinal);
        lock (_gate)
        {
            foreach (var id in messageIds)
            {
                ArgumentException.ThrowIfNullOrEmpty(id, nameof(messageIds));
                cancellationToken.ThrowIfCancellationRequested();
                if (_inbox.ContainsKey((consumer, id)))
                {
                    found.Add(id);
                }
            }
        }

        return new ValueTask<IReadOnlySet<string>>(found);
    }

    /// <inheritdoc />
    public ValueTask<bool> TryMarkHandledAsync(string consumer, string messageId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(consumer);
        ArgumentException.ThrowIfNullOrEmpty(messageId);
        var now = _timeProvider.GetUtcNow();
        lock (_gate)
        {
            return new ValueTask<bool>(_inbox.TryAdd((consumer, messageId), now));
        }
    }

    /// <inheritdoc />
    public ValueTask<long> PruneAsync(DateTimeOffset olderThan, CancellationToken cancellationToken = default)
    {
        long removed = 0;
        lock (_gate)
        {
            foreach (var (key, marked) in _inbox)
            {
                if (marked < olderThan)
                {
                    _inbox.Remove(key);
                    removed++;
                }
            }
        }

        return new ValueTask<long>(removed);
    }

    private static void ValidateDocumentKey(string collection, string id)
    {
        ArgumentException.ThrowIfNullOrEmpty(collection);
        ArgumentException.ThrowIfNullOrEmpty(id);
    }

    /// <summary>
    /// Checks an append against the stream and stamps its events with versions and positions. <paramref name="pending"/>
    /// holds the versions and head left by a unit of work's earlier appends, which are not published yet.
    /// </summary>
    private StoredEvent[]? PrepareLocked(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events, PendingAppends? pending, out AppendResult? retry)
    {
        retry = null;
        _streams.TryGetValue(streamId, out var stream);
        if (stream is not null && stream.IsDeleted)
        {
            throw new StreamDeletedException(streamId);
        }

        if (stream is not null && TryFindRetry(stream, streamId, expectedVersion, events) is { } original)
        {
            retry = original;
            return null;
        }

        var current = pending is not null && pending.Versions.TryGetValue(streamId, out var unitVersion) ? unitVersion : stream?.Version ?? 0;
        if (!expectedVersion.IsSatisfiedBy(current))
        {
            throw new WrongExpectedVersionException(streamId, expectedVersion, current);
        }

        var position = pending?.Head ?? _log.Count;
        var stored = StoredEvent.FromAppend(streamId, current + 1, position + 1, events, copyBuffers: true);

        if (pending is not null)
        {
            pending.Versions[streamId] = current + stored.Length;
            pending.Head = position + stored.Length;
        }

        return stored;
    }

    /// <summary>Adds prepared events to their stream and the log; the caller wakes waiting readers.</summary>
    private void PublishLocked(string streamId, StoredEvent[] stored)
    {
        if (!_streams.TryGetValue(streamId, out var stream))
        {
            stream = new StreamData();
            _streams.Add(streamId, stream);
        }

        foreach (var e in stored)
        {
            stream.Add(e);
            _log.Add(e);
        }

        stream.Version = stored[^1].Version;
    }

    /// <summary>Finds an exact retry of an earlier append: every id stored, consecutively, where the expected version puts them.</summary>
    private static AppendResult? TryFindRetry(StreamData stream, string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events)
    {
        Guid? firstKnown = null;
        var known = 0;
        for (var i = 0; i < events.Count; i++) // not foreach: it boxes the list's enumerator, for every append
        {
            var e = events[i];
            if (stream.TryFind(e.EventId, out _))
            {
                firstKnown ??= e.EventId;
                known++;
            }
        }

        if (known == 0)
        {
            return null;
        }

        if (known == events.Count)
        {
            stream.TryFind(events[0].EventId, out var first);
            var consecutive = true;
            for (var i = 1; i < events.Count && consecutive; i++)
            {
                consecutive = stream.TryFind(events[i].EventId, out var at) && at == first + i;
            }

            var firstVersion = stream.Events[first].Version;
            if (consecutive && expectedVersion.IsRetryAt(firstVersion))
            {
                var last = stream.Events[first + events.Count - 1];
                return new AppendResult(streamId, last.Version, stream.Events[first].Position, last.Position);
            }
        }

        throw new DuplicateEventException(streamId, firstKnown!.Value);
    }

    private StoredEvent[] ReadStreamPage(string streamId, ReadDirection direction, long? fromVersion, int count)
    {
        lock (_gate)
        {
            if (!_streams.TryGetValue(streamId, out var stream))
            {
                return [];
            }

            if (stream.IsDeleted)
            {
                throw new StreamDeletedException(streamId);
            }

            if (stream.Events.Count == 0)
            {
                return [];
            }

            var lowest = Math.Max(stream.TruncatedBefore, 1);
            var highest = stream.Version;
            long start, end;
            if (direction == ReadDirection.Forward)
            {
                start = Math.Max(fromVersion ?? 1, lowest);
                end = Math.Min(highest, start + count - 1);
            }
            else
            {
                end = Math.Min(fromVersion ?? highest, highest);
                start = Math.Max(lowest, end - count + 1);
            }

            if (start > end)
            {
                return [];
            }

            var page = new StoredEvent[end - start + 1];
            stream.Events.CopyTo((int)(start - 1), page, 0, page.Length);
            if (direction == ReadDirection.Backward)
            {
                Array.Reverse(page);
            }

            return page;
        }
    }

    private (List<StoredEvent> Page, long ScannedTo) ReadAllPage(long after, EventFilter? filter, int count)
    {
        // Bounds the work done under the lock when a filter selects few events.
        var scanLimit = Math.Max(count, _pageSize) * 8L;
        var page = new List<StoredEvent>(Math.Min(count, 64));
        lock (_gate)
        {
            var position = after;
            var end = Math.Min(_log.Count, after + scanLimit);
            while (position < end && page.Count < count)
            {
                var e = _log[(int)position];
                position++;
                if (e is not null && (filter is null || filter.Matches(e.StreamId, e.EventType)))
                {
                    page.Add(e);
                }
            }

            return (page, position);
        }
    }

    private List<KeyValuePair<string, byte[]>> ListPage(string collection, string? after)
    {
        var page = new List<KeyValuePair<string, byte[]>>();
        lock (_gate)
        {
            if (!_documents.TryGetValue(collection, out var documents))
            {
                return page;
            }

            // SortedDictionary cannot seek, so each page walks past the earlier keys; fine for an in-memory store.
            foreach (var (id, document) in documents)
            {
                if (after is not null && string.CompareOrdinal(id, after) <= 0)
                {
                    continue;
                }

                page.Add(new KeyValuePair<string, byte[]>(id, document.ToArray()));
                if (page.Count == _pageSize)
                {
                    break;
                }
            }
        }

        return page;
    }

    private byte[]? GetLocked(string collection, string id) =>
        _documents.TryGetValue(collection, out var documents) && documents.TryGetValue(id, out var document) ? document : null;

    private void UpsertLocked(string collection, string id, byte[] document)
    {
        if (!_documents.TryGetValue(collection, out var documents))
        {
            documents = new SortedDictionary<string, byte[]>(StringComparer.Ordinal);
            _documents.Add(collection, documents);
        }

        documents[id] = document;
    }

    private bool DeleteLocked(string collection, string id) =>
        _documents.TryGetValue(collection, out var documents) && documents.Remove(id);

    private sealed class StreamData
    {
        // Short streams are scanned for an event id; the index is built once a stream is longer (100,000 streams of one
        // or two events, such as suspended workflows, each kept an index of nearly 200 bytes).
        private const int IndexFrom = 16;
        private Dictionary<Guid, int>? _index;

        public List<StoredEvent> Events { get; } = [];

        /// <summary>Adds an event at the end of the stream.</summary>
        public void Add(StoredEvent e)
        {
            _index?.Add(e.EventId, Events.Count);
            Events.Add(e);
            if (_index is null && Events.Count >= IndexFrom)
            {
                _index = new Dictionary<Guid, int>(Events.Count * 2);
                for (var i = 0; i < Events.Count; i++)
                {
                    _index.Add(Events[i].EventId, i);
                }
            }
        }

        /// <summary>Finds the index in <see cref="Events"/> of the event with <paramref name="eventId"/>.</summary>
        public bool TryFind(Guid eventId, out int index)
        {
            if (_index is not null)
            {
                return _index.TryGetValue(eventId, out index);
            }

            for (index = 0; index < Events.Count; index++)
            {
                if (Events[index].EventId == eventId)
                {
                    return true;
                }
            }

            index = -1;
            return false;
        }

        /// <summary>Drops every event (a hard delete).</summary>
        public void Clear()
        {
            Events.Clear();
            Events.TrimExcess();
            _index = null;
        }

        public long Version { get; set; }

        public bool IsDeleted { get; set; }

        public long TruncatedBefore { get; set; }
    }

    /// <summary>The document writes of one append's inline projections, published with its events.</summary>
    private sealed class DocumentBuffer(InMemoryEventStorage owner) : IDocumentWriter
    {
        private readonly Dictionary<(string Collection, string Id), byte[]?> _writes = [];

        public ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default)
        {
            ValidateDocumentKey(collection, id);
            if (_writes.TryGetValue((collection, id), out var written))
            {
                return new ValueTask<byte[]?>(written?.ToArray());
            }

            return owner.GetAsync(collection, id, cancellationToken);
        }

        public ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default)
        {
            ValidateDocumentKey(collection, id);
            _writes[(collection, id)] = document.ToArray();
            return default;
        }

        public async ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default)
        {
            ValidateDocumentKey(collection, id);
            var existed = _writes.TryGetValue((collection, id), out var written)
                ? written is not null
                : await owner.GetAsync(collection, id, cancellationToken).ConfigureAwait(false) is not null;
            _writes[(collection, id)] = null;
            return existed;
        }

        public void Record(DocumentChange change) =>
            _writes[(change.Collection, change.Id)] = change.IsDelete ? null : change.Document.ToArray();

        public void CommitLocked()
        {
            foreach (var ((collection, id), document) in _writes)
            {
                if (document is null)
                {
                    owner.DeleteLocked(collection, id);
                }
                else
                {
                    owner.UpsertLocked(collection, id, document);
                }
            }
        }
    }
}
