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
        _dispose = dispose;
    }

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

    /// <inheritdoc />
    public ValueTask DisposeAsync() =>
        Interlocked.Exchange(ref _disposed, 1) == 0 && _dispose is not null ? _dispose() : default;
}
