namespace Patterns.Storage;

/// <summary>Reads and writes read-model documents: serialized values keyed by collection and id.</summary>
public interface IDocumentWriter
{
    /// <summary>Gets a document, or null when there is none.</summary>
    /// <param name="collection">The collection (for example the read model's name).</param>
    /// <param name="id">The document's id within the collection.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The serialized document, or null.</returns>
    ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default);

    /// <summary>Inserts or replaces a document.</summary>
    /// <param name="collection">The collection.</param>
    /// <param name="id">The document's id.</param>
    /// <param name="document">The serialized document.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the write is done (inside a transaction, when it commits).</returns>
    ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default);

    /// <summary>Deletes a document.</summary>
    /// <param name="collection">The collection.</param>
    /// <param name="id">The document's id.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>Whether a document was deleted.</returns>
    ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default);
}

/// <summary>A document table for read models, in the same store as the events.</summary>
public interface IDocumentStorage : IDocumentWriter
{
    /// <summary>Lists a collection's documents in id order, paging through storage.</summary>
    /// <param name="collection">The collection.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The documents.</returns>
    IAsyncEnumerable<KeyValuePair<string, byte[]>> ListAsync(string collection, CancellationToken cancellationToken = default);

    /// <summary>
    /// Gets several documents of one collection. An async projection reads the documents a page of events folds into
    /// with one call before it handles the page; a store over a network reads them in one round trip (the default reads
    /// them one by one).
    /// </summary>
    /// <param name="collection">The collection.</param>
    /// <param name="ids">The documents' ids.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The documents found, by id; an id without a document has no entry.</returns>
    async ValueTask<IReadOnlyDictionary<string, byte[]>> GetManyAsync(string collection, IReadOnlyCollection<string> ids, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var found = new Dictionary<string, byte[]>(ids.Count, StringComparer.Ordinal);
        foreach (var id in ids)
        {
            if (await GetAsync(collection, id, cancellationToken).ConfigureAwait(false) is { } document)
            {
                found[id] = document;
            }
        }

        return found;
    }

    /// <summary>Deletes every document of a collection (used when a projection is rebuilt).</summary>
    /// <param name="collection">The collection.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the collection is empty.</returns>
    ValueTask ClearAsync(string collection, CancellationToken cancellationToken = default);
}
