using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.EventSourcing;

/// <summary>A projection: turns events into read models (documents), or into anything else the application keeps.</summary>
/// <remarks>
/// Registered with <see cref="EventSourcingBuilder.AddProjection{TProjection}"/>. An async projection may see an
/// event again after a crash (at-least-once, from its last checkpoint), so it should be idempotent: upsert
/// documents by id rather than add to running totals, or make its projection inline.
/// </remarks>
public interface IProjection
{
    /// <summary>Projects one event.</summary>
    /// <param name="event">The event.</param>
    /// <param name="context">Where the projection writes: <see cref="ProjectionContext.Documents"/> or a typed <see cref="ProjectionContext.Collection{TDocument}"/>.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the event is projected.</returns>
    ValueTask ProjectAsync(RecordedEvent @event, ProjectionContext context, CancellationToken cancellationToken);
}

/// <summary>What a projection writes through.</summary>
public sealed class ProjectionContext
{
    private readonly IMessageSerializer _serializer;

    internal ProjectionContext(string projectionName, IDocumentWriter documents, IMessageSerializer serializer, bool isInline)
    {
        ProjectionName = projectionName;
        Documents = documents;
        _serializer = serializer;
        IsInline = isInline;
    }

    /// <summary>Gets the projection's name.</summary>
    public string ProjectionName { get; }

    /// <summary>Gets the documents, inside the append's transaction for an inline projection.</summary>
    public IDocumentWriter Documents { get; }

    /// <summary>Gets whether the projection runs inside an append.</summary>
    public bool IsInline { get; }

    /// <summary>Gets a typed view of a document collection, serialized with the configured serializer.</summary>
    /// <typeparam name="TDocument">The document type.</typeparam>
    /// <param name="name">The collection.</param>
    /// <returns>The collection.</returns>
    public DocumentCollection<TDocument> Collection<TDocument>(string name)
        where TDocument : class => new(name, Documents, _serializer);
}

/// <summary>A typed view of one document collection.</summary>
/// <typeparam name="TDocument">The document type; it must round-trip through the configured serializer.</typeparam>
public sealed class DocumentCollection<TDocument>
    where TDocument : class
{
    private readonly IDocumentWriter _documents;
    private readonly IMessageSerializer _serializer;

    internal DocumentCollection(string name, IDocumentWriter documents, IMessageSerializer serializer)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        Name = name;
        _documents = documents;
        _serializer = serializer;
    }

    /// <summary>Gets the collection's name.</summary>
    public string Name { get; }

    /// <summary>Gets a document, or null.</summary>
    /// <param name="id">The document id.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The document, or null when there is none.</returns>
    public async ValueTask<TDocument?> GetAsync(string id, CancellationToken cancellationToken = default)
    {
        var bytes = await _documents.GetAsync(Name, id, cancellationToken).ConfigureAwait(false);
        return bytes is null ? null : (TDocument)_serializer.Deserialize(bytes, typeof(TDocument));
    }

    /// <summary>Inserts or replaces a document.</summary>
    /// <param name="id">The document id.</param>
    /// <param name="document">The document.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the write is done.</returns>
    public ValueTask UpsertAsync(string id, TDocument document, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(document);
        return _documents.UpsertAsync(Name, id, _serializer.SerializeToMemory(document, typeof(TDocument)), cancellationToken);
    }

    /// <summary>Deletes a document.</summary>
    /// <param name="id">The document id.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>Whether a document was deleted.</returns>
    public ValueTask<bool> DeleteAsync(string id, CancellationToken cancellationToken = default) => _documents.DeleteAsync(Name, id, cancellationToken);

    /// <summary>Reads a document, changes it, and writes the result (or deletes the document when <paramref name="update"/> returns null).</summary>
    /// <param name="id">The document id.</param>
    /// <param name="update">Gets the current document (null when there is none) and returns the new one.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The new document, or null when it was deleted.</returns>
    public async ValueTask<TDocument?> UpdateAsync(string id, Func<TDocument?, TDocument?> update, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(update);
        var next = update(await GetAsync(id, cancellationToken).ConfigureAwait(false));
        if (next is null)
        {
            await DeleteAsync(id, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await UpsertAsync(id, next, cancellationToken).ConfigureAwait(false);
        }

        return next;
    }
}

/// <summary>Queries the read models that projections write to the document store.</summary>
public interface IReadModels
{
    /// <summary>Gets a document, or null.</summary>
    /// <typeparam name="TDocument">The document type.</typeparam>
    /// <param name="collection">The collection.</param>
    /// <param name="id">The document id.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The document, or null when there is none.</returns>
    ValueTask<TDocument?> GetAsync<TDocument>(string collection, string id, CancellationToken cancellationToken = default)
        where TDocument : class;

    /// <summary>Lists a collection's documents in id order, paging through the store.</summary>
    /// <typeparam name="TDocument">The document type.</typeparam>
    /// <param name="collection">The collection.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The documents with their ids.</returns>
    IAsyncEnumerable<KeyValuePair<string, TDocument>> ListAsync<TDocument>(string collection, CancellationToken cancellationToken = default)
        where TDocument : class;
}

/// <summary>The default <see cref="IReadModels"/>, over the document store and the configured serializer.</summary>
internal sealed class ReadModels(IDocumentStorage documents, IMessageSerializer serializer) : IReadModels
{
    public ValueTask<TDocument?> GetAsync<TDocument>(string collection, string id, CancellationToken cancellationToken = default)
        where TDocument : class => new DocumentCollection<TDocument>(collection, documents, serializer).GetAsync(id, cancellationToken);

    public async IAsyncEnumerable<KeyValuePair<string, TDocument>> ListAsync<TDocument>(
        string collection, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
        where TDocument : class
    {
        await foreach (var (id, bytes) in documents.ListAsync(collection, cancellationToken).ConfigureAwait(false))
        {
            yield return new KeyValuePair<string, TDocument>(id, (TDocument)serializer.Deserialize(bytes, typeof(TDocument)));
        }
    }
}

internal static class SerializerExtensions
{
    public static ReadOnlyMemory<byte> SerializeToMemory(this IMessageSerializer serializer, object value, Type type)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
        serializer.Serialize(buffer, value, type);
        return buffer.WrittenMemory;
    }
}
