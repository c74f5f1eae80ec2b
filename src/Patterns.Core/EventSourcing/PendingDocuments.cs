using Patterns.Storage;

namespace Patterns.EventSourcing;

/// <summary>
/// The document writes of a subscription or projection between two checkpoints, committed with the checkpoint in one
/// unit of work. Reads see the buffered writes first, then the store. Writes made while handling one event stay apart
/// until the event is accepted, so a handler attempt that throws (and is retried, parked or faults) leaves nothing behind.
/// </summary>
/// <remarks>Used by one processor loop at a time; not thread-safe.</remarks>
internal sealed class PendingDocuments(IDocumentStorage store, bool readsAhead = false) : IDocumentWriter
{
    // Null marks a delete. Insertion order is kept so that the unit of work replays the changes in order.
    private readonly Dictionary<(string Collection, string Id), byte[]?> _page = [];
    private readonly Dictionary<(string Collection, string Id), byte[]?> _event = [];

    // What the store holds, read ahead for a page (null: no document) or known from this loop's own commits. An entry
    // is taken out when it is read, so a handler gets the array itself, once; a second read goes to the store.
    private readonly Dictionary<(string Collection, string Id), byte[]?> _stored = [];

    /// <summary>Gets a value indicating whether accepted writes wait for a commit.</summary>
    public bool IsDirty => _page.Count > 0;

    /// <inheritdoc />
    public ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(collection);
        ArgumentException.ThrowIfNullOrEmpty(id);
        var key = (collection, id);
        if (_event.TryGetValue(key, out var written) || _page.TryGetValue(key, out written))
        {
            return new ValueTask<byte[]?>(written?.ToArray());
        }

        if (_stored.Remove(key, out var stored))
        {
            return new ValueTask<byte[]?>(stored);
        }

        return store.GetAsync(collection, id, cancellationToken);
    }

    /// <summary>
    /// Reads ahead, in one call, the documents of <paramref name="collection"/> that the next events will read, except
    /// those buffered here; forgets what an earlier read-ahead left unread.
    /// </summary>
    public async ValueTask PrefetchAsync(string collection, HashSet<string> ids, CancellationToken cancellationToken)
    {
        _stored.Clear();
        ids.RemoveWhere(id => _page.ContainsKey((collection, id)));
        if (ids.Count == 0)
        {
            return;
        }

        var found = await store.GetManyAsync(collection, ids, cancellationToken).ConfigureAwait(false);
        foreach (var id in ids)
        {
            _stored[(collection, id)] = found.TryGetValue(id, out var document) ? document : null;
        }
    }

    /// <inheritdoc />
    public ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(collection);
        ArgumentException.ThrowIfNullOrEmpty(id);
        _event[(collection, id)] = document.ToArray();
        return default;
    }

    /// <inheritdoc />
    public async ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default)
    {
        var existed = await GetAsync(collection, id, cancellationToken).ConfigureAwait(false) is not null;
        _event[(collection, id)] = null;
        return existed;
    }

    /// <summary>Starts an attempt at handling an event: drops what an earlier, failed attempt wrote.</summary>
    public void BeginEvent() => _event.Clear();

    /// <summary>Keeps the writes of the event just handled.</summary>
    public void AcceptEvent()
    {
        foreach (var (key, document) in _event)
        {
            _page[key] = document;
        }

        _event.Clear();
    }

    /// <summary>Writes a document that belongs to the page rather than to one handler attempt (a parked event's record).</summary>
    public void Write(string collection, string id, ReadOnlyMemory<byte>? document) =>
        _page[(collection, id)] = document?.ToArray();

    /// <summary>Adds the accepted writes to <paramref name="work"/>; call <see cref="Clear"/> once it has committed.</summary>
    public void AddTo(UnitOfWork work)
    {
        foreach (var ((collection, id), document) in _page)
        {
            if (document is null)
            {
                work.Delete(collection, id);
            }
            else
            {
                work.Upsert(collection, id, document);
            }
        }
    }

    /// <summary>Writes the accepted writes one by one, for a store without units of work (not atomic with the checkpoint).</summary>
    public async ValueTask WriteThroughAsync(CancellationToken cancellationToken)
    {
        foreach (var ((collection, id), document) in _page)
        {
            if (document is null)
            {
                await store.DeleteAsync(collection, id, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await store.UpsertAsync(collection, id, document, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Forgets the accepted writes once they have committed; they are what the store holds now.</summary>
    public void Committed()
    {
        if (readsAhead)
        {
            foreach (var (key, document) in _page)
            {
                _stored[key] = document;
            }
        }

        _page.Clear();
        _event.Clear();
    }

    /// <summary>Forgets every buffered write and everything read ahead.</summary>
    public void Clear()
    {
        _page.Clear();
        _event.Clear();
        _stored.Clear();
    }
}
