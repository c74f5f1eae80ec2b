using Patterns.Storage;

namespace Patterns.Conformance;

/// <summary>
/// One store under test, as <see cref="EventStoreConformanceTests"/> sees it: the event storage and the
/// checkpoint, snapshot, document and inbox stores that live beside it.
/// </summary>
/// <remarks>
/// The parts may be one object (a store class that implements every interface) or several sharing a
/// connection. <see cref="DisposeAsync"/> closes the store as an application shutting down would; for a
/// durable store the data stays where it is, so <see cref="EventStoreConformanceTests.ReopenAsync"/> can open
/// it again.
/// </remarks>
public sealed class EventStoreFixture : IAsyncDisposable
{
    private readonly Func<ValueTask>? _dispose;
    private int _disposed;

    /// <summary>Initializes a new instance of the <see cref="EventStoreFixture"/> class.</summary>
    /// <param name="events">The event storage.</param>
    /// <param name="checkpoints">The checkpoint store.</param>
    /// <param name="snapshots">The snapshot store.</param>
    /// <param name="documents">The read-model document store.</param>
    /// <param name="inbox">The inbox store, when the store has one; the inbox tests pass trivially without it.</param>
    /// <param name="dispose">Closes the store (connections, files); null when there is nothing to close.</param>
    public EventStoreFixture(
        IEventStorage events,
        ICheckpointStore checkpoints,
        ISnapshotStorage snapshots,
        IDocumentStorage documents,
        IInboxStore? inbox = null,
        Func<ValueTask>? dispose = null)
    {
        Events = events ?? throw new ArgumentNullException(nameof(events));
        Checkpoints = checkpoints ?? throw new ArgumentNullException(nameof(checkpoints));
        Snapshots = snapshots ?? throw new ArgumentNullException(nameof(snapshots));
        Documents = documents ?? throw new ArgumentNullException(nameof(documents));
        Inbox = inbox;
        UnitOfWork = events as IUnitOfWorkStorage ?? documents as IUnitOfWorkStorage;
        Outbox = events as IOutboxStore ?? documents as IOutboxStore;
        Leases = events as ILeaseStore ?? documents as ILeaseStore;
        _dispose = dispose;
    }

    /// <summary>Gets the unit-of-work side of the store, or null when the store has none (the unit-of-work tests then fail).</summary>
    public IUnitOfWorkStorage? UnitOfWork { get; }

    /// <summary>Gets the outbox side of the store, or null.</summary>
    public IOutboxStore? Outbox { get; }

    /// <summary>Gets the lease side of the store, or null.</summary>
    public ILeaseStore? Leases { get; }

    /// <summary>Gets the event storage.</summary>
    public IEventStorage Events { get; }

    /// <summary>Gets the checkpoint store.</summary>
    public ICheckpointStore Checkpoints { get; }

    /// <summary>Gets the snapshot store.</summary>
    public ISnapshotStorage Snapshots { get; }

    /// <summary>Gets the document store.</summary>
    public IDocumentStorage Documents { get; }

    /// <summary>Gets the inbox store, or null.</summary>
    public IInboxStore? Inbox { get; }

    /// <summary>Creates a fixture from one object that implements every store interface.</summary>
    /// <typeparam name="TStore">The store type.</typeparam>
    /// <param name="store">The store.</param>
    /// <param name="dispose">Closes the store; null to dispose <paramref name="store"/> when it is disposable.</param>
    /// <returns>The fixture.</returns>
    public static EventStoreFixture From<TStore>(TStore store, Func<ValueTask>? dispose = null)
        where TStore : IEventStorage, ICheckpointStore, ISnapshotStorage, IDocumentStorage
    {
        ArgumentNullException.ThrowIfNull(store);
        dispose ??= store switch
        {
            IAsyncDisposable asyncDisposable => asyncDisposable.DisposeAsync,
            IDisposable disposable => () =>
            {
                disposable.Dispose();
                return default;
            },
            _ => null,
        };
        return new EventStoreFixture(store, store, store, store, store as IInboxStore, dispose);
    }

    /// <summary>Gets the parts as one object implementing every store interface except the inbox, for <c>EventSourcingBuilder.UseStorage</c>.</summary>
    /// <returns>The store object.</returns>
    public EventStoreFixtureStorage AsSingleStore() => new(this);

    /// <inheritdoc />
    public ValueTask DisposeAsync() =>
        Interlocked.Exchange(ref _disposed, 1) == 0 && _dispose is not null ? _dispose() : default;
}

/// <summary>A fixture's parts as one store object (what <c>UseStorage</c> takes); it owns nothing, so a container's disposal leaves the fixture alone.</summary>
public sealed class EventStoreFixtureStorage(EventStoreFixture fixture) : IEventStorage, ICheckpointStore, ISnapshotStorage, IDocumentStorage, IUnitOfWorkStorage, IOutboxStore, ILeaseStore
{
    public ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default) => Require(fixture.UnitOfWork).CommitAsync(work, cancellationToken);

    public bool NumbersOutboxConsecutively => fixture.UnitOfWork?.NumbersOutboxConsecutively ?? false;

    public ValueTask<IReadOnlyList<StoredOutboxMessage>> ReadOutboxAsync(long afterSequence, int maxCount, CancellationToken cancellationToken = default) =>
        Require(fixture.Outbox).ReadOutboxAsync(afterSequence, maxCount, cancellationToken);

    public ValueTask<long> DeleteOutboxAsync(long throughSequence, Lease? fence = null, CancellationToken cancellationToken = default) =>
        Require(fixture.Outbox).DeleteOutboxAsync(throughSequence, fence, cancellationToken);

    public ValueTask<long> DeleteOutboxRangeAsync(long afterSequence, long throughSequence, Lease? fence = null, CancellationToken cancellationToken = default) =>
        Require(fixture.Outbox).DeleteOutboxRangeAsync(afterSequence, throughSequence, fence, cancellationToken);

    public ValueTask WaitForOutboxAsync(long afterSequence, CancellationToken cancellationToken) => Require(fixture.Outbox).WaitForOutboxAsync(afterSequence, cancellationToken);

    public ValueTask<Lease?> TryAcquireLeaseAsync(string name, string owner, TimeSpan duration, CancellationToken cancellationToken = default) =>
        Require(fixture.Leases).TryAcquireLeaseAsync(name, owner, duration, cancellationToken);

    public ValueTask<Lease?> RenewLeaseAsync(Lease lease, TimeSpan duration, CancellationToken cancellationToken = default) => Require(fixture.Leases).RenewLeaseAsync(lease, duration, cancellationToken);

    public ValueTask ReleaseLeaseAsync(Lease lease, CancellationToken cancellationToken = default) => Require(fixture.Leases).ReleaseLeaseAsync(lease, cancellationToken);

    public EventStorageCapabilities Capabilities => fixture.Events.Capabilities;

    public ValueTask<AppendResult> AppendAsync(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events, InlineProjection? inlineProjection = null, CancellationToken cancellationToken = default) =>
        fixture.Events.AppendAsync(streamId, expectedVersion, events, inlineProjection, cancellationToken);

    public IAsyncEnumerable<StoredEvent> ReadStreamAsync(string streamId, ReadDirection direction = ReadDirection.Forward, long? fromVersion = null, long maxCount = long.MaxValue, CancellationToken cancellationToken = default) =>
        fixture.Events.ReadStreamAsync(streamId, direction, fromVersion, maxCount, cancellationToken);

    public IAsyncEnumerable<StoredEvent> ReadAllAsync(long afterPosition = 0, EventFilter? filter = null, long maxCount = long.MaxValue, CancellationToken cancellationToken = default) =>
        fixture.Events.ReadAllAsync(afterPosition, filter, maxCount, cancellationToken);

    public ValueTask<StreamState> GetStreamStateAsync(string streamId, CancellationToken cancellationToken = default) => fixture.Events.GetStreamStateAsync(streamId, cancellationToken);

    public ValueTask<long> GetHeadPositionAsync(CancellationToken cancellationToken = default) => fixture.Events.GetHeadPositionAsync(cancellationToken);

    public ValueTask DeleteStreamAsync(string streamId, ExpectedVersion expectedVersion, StreamDeleteMode mode = StreamDeleteMode.Soft, CancellationToken cancellationToken = default) =>
        fixture.Events.DeleteStreamAsync(streamId, expectedVersion, mode, cancellationToken);

    public ValueTask TruncateStreamAsync(string streamId, long beforeVersion, CancellationToken cancellationToken = default) =>
        fixture.Events.TruncateStreamAsync(streamId, beforeVersion, cancellationToken);

    public ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken) => fixture.Events.WaitForEventsAsync(afterPosition, cancellationToken);

    public ValueTask<long?> LoadAsync(string name, CancellationToken cancellationToken = default) => fixture.Checkpoints.LoadAsync(name, cancellationToken);

    public ValueTask SaveAsync(string name, long position, CancellationToken cancellationToken = default) => fixture.Checkpoints.SaveAsync(name, position, cancellationToken);

    ValueTask<StoredSnapshot?> ISnapshotStorage.LoadAsync(string streamId, CancellationToken cancellationToken) => fixture.Snapshots.LoadAsync(streamId, cancellationToken);

    public ValueTask SaveAsync(StoredSnapshot snapshot, CancellationToken cancellationToken = default) => fixture.Snapshots.SaveAsync(snapshot, cancellationToken);

    public ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default) => fixture.Documents.GetAsync(collection, id, cancellationToken);

    public ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default) =>
        fixture.Documents.UpsertAsync(collection, id, document, cancellationToken);

    public ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default) => fixture.Documents.DeleteAsync(collection, id, cancellationToken);

    public IAsyncEnumerable<KeyValuePair<string, byte[]>> ListAsync(string collection, CancellationToken cancellationToken = default) => fixture.Documents.ListAsync(collection, cancellationToken);

    public ValueTask<IReadOnlyDictionary<string, byte[]>> GetManyAsync(string collection, IReadOnlyCollection<string> ids, CancellationToken cancellationToken = default) =>
        fixture.Documents.GetManyAsync(collection, ids, cancellationToken);

    public ValueTask ClearAsync(string collection, CancellationToken cancellationToken = default) => fixture.Documents.ClearAsync(collection, cancellationToken);

    private static T Require<T>(T? part)
        where T : class => part ?? throw new NotSupportedException($"The store under test does not implement {typeof(T).Name}.");
}
