using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.EventSourcing;

/// <summary>How to create and evolve one aggregate's state: no reflection, so it works trimmed and with Native AOT.</summary>
internal sealed record AggregateDefinition<TState>(Func<TState> Create, Func<TState, object, TState> Apply, AggregateOptions Options)
    where TState : class
{
    public string StreamPrefix { get; } = Options.StreamPrefix ?? DefaultPrefix();

    public string SnapshotType { get; } = MessageTypeNames.Default(typeof(TState));

    private static string DefaultPrefix()
    {
        var named = (MessageNameAttribute?)Attribute.GetCustomAttribute(typeof(TState), typeof(MessageNameAttribute), inherit: false);
        return (named?.Name ?? typeof(TState).Name) + "-";
    }
}

internal sealed class AggregateRepository<TState> : IAggregateRepository<TState>
    where TState : class
{
    private readonly AggregateDefinition<TState> _definition;
    private readonly IEventStore _store;
    private readonly EventTypeMap _types;
    private readonly ISnapshotStorage _snapshots;
    private readonly IMessageSerializer _serializer;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;

    public AggregateRepository(AggregateDefinition<TState> definition, IEventStore store, EventTypeMap types, ISnapshotStorage snapshots, IMessageSerializer serializer, TimeProvider timeProvider, ILogger logger)
    {
        _definition = definition;
        _store = store;
        _types = types;
        _snapshots = snapshots;
        _serializer = serializer;
        _timeProvider = timeProvider;
        _logger = logger;
    }

    private int SnapshotEvery => _definition.Options.SnapshotEvery;

    public string GetStreamId(string id)
    {
        ArgumentException.ThrowIfNullOrEmpty(id);
        return _definition.StreamPrefix + id;
    }

    public ValueTask<LoadedAggregate<TState>> LoadAsync(string id, CancellationToken cancellationToken = default) =>
        LoadCoreAsync(id, long.MaxValue, null, saveSnapshot: true, cancellationToken);

    public ValueTask<LoadedAggregate<TState>> LoadAsync(string id, long version, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(version);
        return LoadCoreAsync(id, version, null, saveSnapshot: false, cancellationToken);
    }

    public ValueTask<LoadedAggregate<TState>> LoadAsOfAsync(string id, DateTimeOffset pointInTime, CancellationToken cancellationToken = default) =>
        LoadCoreAsync(id, long.MaxValue, pointInTime, saveSnapshot: false, cancellationToken);

    public async ValueTask<LoadedAggregate<TState>> SaveAsync(LoadedAggregate<TState> aggregate, IEnumerable<object> events, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(aggregate);
        ArgumentNullException.ThrowIfNull(events);
        var data = events.Select(EventStoreExtensions.ToEventData).ToArray();
        if (data.Length == 0)
        {
            return aggregate;
        }

        var result = await _store.AppendAsync(aggregate.StreamId, ExpectedVersion.Exact(aggregate.Version), data, cancellationToken).ConfigureAwait(false);
        // The new events are applied as a load would apply them: upcast, so the state does not depend on whether it was reloaded.
        var state = aggregate.State;
        for (var i = 0; i < data.Length; i++)
        {
            var e = data[i];
            var stored = new StoredEvent(e.EventId, aggregate.StreamId, aggregate.Version + i + 1, result.FirstPosition + i, string.Empty, default, default);
            state = _definition.Apply(state, _types.UpcastTyped(e.Data, stored));
        }

        if (SnapshotEvery > 0 && result.Version / SnapshotEvery > aggregate.Version / SnapshotEvery)
        {
            await TrySaveSnapshotAsync(aggregate.StreamId, state, result.Version, afterAppend: true, cancellationToken).ConfigureAwait(false);
        }

        return new LoadedAggregate<TState>(aggregate.Id, aggregate.StreamId, state, result.Version, aggregate.SnapshotVersion);
    }

    public async ValueTask<LoadedAggregate<TState>> ExecuteAsync(string id, Func<TState, IEnumerable<object>> decide, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(decide);
        for (var attempt = 0; ; attempt++)
        {
            var loaded = await LoadAsync(id, cancellationToken).ConfigureAwait(false);
            var events = decide(loaded.State)?.ToList() ?? [];
            if (events.Count == 0)
            {
                return loaded;
            }

            try
            {
                return await SaveAsync(loaded, events, cancellationToken).ConfigureAwait(false);
            }
            catch (WrongExpectedVersionException) when (attempt < _definition.Options.ConflictRetries)
            {
                EventSourcingLog.AggregateConflict(_logger, loaded.StreamId, attempt + 1);
            }
        }
    }

    private async ValueTask<LoadedAggregate<TState>> LoadCoreAsync(string id, long maxVersion, DateTimeOffset? until, bool saveSnapshot, CancellationToken cancellationToken)
    {
        var streamId = GetStreamId(id);
        var state = _definition.Create();
        long version = 0;
        long? snapshotVersion = null;

        // A point-in-time load replays from the first event: a snapshot says nothing about when its events happened.
        if (SnapshotEvery > 0 && until is null
            && await LoadSnapshotAsync(streamId, maxVersion, cancellationToken).ConfigureAwait(false) is { } snapshot)
        {
            (state, version) = snapshot;
            snapshotVersion = version;
        }

        var read = false;
        if (version < maxVersion)
        {
            var remaining = maxVersion == long.MaxValue ? long.MaxValue : maxVersion - version;
            await foreach (var e in _store.ReadStreamAsync(streamId, ReadDirection.Forward, version + 1, remaining, cancellationToken).ConfigureAwait(false))
            {
                read = true;
                if (e.Version != version + 1)
                {
                    // A truncation hid the events in between: replaying without them would build a wrong state.
                    throw Truncated(streamId, version, e.Version);
                }

                if (until is { } limit && e.Timestamp > limit)
                {
                    break;
                }

                state = _definition.Apply(state, e.Data);
                version = e.Version;
            }
        }

        if (!read)
        {
            // Nothing came back: the stream may be deleted (a read is skipped when a snapshot already reaches the
            // version asked for) or truncated past every event the load still needs.
            var stream = await _store.GetStreamStateAsync(streamId, cancellationToken).ConfigureAwait(false);
            if (stream.IsDeleted)
            {
                throw new StreamDeletedException(streamId);
            }

            if (version < maxVersion && stream.Version > version && stream.TruncatedBefore > version + 1)
            {
                throw Truncated(streamId, version, stream.TruncatedBefore);
            }
        }

        if (saveSnapshot && SnapshotEvery > 0 && version - (snapshotVersion ?? 0) >= SnapshotEvery)
        {
            await TrySaveSnapshotAsync(streamId, state, version, afterAppend: false, cancellationToken).ConfigureAwait(false);
        }

        return new LoadedAggregate<TState>(id, streamId, state, version, snapshotVersion);
    }

    private static InvalidOperationException Truncated(string streamId, long loadedVersion, long firstReadable) => new(string.Create(
        System.Globalization.CultureInfo.InvariantCulture,
        $"Stream '{streamId}' is truncated: its events before version {firstReadable} are no longer read, so the aggregate cannot be rebuilt past version {loadedVersion}. " +
        $"It needs a usable snapshot at version {firstReadable - 1} or later (a snapshot is not used when its type or schema version differs, when it is newer than the version asked for, or by a point-in-time load)."));

    private async ValueTask<(TState State, long Version)?> LoadSnapshotAsync(string streamId, long maxVersion, CancellationToken cancellationToken)
    {
        var snapshot = await _snapshots.LoadAsync(streamId, cancellationToken).ConfigureAwait(false);
        if (snapshot is null)
        {
            return null;
        }

        string? reason = null;
        if (!string.Equals(snapshot.SnapshotType, _definition.SnapshotType, StringComparison.Ordinal))
        {
            reason = $"it holds '{snapshot.SnapshotType}', not '{_definition.SnapshotType}'.";
        }
        else if (snapshot.SchemaVersion != _definition.Options.SnapshotSchemaVersion)
        {
            reason = $"its schema version is {snapshot.SchemaVersion}, and the aggregate's is now {_definition.Options.SnapshotSchemaVersion}.";
        }
        else if (snapshot.Version > maxVersion)
        {
            reason = $"it is newer than the requested version {maxVersion}.";
        }

        if (reason is null)
        {
            try
            {
                return ((TState)_serializer.Deserialize(snapshot.Data, typeof(TState)), snapshot.Version);
            }
            catch (Exception ex) when (ex is MessageDeserializationException or InvalidCastException or NotSupportedException)
            {
                reason = $"it cannot be deserialized: {ex.Message}";
            }
        }

        EventSourcingLog.SnapshotIgnored(_logger, streamId, snapshot.Version, reason);
        return null;
    }

    /// <summary>Saves a snapshot; a failure is logged and never fails the caller (nor, after an append, does a cancellation: the events are committed).</summary>
    private async ValueTask TrySaveSnapshotAsync(string streamId, TState state, long version, bool afterAppend, CancellationToken cancellationToken)
    {
        try
        {
            var data = _serializer.SerializeToMemory(state, typeof(TState));
            await _snapshots.SaveAsync(
                new StoredSnapshot(streamId, version, _definition.SnapshotType, _definition.Options.SnapshotSchemaVersion, data, _timeProvider.GetUtcNow()),
                cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (afterAppend || ex is not OperationCanceledException)
        {
            // After an append, throwing would tell the caller that committed events failed, and a retry would
            // decide and append again; the next load saves the snapshot instead.
            EventSourcingLog.SnapshotFailed(_logger, ex, streamId, version);
        }
    }
}
