using Patterns.EventSourcing;
using Patterns.EventSourcing.InMemory;
using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

/// <summary>
/// The document buffer of an async projection: a page's documents are read ahead in one call, and what the loop
/// committed serves later reads, so a document projection makes no store read per event.
/// </summary>
public sealed class PendingDocumentsTests
{
    [Fact]
    public async Task PrefetchAsync_ReadsThePagesDocumentsInOneCall_AndReadsThenComeFromIt()
    {
        var store = new CountingDocuments();
        await store.UpsertAsync("c", "a", "1"u8.ToArray());
        await store.UpsertAsync("c", "b", "2"u8.ToArray());
        var documents = new PendingDocuments(store, readsAhead: true);

        await documents.PrefetchAsync("c", ["a", "b", "missing"], CancellationToken.None);

        store.ManyReads.Should().Be(1);
        (await documents.GetAsync("c", "a")).Should().Equal("1"u8.ToArray());
        (await documents.GetAsync("c", "b")).Should().Equal("2"u8.ToArray());
        (await documents.GetAsync("c", "missing")).Should().BeNull("the read-ahead found no document");
        store.Reads.Should().Be(0);
        (await documents.GetAsync("c", "a")).Should().Equal("1"u8.ToArray(), "a second read goes to the store");
        store.Reads.Should().Be(1);
    }

    [Fact]
    public async Task Committed_WritesServeLaterReads_BufferedWritesWinOverTheReadAhead()
    {
        var store = new CountingDocuments();
        await store.UpsertAsync("c", "a", "1"u8.ToArray());
        var documents = new PendingDocuments(store, readsAhead: true);
        await documents.PrefetchAsync("c", ["a", "b"], CancellationToken.None);

        (await documents.GetAsync("c", "a")).Should().Equal("1"u8.ToArray());
        documents.BeginEvent();
        await documents.UpsertAsync("c", "a", "2"u8.ToArray());
        await documents.UpsertAsync("c", "b", "3"u8.ToArray());
        documents.AcceptEvent();
        (await documents.GetAsync("c", "b")).Should().Equal("3"u8.ToArray(), "the accepted write wins over the read-ahead's 'no document'");
        var work = new UnitOfWork();
        documents.AddTo(work);
        await store.Inner.CommitAsync(work);
        documents.Committed();

        (await documents.GetAsync("c", "a")).Should().Equal("2"u8.ToArray());
        (await documents.GetAsync("c", "b")).Should().Equal("3"u8.ToArray());
        store.Reads.Should().Be(0, "the committed writes are what the store holds");

        // The next page's read-ahead skips what is buffered, and forgets what the last one left.
        documents.BeginEvent();
        await documents.UpsertAsync("c", "a", "4"u8.ToArray());
        documents.AcceptEvent();
        await documents.PrefetchAsync("c", ["a", "b"], CancellationToken.None);
        store.RequestedIds.Should().BeEquivalentTo(new[] { new[] { "a", "b" }, ["b"] }, o => o.WithStrictOrdering());
        (await documents.GetAsync("c", "a")).Should().Equal("4"u8.ToArray());
    }

    [Fact]
    public async Task Committed_WithoutReadAhead_KeepsNothing()
    {
        var store = new CountingDocuments();
        var documents = new PendingDocuments(store);
        documents.BeginEvent();
        await documents.UpsertAsync("c", "a", "1"u8.ToArray());
        documents.AcceptEvent();
        var work = new UnitOfWork();
        documents.AddTo(work);
        await store.Inner.CommitAsync(work);
        documents.Committed();

        (await documents.GetAsync("c", "a")).Should().Equal("1"u8.ToArray());
        store.Reads.Should().Be(1, "a subscription that does not read ahead keeps no copy of what it wrote");
    }

    private sealed class CountingDocuments : IDocumentStorage
    {
        public InMemoryEventStorage Inner { get; } = new();

        public int Reads { get; private set; }

        public int ManyReads => RequestedIds.Count;

        public List<string[]> RequestedIds { get; } = [];

        public ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default)
        {
            Reads++;
            return Inner.GetAsync(collection, id, cancellationToken);
        }

        public async ValueTask<IReadOnlyDictionary<string, byte[]>> GetManyAsync(string collection, IReadOnlyCollection<string> ids, CancellationToken cancellationToken = default)
        {
            RequestedIds.Add([.. ids.Order(StringComparer.Ordinal)]);
            var found = new Dictionary<string, byte[]>(StringComparer.Ordinal);
            foreach (var id in ids)
            {
                if (await Inner.GetAsync(collection, id, cancellationToken) is { } document)
                {
                    found[id] = document;
                }
            }

            return found;
        }

        public ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default) =>
            Inner.UpsertAsync(collection, id, document, cancellationToken);

        public ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default) =>
            Inner.DeleteAsync(collection, id, cancellationToken);

        public IAsyncEnumerable<KeyValuePair<string, byte[]>> ListAsync(string collection, CancellationToken cancellationToken = default) =>
            Inner.ListAsync(collection, cancellationToken);

        public ValueTask ClearAsync(string collection, CancellationToken cancellationToken = default) => Inner.ClearAsync(collection, cancellationToken);
    }
}
