using Patterns.Storage;

namespace Patterns.Conformance;

/// <summary>
/// A store that dies like a killed process: once armed, it lets a number of writes through and then fails the next
/// write and every one after it, without applying them. Reads keep working (they would fail too in a dead process,
/// but nothing reads after the crash that could write).
/// </summary>
/// <param name="fixture">The store underneath.</param>
/// <param name="writesBeforeCrash">How many writes succeed after <see cref="Arm"/>.</param>
public sealed class CrashingStore(EventStoreFixture fixture, int writesBeforeCrash)
    : IEventStorage, ICheckpointStore, ISnapshotStorage, IDocumentStorage, IUnitOfWorkStorage, IOutboxStore, ILeaseStore
{
    private readonly EventStoreFixtureStorage _inner = fixture.AsSingleStore();
    private readonly TaskCompletionSource _crashed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _armed;
    private int _writes;

    /// <summary>Gets a task that completes when the store has crashed.</summary>
    public Task Crashed => _crashed.Task;

    /// <inheritdoc />
    public EventStorageCapabilities Capabilities => _inner.Capabilities;

    /// <summary>Starts counting writes.</summary>
    public void Arm() => Volatile.Write(ref _armed, 1);

    /// <inheritdoc />
    public async ValueTask<AppendResult> AppendAsync(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events, InlineProjection? inlineProjection = null, CancellationToken cancellationToken = default)
    {
        Write();
        return await _inner.AppendAsync(streamId, expectedVersion, events, inlineProjection, cancellationToken);
    }

    /// <inheritdoc />
    public IAsyncEnumerable<StoredEvent> ReadStreamAsync(string streamId, ReadDirection direction = ReadDirection.Forward, long? fromVersion = null, long maxCount = long.MaxValue, CancellationToken cancellationToken = default) =>
        _inner.ReadStreamAsync(streamId, direction, fromVersion, maxCount, cancellationToken);

    /// <inheritdoc />
    public IAsyncEnumerable<StoredEvent> ReadAllAsync(long afterPosition = 0, EventFilter? filter = null, long maxCount = long.MaxValue, CancellationToken cancellationToken = default) =>
        _inner.ReadAllAsync(afterPosition, filter, maxCount, cancellationToken);

    /// <inheritdoc />
    public ValueTask<StreamState> GetStreamStateAsync(string streamId, CancellationToken cancellationToken = default) => _inner.GetStreamStateAsync(streamId, cancellationToken);

    /// <inheritdoc />
    public ValueTask<long> GetHeadPositionAsync(CancellationToken cancellationToken = default) => _inner.GetHeadPositionAsync(cancellationToken);

    /// <inheritdoc />
    public ValueTask DeleteStreamAsync(string streamId, ExpectedVersion expectedVersion, StreamDeleteMode mode = StreamDeleteMode.Soft, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.DeleteStreamAsync(streamId, expectedVersion, mode, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask TruncateStreamAsync(string streamId, long beforeVersion, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.TruncateStreamAsync(streamId, beforeVersion, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken) => _inner.WaitForEventsAsync(afterPosition, cancellationToken);

    /// <inheritdoc />
    public ValueTask<long?> LoadAsync(string name, CancellationToken cancellationToken = default) => _inner.LoadAsync(name, cancellationToken);

    /// <inheritdoc />
    public ValueTask SaveAsync(string name, long position, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.SaveAsync(name, position, cancellationToken);
    }

    /// <inheritdoc />
    ValueTask<StoredSnapshot?> ISnapshotStorage.LoadAsync(string streamId, CancellationToken cancellationToken) => ((ISnapshotStorage)_inner).LoadAsync(streamId, cancellationToken);

    /// <inheritdoc />
    public ValueTask SaveAsync(StoredSnapshot snapshot, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.SaveAsync(snapshot, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default) => _inner.GetAsync(collection, id, cancellationToken);

    /// <inheritdoc />
    public ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.UpsertAsync(collection, id, document, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.DeleteAsync(collection, id, cancellationToken);
    }

    /// <inheritdoc />
    public IAsyncEnumerable<KeyValuePair<string, byte[]>> ListAsync(string collection, CancellationToken cancellationToken = default) => _inner.ListAsync(collection, cancellationToken);

    /// <inheritdoc />
    public ValueTask ClearAsync(string collection, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.ClearAsync(collection, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.CommitAsync(work, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<StoredOutboxMessage>> ReadOutboxAsync(long afterSequence, int maxCount, CancellationToken cancellationToken = default) =>
        _inner.ReadOutboxAsync(afterSequence, maxCount, cancellationToken);

    /// <inheritdoc />
    public ValueTask<long> DeleteOutboxAsync(long throughSequence, Lease? fence = null, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.DeleteOutboxAsync(throughSequence, fence, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<long> DeleteOutboxRangeAsync(long afterSequence, long throughSequence, Lease? fence = null, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.DeleteOutboxRangeAsync(afterSequence, throughSequence, fence, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask WaitForOutboxAsync(long afterSequence, CancellationToken cancellationToken) => _inner.WaitForOutboxAsync(afterSequence, cancellationToken);

    /// <inheritdoc />
    public ValueTask<Lease?> TryAcquireLeaseAsync(string name, string owner, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.TryAcquireLeaseAsync(name, owner, duration, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<Lease?> RenewLeaseAsync(Lease lease, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.RenewLeaseAsync(lease, duration, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask ReleaseLeaseAsync(Lease lease, CancellationToken cancellationToken = default)
    {
        Write();
        return _inner.ReleaseLeaseAsync(lease, cancellationToken);
    }

    private void Write()
    {
        if (Volatile.Read(ref _armed) == 0)
        {
            return;
        }

        if (Interlocked.Increment(ref _writes) > writesBeforeCrash)
        {
            _crashed.TrySetResult();
            throw new IOException("The process was killed (simulated): this write and every later one are lost.");
        }
    }
}
