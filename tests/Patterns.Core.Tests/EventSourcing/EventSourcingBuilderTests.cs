using Microsoft.Extensions.DependencyInjection;
using Patterns.EventSourcing.InMemory;
using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

public sealed class EventSourcingBuilderTests
{
    [Fact]
    public void AddEventSourcing_NoStoreChosen_UsesOneInMemoryStoreForEveryInterface()
    {
        var services = new ServiceCollection();
        services.AddEventSourcing();
        using var provider = services.BuildServiceProvider();

        var events = provider.GetRequiredService<IEventStorage>();
        events.Should().BeOfType<InMemoryEventStorage>();
        provider.GetRequiredService<ICheckpointStore>().Should().BeSameAs(events);
        provider.GetRequiredService<ISnapshotStorage>().Should().BeSameAs(events);
        provider.GetRequiredService<IDocumentStorage>().Should().BeSameAs(events);
        provider.GetRequiredService<IInboxStore>().Should().BeSameAs(events);
    }

    [Fact]
    public void UseStorage_PluginStore_ReplacesTheDefaultEvenWhenAddEventSourcingIsCalledAgain()
    {
        var custom = new InMemoryEventStorage();
        var services = new ServiceCollection();
        services.AddEventSourcing(es => es.UseStorage(_ => custom));
        services.AddEventSourcing();
        using var provider = services.BuildServiceProvider();

        provider.GetRequiredService<IEventStorage>().Should().BeSameAs(custom);
        provider.GetRequiredService<ICheckpointStore>().Should().BeSameAs(custom);
        provider.GetRequiredService<ISnapshotStorage>().Should().BeSameAs(custom);
        provider.GetRequiredService<IDocumentStorage>().Should().BeSameAs(custom);
        provider.GetRequiredService<IInboxStore>().Should().BeSameAs(custom);
        services.Count(d => d.ServiceType == typeof(IEventStorage)).Should().Be(1);
    }

    [Fact]
    public void UseStorage_StoreWithoutInbox_RemovesTheDefaultInbox()
    {
        var services = new ServiceCollection();
        services.AddEventSourcing(es => es.UseStorage(_ => new NoInboxStore(new InMemoryEventStorage())));
        using var provider = services.BuildServiceProvider();

        provider.GetRequiredService<IEventStorage>().Should().BeOfType<NoInboxStore>();
        provider.GetService<IInboxStore>().Should().BeNull("an inbox in memory beside a durable store would silently lose entries");
    }

    private sealed class NoInboxStore(InMemoryEventStorage inner) : IEventStorage, ICheckpointStore, ISnapshotStorage, IDocumentStorage
    {
        public EventStorageCapabilities Capabilities => inner.Capabilities;

        public ValueTask<AppendResult> AppendAsync(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events, InlineProjection? inlineProjection = null, CancellationToken cancellationToken = default) =>
            inner.AppendAsync(streamId, expectedVersion, events, inlineProjection, cancellationToken);

        public IAsyncEnumerable<StoredEvent> ReadStreamAsync(string streamId, ReadDirection direction = ReadDirection.Forward, long? fromVersion = null, long maxCount = long.MaxValue, CancellationToken cancellationToken = default) =>
            inner.ReadStreamAsync(streamId, direction, fromVersion, maxCount, cancellationToken);

        public IAsyncEnumerable<StoredEvent> ReadAllAsync(long afterPosition = 0, EventFilter? filter = null, long maxCount = long.MaxValue, CancellationToken cancellationToken = default) =>
            inner.ReadAllAsync(afterPosition, filter, maxCount, cancellationToken);

        public ValueTask<StreamState> GetStreamStateAsync(string streamId, CancellationToken cancellationToken = default) => inner.GetStreamStateAsync(streamId, cancellationToken);

        public ValueTask<long> GetHeadPositionAsync(CancellationToken cancellationToken = default) => inner.GetHeadPositionAsync(cancellationToken);

        public ValueTask DeleteStreamAsync(string streamId, ExpectedVersion expectedVersion, StreamDeleteMode mode = StreamDeleteMode.Soft, CancellationToken cancellationToken = default) =>
            inner.DeleteStreamAsync(streamId, expectedVersion, mode, cancellationToken);

        public ValueTask TruncateStreamAsync(string streamId, long beforeVersion, CancellationToken cancellationToken = default) => inner.TruncateStreamAsync(streamId, beforeVersion, cancellationToken);

        public ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken) => inner.WaitForEventsAsync(afterPosition, cancellationToken);

        public ValueTask<long?> LoadAsync(string name, CancellationToken cancellationToken = default) => ((ICheckpointStore)inner).LoadAsync(name, cancellationToken);

        public ValueTask SaveAsync(string name, long position, CancellationToken cancellationToken = default) => ((ICheckpointStore)inner).SaveAsync(name, position, cancellationToken);

        ValueTask<StoredSnapshot?> ISnapshotStorage.LoadAsync(string streamId, CancellationToken cancellationToken) => ((ISnapshotStorage)inner).LoadAsync(streamId, cancellationToken);

        public ValueTask SaveAsync(StoredSnapshot snapshot, CancellationToken cancellationToken = default) => ((ISnapshotStorage)inner).SaveAsync(snapshot, cancellationToken);

        public ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default) => inner.GetAsync(collection, id, cancellationToken);

        public ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default) => inner.UpsertAsync(collection, id, document, cancellationToken);

        public ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default) => inner.DeleteAsync(collection, id, cancellationToken);

        public IAsyncEnumerable<KeyValuePair<string, byte[]>> ListAsync(string collection, CancellationToken cancellationToken = default) => inner.ListAsync(collection, cancellationToken);

        public ValueTask ClearAsync(string collection, CancellationToken cancellationToken = default) => inner.ClearAsync(collection, cancellationToken);
    }
}
