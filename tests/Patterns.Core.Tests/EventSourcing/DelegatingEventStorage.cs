using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

/// <summary>Passes every call to another storage (its units of work and leases too, when it has them); tests override one behaviour through the delegates.</summary>
public sealed class DelegatingEventStorage(IEventStorage inner) : IEventStorage, IUnitOfWorkStorage, ILeaseStore
{
    /// <summary>Gets or sets what runs before a lease is taken (with the lease's name); it may throw, as a store that is down.</summary>
    public Func<string, ValueTask>? OnAcquireLease { get; init; }

    /// <summary>Gets or sets what runs before a lease is renewed; it may throw, as a store that is down.</summary>
    public Func<Lease, ValueTask>? OnRenewLease { get; init; }

    public async ValueTask<Lease?> TryAcquireLeaseAsync(string name, string owner, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        if (OnAcquireLease is { } onAcquire)
        {
            await onAcquire(name);
        }

        return await ((ILeaseStore)inner).TryAcquireLeaseAsync(name, owner, duration, cancellationToken);
    }

    public async ValueTask<Lease?> RenewLeaseAsync(Lease lease, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        if (OnRenewLease is { } onRenew)
        {
            await onRenew(lease);
        }

        return await ((ILeaseStore)inner).RenewLeaseAsync(lease, duration, cancellationToken);
    }

    public ValueTask ReleaseLeaseAsync(Lease lease, CancellationToken cancellationToken = default) => ((ILeaseStore)inner).ReleaseLeaseAsync(lease, cancellationToken);

    public Func<long, CancellationToken, ValueTask>? OnWaitForEvents { get; init; }

    /// <summary>Gets or sets what runs when a read of the log starts (with the position it reads after).</summary>
    public Action<long>? OnReadAll { get; init; }

    /// <summary>Gets or sets what runs before a unit of work is passed on; the commit waits for it.</summary>
    public Func<UnitOfWork, ValueTask>? OnCommit { get; init; }

    /// <summary>Gets or sets what runs after a unit of work committed, before its result is returned (it may throw, as a reply lost on the way back).</summary>
    public Func<UnitOfWork, ValueTask>? AfterCommit { get; init; }

    public bool NumbersOutboxConsecutively => inner is IUnitOfWorkStorage { NumbersOutboxConsecutively: true };

    public async ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default)
    {
        if (OnCommit is { } onCommit)
        {
            await onCommit(work);
        }

        var result = await ((IUnitOfWorkStorage)inner).CommitAsync(work, cancellationToken);
        if (AfterCommit is { } afterCommit)
        {
            await afterCommit(work);
        }

        return result;
    }

    /// <summary>Gets every append's stream and whether it carried an inline projection, in call order.</summary>
    public System.Collections.Concurrent.ConcurrentQueue<(string StreamId, bool WithProjection)> Appends { get; } = new();

    public EventStorageCapabilities Capabilities => inner.Capabilities;

    public ValueTask<AppendResult> AppendAsync(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events, InlineProjection? inlineProjection = null, CancellationToken cancellationToken = default)
    {
        Appends.Enqueue((streamId, inlineProjection is not null));
        return inner.AppendAsync(streamId, expectedVersion, events, inlineProjection, cancellationToken);
    }

    public IAsyncEnumerable<StoredEvent> ReadStreamAsync(string streamId, ReadDirection direction = ReadDirection.Forward, long? fromVersion = null, long maxCount = long.MaxValue, CancellationToken cancellationToken = default) =>
        inner.ReadStreamAsync(streamId, direction, fromVersion, maxCount, cancellationToken);

    public IAsyncEnumerable<StoredEvent> ReadAllAsync(long afterPosition = 0, EventFilter? filter = null, long maxCount = long.MaxValue, CancellationToken cancellationToken = default)
    {
        OnReadAll?.Invoke(afterPosition);
        return inner.ReadAllAsync(afterPosition, filter, maxCount, cancellationToken);
    }

    public ValueTask<StreamState> GetStreamStateAsync(string streamId, CancellationToken cancellationToken = default) => inner.GetStreamStateAsync(streamId, cancellationToken);

    public ValueTask<long> GetHeadPositionAsync(CancellationToken cancellationToken = default) => inner.GetHeadPositionAsync(cancellationToken);

    public ValueTask DeleteStreamAsync(string streamId, ExpectedVersion expectedVersion, StreamDeleteMode mode = StreamDeleteMode.Soft, CancellationToken cancellationToken = default) =>
        inner.DeleteStreamAsync(streamId, expectedVersion, mode, cancellationToken);

    public ValueTask TruncateStreamAsync(string streamId, long beforeVersion, CancellationToken cancellationToken = default) =>
        inner.TruncateStreamAsync(streamId, beforeVersion, cancellationToken);

    public ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken) =>
        OnWaitForEvents is { } wait ? wait(afterPosition, cancellationToken) : inner.WaitForEventsAsync(afterPosition, cancellationToken);
}
