using System.Collections.Concurrent;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.EventSourcing;

/// <summary>
/// The event type registry: maps event types to stored names (through the shared <see cref="MessageTypeRegistry"/>,
/// so <see cref="MessageNameAttribute"/> names events too), serializes events, and applies upcasting chains at
/// read time: first byte-level upcasters by stored name, then typed upcasters by CLR type.
/// </summary>
internal sealed class EventTypeMap
{
    private const int MaxChainLength = 64;

    private readonly MessageTypeRegistry _registry;
    private readonly IMessageSerializer _serializer;
    private readonly Dictionary<Type, TypedUpcasterRegistration> _typed = [];
    private readonly Dictionary<string, RawUpcasterRegistration> _raw = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, bool> _knownNames = new(StringComparer.Ordinal);

    public EventTypeMap(MessageTypeRegistry registry, IMessageSerializer serializer, EventSourcingTopology topology)
    {
        _registry = registry;
        _serializer = serializer;
        foreach (var registration in topology.Events)
        {
            _knownNames.TryAdd(registry.Register(registration.Type, registration.Name ?? MessageTypeNames.Default(registration.Type)), true);
        }

        foreach (var upcaster in topology.TypedUpcasters)
        {
            _typed[upcaster.From] = upcaster;
            _knownNames.TryAdd(GetName(upcaster.From), true);
            _knownNames.TryAdd(GetName(upcaster.To), true);
        }

        foreach (var upcaster in topology.RawUpcasters)
        {
            _raw[upcaster.From] = upcaster;
            _knownNames.TryAdd(upcaster.From, true);
        }
    }

    public IMessageSerializer Serializer => _serializer;

    public string GetName(Type type)
    {
        var name = _registry.GetName(type);
        _knownNames.TryAdd(name, true);
        return name;
    }

    public SerializedEvent Serialize(EventData data, DateTimeOffset timestamp)
    {
        var type = data.Data.GetType();
        return new SerializedEvent(data.EventId, GetName(type), _serializer.SerializeToMemory(data.Data, type), timestamp)
        {
            CorrelationId = data.CorrelationId,
            CausationId = data.CausationId,
            Metadata = EventHeaders.Write(data.Headers),
        };
    }

    /// <summary>Turns a stored event into a typed one: byte-level upcasts, deserialization, typed upcasts.</summary>
    public RecordedEvent Deserialize(StoredEvent stored)
    {
        var name = stored.EventType;
        var payload = stored.Data;
        for (var hops = 0; _raw.TryGetValue(name, out var raw); hops++)
        {
            ThrowIfTooLong(hops, stored);
            try
            {
                payload = raw.Convert(payload);
            }
            catch (Exception ex) when (ex is not MessageDeserializationException)
            {
                throw new MessageDeserializationException(
                    $"The upcaster from '{raw.From}' to '{raw.To}' failed on the event at position {stored.Position} (stream '{stored.StreamId}', version {stored.Version}): {ex.Message}", ex);
            }

            name = raw.To;
        }

        if (!_registry.TryGetType(name, out var type))
        {
            throw new UnknownEventTypeException(name, stored.EventType, stored.StreamId, stored.Version, stored.Position);
        }

        object data;
        try
        {
            data = _serializer.Deserialize(payload, type);
        }
        catch (MessageDeserializationException ex)
        {
            throw new MessageDeserializationException(
                $"The event at position {stored.Position} (stream '{stored.StreamId}', version {stored.Version}, type '{name}') could not be deserialized: {ex.Message}", ex);
        }

        data = UpcastTyped(data, stored);
        try
        {
            return ToRecorded(stored, data, GetName(data.GetType()));
        }
        catch (MessageDeserializationException ex)
        {
            throw new MessageDeserializationException(
                $"The metadata of the event at position {stored.Position} (stream '{stored.StreamId}', version {stored.Version}) could not be read: {ex.Message}", ex);
        }
    }

    public static RecordedEvent ToRecorded(StoredEvent stored, object data, string eventType) => new()
    {
        EventId = stored.EventId,
        StreamId = stored.StreamId,
        Version = stored.Version,
        Position = stored.Position,
        EventType = eventType,
        StoredEventType = stored.EventType,
        Data = data,
        Timestamp = stored.Timestamp,
        CorrelationId = stored.CorrelationId,
        CausationId = stored.CausationId,
        Headers = EventHeaders.Read(stored.Metadata),
    };

    /// <summary>Selects the stored names whose events end up, after upcasting, as one of <paramref name="types"/>.</summary>
    public EventFilter CreateFilter(IEnumerable<Type> types, string? streamPrefix)
    {
        ArgumentNullException.ThrowIfNull(types);
        var wanted = types.ToArray();
        if (wanted.Length == 0)
        {
            return streamPrefix is null ? EventFilter.All : new EventFilter { StreamPrefix = streamPrefix };
        }

        foreach (var type in wanted)
        {
            ArgumentNullException.ThrowIfNull(type, nameof(types));
            if (!type.IsAbstract && !type.IsInterface)
            {
                GetName(type);
            }
        }

        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var name in _knownNames.Keys)
        {
            if (FinalType(name) is { } final && Array.Exists(wanted, w => w.IsAssignableFrom(final)))
            {
                names.Add(name);
            }
        }

        if (names.Count == 0)
        {
            throw new InvalidOperationException(
                $"No registered event type is, or upcasts to, any of {string.Join(", ", wanted.Select(t => $"'{t.FullName}'"))}. Register the event types with AddEvent<T>() first.");
        }

        return new EventFilter { EventTypes = names, StreamPrefix = streamPrefix };
    }

    /// <summary>
    /// Creates what a subscription reads with and decides per event with. A filter by sealed (or value) types is a
    /// closed set of names, fixed at start (its types and the upcasters to them), so the store filters by name. A filter
    /// by a base type or interface is open: a type registered later (a rolling deploy, or another process that appends
    /// a name this one has not registered yet) may implement it, so the store filters by stream prefix only and each
    /// event's name is decided against the live registry.
    /// </summary>
    /// <exception cref="InvalidOperationException">No registered event type matches the types.</exception>
    public EventSelector CreateSelector(IEnumerable<Type> types, string? streamPrefix)
    {
        var wanted = types.ToArray();
        var filter = CreateFilter(wanted, streamPrefix);
        return wanted.Length == 0 || Array.TrueForAll(wanted, static t => t.IsSealed)
            ? new EventSelector(this, filter, null)
            : new EventSelector(this, streamPrefix is null ? null : new EventFilter { StreamPrefix = streamPrefix }, wanted) { StreamPrefix = streamPrefix };
    }

    /// <summary>Gets the CLR type an event stored under <paramref name="name"/> is read as, or null when it cannot be read.</summary>
    public Type? FinalType(string name)
    {
        for (var hops = 0; _raw.TryGetValue(name, out var raw) && hops < MaxChainLength; hops++)
        {
            name = raw.To;
        }

        if (!_registry.TryGetType(name, out var type))
        {
            return null;
        }

        for (var hops = 0; _typed.TryGetValue(type, out var typed) && hops < MaxChainLength; hops++)
        {
            type = typed.To;
        }

        return type;
    }

    /// <summary>
    /// Gets whether an event of <paramref name="type"/>, once the typed upcasters have run, is assignable to one of
    /// <paramref name="targets"/> (any type when <paramref name="targets"/> is empty).
    /// </summary>
    public bool MayBecome(Type type, Type[] targets)
    {
        if (targets.Length == 0)
        {
            return true;
        }

        for (var hops = 0; hops <= MaxChainLength; hops++)
        {
            foreach (var target in targets)
            {
                if (target.IsAssignableFrom(type))
                {
                    return true;
                }
            }

            if (!_typed.TryGetValue(type, out var typed))
            {
                return false;
            }

            type = typed.To;
        }

        return false;
    }

    /// <summary>Applies the typed upcasters to an event (for example one just appended, which never went through a read).</summary>
    public object UpcastTyped(object data, StoredEvent stored)
    {
        for (var hops = 0; _typed.TryGetValue(data.GetType(), out var typed); hops++)
        {
            ThrowIfTooLong(hops, stored);
            object? next;
            try
            {
                next = typed.Convert(data);
            }
            catch (Exception ex)
            {
                throw new MessageDeserializationException(
                    $"The upcaster from '{typed.From.FullName}' to '{typed.To.FullName}' failed on the event at position {stored.Position} (stream '{stored.StreamId}', version {stored.Version}): {ex.Message}", ex);
            }

            data = next ?? throw new MessageDeserializationException(
                $"The upcaster from '{typed.From.FullName}' to '{typed.To.FullName}' returned null for the event at position {stored.Position} (stream '{stored.StreamId}', version {stored.Version}); an upcaster must return the new event.");
        }

        return data;
    }

    private static void ThrowIfTooLong(int hops, StoredEvent stored)
    {
        if (hops >= MaxChainLength)
        {
            throw new MessageDeserializationException(
                $"The upcasting chain of the event at position {stored.Position} (stream '{stored.StreamId}') is longer than {MaxChainLength} steps; upcasters must not form a cycle.");
        }
    }
}

/// <summary>How a subscription treats one stored event.</summary>
internal enum EventSelection
{
    /// <summary>The subscription handles the event.</summary>
    Handle,

    /// <summary>The event is of a known type the subscription does not select.</summary>
    Skip,

    /// <summary>The event's name resolves to no registered type, so whether the subscription selects it cannot be told.</summary>
    Unknown,
}

/// <summary>
/// Selects the events of one subscription: the filter its reads pass to the store, and the decision per event. An open
/// selector (a base type or interface) decides against the live type registry, so types registered after the
/// subscription started are seen; a name it cannot resolve is <see cref="EventSelection.Unknown"/> rather than skipped.
/// </summary>
internal sealed class EventSelector
{
    private readonly EventTypeMap _types;
    private readonly EventFilter? _closed;
    private readonly Type[]? _open;
    private readonly ConcurrentDictionary<string, bool> _decided = new(StringComparer.Ordinal);

    public EventSelector(EventTypeMap types, EventFilter? filter, Type[]? open)
    {
        _types = types;
        _open = open;
        _closed = open is null && filter is { IsAll: false } ? filter : null;
        ReadFilter = filter is { IsAll: false } ? filter : null;
    }

    /// <summary>Gets the filter reads of the whole log pass to the store, or null for every event.</summary>
    public EventFilter? ReadFilter { get; }

    /// <summary>Gets the stream prefix an open selector checks itself.</summary>
    public string? StreamPrefix { get; init; }

    /// <summary>Gets whether events are decided against the live registry (a base type or interface filter).</summary>
    public bool IsOpen => _open is not null;

    /// <summary>Decides one event.</summary>
    public EventSelection Select(string streamId, string eventType)
    {
        if (_open is null)
        {
            return _closed is null || _closed.Matches(streamId, eventType) ? EventSelection.Handle : EventSelection.Skip;
        }

        if (StreamPrefix is not null && !streamId.StartsWith(StreamPrefix, StringComparison.Ordinal))
        {
            return EventSelection.Skip;
        }

        if (_decided.TryGetValue(eventType, out var selected))
        {
            return selected ? EventSelection.Handle : EventSelection.Skip;
        }

        // A name that resolves is decided once (registrations never change a name's type); one that does not is asked
        // again next time, since its type may be registered by then.
        if (_types.FinalType(eventType) is not { } final)
        {
            return EventSelection.Unknown;
        }

        selected = Array.Exists(_open, w => w.IsAssignableFrom(final));
        _decided.TryAdd(eventType, selected);
        return selected ? EventSelection.Handle : EventSelection.Skip;
    }
}
