using System.Diagnostics;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Patterns.Storage;
using Patterns.Telemetry;

namespace Patterns.EventSourcing;

/// <summary>The <see cref="IEventStore"/> facade over an <see cref="IEventStorage"/>.</summary>
internal sealed class EventStore : IEventStore
{
    private readonly EventTypeMap _types;
    private readonly TimeProvider _timeProvider;
    private readonly InlineProjector? _inline;
    private readonly ILogger _logger;

    public EventStore(IEventStorage storage, EventTypeMap types, TimeProvider timeProvider, InlineProjector? inline, ILogger logger)
    {
        Storage = storage;
        _types = types;
        _timeProvider = timeProvider;
        _inline = inline;
        _logger = logger;
    }

    public IEventStorage Storage { get; }

    public async ValueTask<AppendResult> AppendAsync(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<EventData> events, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(streamId);
        ArgumentNullException.ThrowIfNull(events);
        if (events.Count == 0)
        {
            throw new ArgumentException($"An append to stream '{streamId}' needs at least one event.", nameof(events));
        }

        var timestamp = _timeProvider.GetUtcNow();
        var serialized = new SerializedEvent[events.Count];
        for (var i = 0; i < serialized.Length; i++)
        {
            var data = events[i] ?? throw new ArgumentException($"The events appended to stream '{streamId}' contain null.", nameof(events));
            if (data.EventId == Guid.Empty)
            {
                // An empty id would make every later event with an empty id look like a retry of this one, and be dropped.
                throw new ArgumentException($"Event {i} appended to stream '{streamId}' ({data.Data.GetType().Name}) has an empty EventId; leave it unset for a new unique id, or derive it from the command for idempotent retries.", nameof(events));
            }

            serialized[i] = _types.Serialize(data, timestamp);
        }

        using var activity = EventSourcingTelemetry.StartAppend(streamId, serialized.Length);
        var started = EventSourcingTelemetry.AppendDuration.Enabled ? Stopwatch.GetTimestamp() : 0;
        AppendResult result;
        try
        {
            var projection = _inline?.For(streamId, events);
            result = projection is null
                ? await Storage.AppendAsync(streamId, expectedVersion, serialized, null, cancellationToken).ConfigureAwait(false)
                : await AppendInlineAsync(_inline!, streamId, expectedVersion, serialized, projection, cancellationToken).ConfigureAwait(false);
        }
        catch (WrongExpectedVersionException ex)
        {
            EventSourcingTelemetry.Conflicts.Add(1);
            EventSourcingLog.Conflict(_logger, streamId, ex.Expected.ToString(), ex.Actual);
            PatternsTelemetry.RecordError(activity, ex);
            throw;
        }
        catch (Exception ex)
        {
            PatternsTelemetry.RecordError(activity, ex);
            throw;
        }
        finally
        {
            if (started != 0)
            {
                EventSourcingTelemetry.AppendDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds);
            }
        }

        EventSourcingTelemetry.Appended.Add(serialized.Length);
        return result;
    }

    /// <summary>Appends with the inline projections, through the gate an inline rebuild closes while it swaps.</summary>
    private async ValueTask<AppendResult> AppendInlineAsync(
        InlineProjector inline, string streamId, ExpectedVersion expectedVersion, SerializedEvent[] serialized, InlineProjection projection, CancellationToken cancellationToken)
    {
        await inline.Gate.EnterAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            return await Storage.AppendAsync(streamId, expectedVersion, serialized, projection, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            inline.Gate.Exit();
        }
    }

    public async IAsyncEnumerable<RecordedEvent> ReadStreamAsync(
        string streamId,
        ReadDirection direction = ReadDirection.Forward,
        long? fromVersion = null,
        long maxCount = long.MaxValue,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var activity = EventSourcingTelemetry.StartRead(streamId);
        await foreach (var stored in Storage.ReadStreamAsync(streamId, direction, fromVersion, maxCount, cancellationToken).ConfigureAwait(false))
        {
            EventSourcingTelemetry.Read.Add(1);
            yield return _types.Deserialize(stored);
        }
    }

    public async IAsyncEnumerable<RecordedEvent> ReadAllAsync(
        long afterPosition = 0,
        EventFilter? filter = null,
        long maxCount = long.MaxValue,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var activity = EventSourcingTelemetry.StartRead(null);
        await foreach (var stored in Storage.ReadAllAsync(afterPosition, filter, maxCount, cancellationToken).ConfigureAwait(false))
        {
            EventSourcingTelemetry.Read.Add(1);
            yield return _types.Deserialize(stored);
        }
    }

    public ValueTask<StreamState> GetStreamStateAsync(string streamId, CancellationToken cancellationToken = default) =>
        Storage.GetStreamStateAsync(streamId, cancellationToken);

    public ValueTask<long> GetHeadPositionAsync(CancellationToken cancellationToken = default) => Storage.GetHeadPositionAsync(cancellationToken);

    public ValueTask DeleteStreamAsync(string streamId, ExpectedVersion expectedVersion, StreamDeleteMode mode = StreamDeleteMode.Soft, CancellationToken cancellationToken = default) =>
        Storage.DeleteStreamAsync(streamId, expectedVersion, mode, cancellationToken);

    public ValueTask TruncateStreamAsync(string streamId, long beforeVersion, CancellationToken cancellationToken = default) =>
        Storage.TruncateStreamAsync(streamId, beforeVersion, cancellationToken);

    public string GetEventTypeName(Type eventType)
    {
        ArgumentNullException.ThrowIfNull(eventType);
        return _types.GetName(eventType);
    }

    public EventFilter CreateFilter(IEnumerable<Type> eventTypes, string? streamPrefix = null) => _types.CreateFilter(eventTypes, streamPrefix);
}

/// <summary>
/// Runs the inline projections inside an append, on the typed events the caller passed (nothing is deserialized), upcast
/// as a read would upcast them, so a projection sees the same events live as when it is rebuilt from the log.
/// </summary>
internal sealed class InlineProjector(IReadOnlyList<InlineProjector.Entry> entries, Serialization.IMessageSerializer serializer, EventTypeMap types)
{
    public IReadOnlyList<Entry> Entries => entries;

    /// <summary>Gets the gate this process's inline appends pass; an inline rebuild closes it while it swaps its shadow in.</summary>
    public AppendGate Gate { get; } = new();

    /// <summary>
    /// The projection to run inside an append, or <see langword="null"/> when no inline projection can select any of
    /// its events (by stream prefix, and by event type after upcasting): such an append carries no projection, so a
    /// store keeps its fast path for it (PostgreSQL's group commit).
    /// </summary>
    public InlineProjection? For(string streamId, IReadOnlyList<EventData> events)
    {
        List<Entry>? selected = null;
        foreach (var entry in entries)
        {
            if (entry.MaySelect(streamId, events, types))
            {
                (selected ??= []).Add(entry);
            }
        }

        return selected is null ? null : (stored, documents, ct) => RunAsync(selected, events, stored, documents, ct);
    }

    /// <summary>Replays events through one inline projection (a rebuild), writing straight to the document store.</summary>
    public static async ValueTask ProjectAsync(Entry entry, RecordedEvent @event, ProjectionContext context, CancellationToken cancellationToken)
    {
        if (entry.Selects(@event))
        {
            await entry.Handler(@event, context, cancellationToken).ConfigureAwait(false);
        }
    }

    private async ValueTask RunAsync(List<Entry> selected, IReadOnlyList<EventData> events, IReadOnlyList<StoredEvent> stored, IDocumentWriter documents, CancellationToken cancellationToken)
    {
        var recorded = new RecordedEvent[stored.Count];
        for (var i = 0; i < recorded.Length; i++)
        {
            var data = types.UpcastTyped(events[i].Data, stored[i]);
            recorded[i] = EventTypeMap.ToRecorded(stored[i], data, ReferenceEquals(data, events[i].Data) ? stored[i].EventType : types.GetName(data.GetType()));
        }

        foreach (var entry in selected)
        {
            var context = new ProjectionContext(entry.Name, documents, serializer, isInline: true);
            foreach (var e in recorded)
            {
                await ProjectAsync(entry, e, context, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    internal sealed record Entry(string Name, EventProcessorHandler Handler, Type[] EventTypes, string? StreamPrefix)
    {
        public bool Selects(RecordedEvent @event) =>
            (StreamPrefix is null || @event.StreamId.StartsWith(StreamPrefix, StringComparison.Ordinal))
            && (EventTypes.Length == 0 || Array.Exists(EventTypes, t => t.IsInstanceOfType(@event.Data)));

        /// <summary>Whether the projection may select one of an append's events; false only when it certainly selects none.</summary>
        public bool MaySelect(string streamId, IReadOnlyList<EventData> events, EventTypeMap types)
        {
            if (StreamPrefix is not null && !streamId.StartsWith(StreamPrefix, StringComparison.Ordinal))
            {
                return false;
            }

            if (EventTypes.Length == 0)
            {
                return true;
            }

            foreach (var e in events)
            {
                if (types.MayBecome(e.Data.GetType(), EventTypes))
                {
                    return true;
                }
            }

            return false;
        }
    }
}
