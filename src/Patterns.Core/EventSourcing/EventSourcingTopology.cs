using Microsoft.Extensions.Options;
using Patterns.Hosting;
using Patterns.Messaging;

namespace Patterns.EventSourcing;

/// <summary>Everything registered on <see cref="EventSourcingBuilder"/>; validated at start.</summary>
internal sealed class EventSourcingTopology
{
    public List<EventRegistration> Events { get; } = [];

    public List<TypedUpcasterRegistration> TypedUpcasters { get; } = [];

    public List<RawUpcasterRegistration> RawUpcasters { get; } = [];

    public List<AggregateRegistration> Aggregates { get; } = [];

    public List<ProcessorRegistration> Processors { get; } = [];

    /// <summary>Gets the document types of document projections (stored through the serializer).</summary>
    public List<Type> Documents { get; } = [];

    /// <summary>Gets every type the serializer writes or reads for the store: events, upcast sources, snapshotted aggregate states and projected documents.</summary>
    public IEnumerable<Type> SerializedTypes()
    {
        foreach (var registration in Events)
        {
            yield return registration.Type;
        }

        foreach (var upcaster in TypedUpcasters)
        {
            yield return upcaster.From;
            yield return upcaster.To;
        }

        foreach (var aggregate in Aggregates)
        {
            if (aggregate.Options.SnapshotEvery > 0)
            {
                yield return aggregate.StateType;
            }
        }

        foreach (var document in Documents)
        {
            yield return document;
        }
    }
}

internal sealed record EventRegistration(Type Type, string? Name);

internal sealed record TypedUpcasterRegistration(Type From, Type To, Func<object, object?> Convert);

internal sealed record RawUpcasterRegistration(string From, string To, Func<ReadOnlyMemory<byte>, ReadOnlyMemory<byte>> Convert);

internal sealed record AggregateRegistration(Type StateType, AggregateOptions Options);

/// <summary>Projects or handles one event; subscriptions ignore the context.</summary>
internal delegate ValueTask EventProcessorHandler(RecordedEvent @event, ProjectionContext context, CancellationToken cancellationToken);

/// <summary>A subscription or projection.</summary>
/// <summary>The collection a document projection folds into, and the id of the document an event folds into (null: none).</summary>
internal sealed record DocumentReadAhead(string Collection, Func<RecordedEvent, string?> DocumentId);

internal sealed class ProcessorRegistration
{
    public required string Name { get; init; }

    public required string HandlerName { get; init; }

    public required EventProcessorOptions Options { get; init; }

    /// <summary>Creates the handler once the host's services exist.</summary>
    public required Func<IServiceProvider, EventProcessorHandler> CreateHandler { get; init; }

    /// <summary>Gets, for a document projection, the collection and the document each event folds into: the processor reads a page's documents ahead in one call.</summary>
    public DocumentReadAhead? ReadAhead { get; init; }

    public bool IsProjection => Options is ProjectionOptions;

    public bool IsInline => Options is ProjectionOptions { Mode: ProjectionMode.Inline };

    public string? StreamId => (Options as SubscriptionOptions)?.StreamId;

    public string Describe() => $"{(IsProjection ? "projection" : "subscription")} '{Name}' ({HandlerName})";
}

[OptionsValidator]
internal sealed partial class AggregateOptionsDataValidator : IValidateOptions<AggregateOptions>;

[OptionsValidator]
internal sealed partial class SubscriptionOptionsDataValidator : IValidateOptions<SubscriptionOptions>;

[OptionsValidator]
internal sealed partial class ProjectionOptionsDataValidator : IValidateOptions<ProjectionOptions>;

[OptionsValidator]
internal sealed partial class EventSourcingOptionsAttributesValidator : IValidateOptions<EventSourcingOptions>;

/// <summary>Checks <see cref="EventSourcingOptions"/>: its attributes, the lease duration's range, the store retry delays and the outage limit.</summary>
internal sealed class EventSourcingOptionsValidator : IValidateOptions<EventSourcingOptions>
{
    private readonly EventSourcingOptionsAttributesValidator _attributes = new();

    public ValidateOptionsResult Validate(string? name, EventSourcingOptions options)
    {
        var result = _attributes.Validate(name, options);
        var errors = result.Failed ? [.. result.Failures] : new List<string>();
        Storage.LeaseRunner.ValidateDuration(errors, "EventSourcingOptions.LeaseDuration", options.LeaseDuration);
        if (options.StoreRetryDelay < TimeSpan.FromMilliseconds(1) || options.StoreRetryDelay > TimeSpan.FromHours(1))
        {
            errors.Add($"EventSourcingOptions.StoreRetryDelay must be between 1 millisecond and 1 hour (was {options.StoreRetryDelay}).");
        }

        if (options.StoreRetryMaxDelay < options.StoreRetryDelay || options.StoreRetryMaxDelay > TimeSpan.FromHours(1))
        {
            errors.Add($"EventSourcingOptions.StoreRetryMaxDelay must be at least StoreRetryDelay ({options.StoreRetryDelay}) and at most 1 hour (was {options.StoreRetryMaxDelay}).");
        }

        if (options.MaxOutageDuration is { } outage && outage != Timeout.InfiniteTimeSpan && outage <= TimeSpan.Zero)
        {
            errors.Add($"EventSourcingOptions.MaxOutageDuration must be positive, or null or Timeout.InfiniteTimeSpan for no limit (was {outage}).");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

[OptionsValidator]
internal sealed partial class InMemoryEventStorageOptionsValidator : IValidateOptions<InMemory.InMemoryEventStorageOptions>;

/// <summary>Checks every event-sourcing registration at host start and reports every problem at once.</summary>
internal sealed class EventSourcingTopologyValidator : IValidateOptions<EventSourcingTopology>
{
    public ValidateOptionsResult Validate(string? name, EventSourcingTopology options)
    {
        var errors = new List<string>();
        ValidateEventNames(errors, options);
        ValidateUpcasters(errors, options);

        var aggregates = new HashSet<Type>();
        foreach (var aggregate in options.Aggregates)
        {
            var what = $"Aggregate '{aggregate.StateType.FullName}'";
            if (!aggregates.Add(aggregate.StateType))
            {
                errors.Add($"{what} is registered more than once.");
            }

            if (aggregate.Options.StreamPrefix is { } prefix && string.IsNullOrWhiteSpace(prefix))
            {
                errors.Add($"{what}: StreamPrefix must not be blank.");
            }

            TopologyValidator.AddFailures(errors, what, new AggregateOptionsDataValidator().Validate(null, aggregate.Options));
        }

        var names = new Dictionary<string, ProcessorRegistration>(StringComparer.Ordinal);
        foreach (var processor in options.Processors)
        {
            var what = processor.Describe();
            if (string.IsNullOrWhiteSpace(processor.Name))
            {
                errors.Add($"A {(processor.IsProjection ? "projection" : "subscription")} ({processor.HandlerName}) has an empty name.");
            }
            else if (!names.TryAdd(processor.Name, processor))
            {
                errors.Add($"{what}: the name is also used by {names[processor.Name].Describe()}; subscription and projection names are checkpoint names and must be unique.");
            }

            var optionsValid = TopologyValidator.AddFailures(errors, what, processor.Options switch
            {
                SubscriptionOptions subscription => new SubscriptionOptionsDataValidator().Validate(null, subscription),
                ProjectionOptions projection => new ProjectionOptionsDataValidator().Validate(null, projection),
                _ => ValidateOptionsResult.Success,
            });
            if (processor.Options.StreamPrefix is { } prefix && prefix.Length == 0)
            {
                errors.Add($"{what}: StreamPrefix must not be empty (use null for every stream).");
            }

            if (processor.Options.EventTypes.Any(t => t is null))
            {
                errors.Add($"{what}: EventTypes contains null.");
            }

            if (processor.StreamId is { } stream && (string.IsNullOrWhiteSpace(stream) || processor.Options.StreamPrefix is not null))
            {
                errors.Add($"{what}: StreamId must not be blank, and cannot be combined with StreamPrefix.");
            }

            if (processor.Options is ProjectionOptions projectionOptions && projectionOptions.Collections.Any(string.IsNullOrWhiteSpace))
            {
                errors.Add($"{what}: Collections contains a blank name.");
            }

            TopologyValidator.ValidateResilience(errors, what, processor.Options, optionsValid);
            if (processor.Options is ProjectionOptions { Mode: ProjectionMode.Inline } inline && InapplicableInlineOptions(inline) is { Count: > 0 } inapplicable)
            {
                errors.Add($"{what}: an inline projection runs inside each append, so {string.Join(", ", inapplicable)} cannot apply to it (a failure fails the append; there is no checkpoint, batch or start position). Leave them at their defaults, or make the projection async.");
            }
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>The options an inline projection was given that only a subscription can honour (those changed from their defaults).</summary>
    internal static List<string> InapplicableInlineOptions(ProjectionOptions options)
    {
        var defaults = new ProjectionOptions();
        var names = new List<string>();
        if (options.BatchSize != defaults.BatchSize)
        {
            names.Add(nameof(options.BatchSize));
        }

        if (options.CheckpointInterval != defaults.CheckpointInterval)
        {
            names.Add(nameof(options.CheckpointInterval));
        }

        if (options.StartFrom != defaults.StartFrom)
        {
            names.Add(nameof(options.StartFrom));
        }

        if (options.OnFailure != defaults.OnFailure)
        {
            names.Add(nameof(options.OnFailure));
        }

        if (options.Retry is { } retry && !options.HasDefaultRetry(retry))
        {
            names.Add(nameof(options.Retry));
        }

        if (options.CircuitBreaker is not null)
        {
            names.Add(nameof(options.CircuitBreaker));
        }

        if (options.AttemptTimeout is not null)
        {
            names.Add(nameof(options.AttemptTimeout));
        }

        if (options.MaxConcurrentCalls is not null)
        {
            names.Add(nameof(options.MaxConcurrentCalls));
        }

        if (options.MaxQueuedCalls != defaults.MaxQueuedCalls)
        {
            names.Add(nameof(options.MaxQueuedCalls));
        }

        if (options.ConfigurePipeline is not null)
        {
            names.Add(nameof(options.ConfigurePipeline));
        }

        return names;
    }

    private static void ValidateEventNames(List<string> errors, EventSourcingTopology options)
    {
        // Registers into a scratch registry to find clashes now rather than on first use.
        var registry = new MessageTypeRegistry();
        var types = options.Events.Select(e => (e.Type, e.Name))
            .Concat(options.TypedUpcasters.SelectMany(u => new[] { (u.From, (string?)null), (u.To, (string?)null) }));
        foreach (var (type, explicitName) in types)
        {
            var eventName = explicitName ?? MessageTypeNames.Default(type);
            if (explicitName is not null && string.IsNullOrWhiteSpace(explicitName))
            {
                errors.Add($"Event type '{type.FullName}' has a blank name.");
                continue;
            }

            try
            {
                if (explicitName is null && registry.TryGetType(eventName, out var known) && known == type)
                {
                    continue;
                }

                registry.Register(type, eventName);
            }
            catch (InvalidOperationException ex)
            {
                errors.Add(ex.Message);
            }
        }
    }

    private static void ValidateUpcasters(List<string> errors, EventSourcingTopology options)
    {
        var typed = new Dictionary<Type, Type>();
        foreach (var upcaster in options.TypedUpcasters)
        {
            if (upcaster.From == upcaster.To)
            {
                errors.Add($"The upcaster from '{upcaster.From.FullName}' goes to the same type.");
            }
            else if (!typed.TryAdd(upcaster.From, upcaster.To))
            {
                errors.Add($"Event type '{upcaster.From.FullName}' has more than one upcaster (to '{typed[upcaster.From].FullName}' and to '{upcaster.To.FullName}').");
            }
        }

        foreach (var start in typed.Keys)
        {
            if (HasCycle(start, typed))
            {
                errors.Add($"The upcasters starting at '{start.FullName}' form a cycle.");
            }
        }

        var raw = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var upcaster in options.RawUpcasters)
        {
            if (string.IsNullOrWhiteSpace(upcaster.From) || string.IsNullOrWhiteSpace(upcaster.To))
            {
                errors.Add("An upcaster has a blank event type name.");
            }
            else if (string.Equals(upcaster.From, upcaster.To, StringComparison.Ordinal))
            {
                errors.Add($"The upcaster from '{upcaster.From}' goes to the same type name.");
            }
            else if (!raw.TryAdd(upcaster.From, upcaster.To))
            {
                errors.Add($"Event type name '{upcaster.From}' has more than one upcaster (to '{raw[upcaster.From]}' and to '{upcaster.To}').");
            }
        }

        foreach (var start in raw.Keys)
        {
            if (HasCycle(start, raw))
            {
                errors.Add($"The upcasters starting at '{start}' form a cycle.");
            }
        }

        // Byte-level upcasters run first, so a typed upcaster from the type stored under the same name would never run.
        var explicitNames = new Dictionary<Type, string>();
        foreach (var e in options.Events)
        {
            if (e.Name is not null)
            {
                explicitNames.TryAdd(e.Type, e.Name);
            }
        }

        foreach (var upcaster in options.TypedUpcasters)
        {
            var name = explicitNames.GetValueOrDefault(upcaster.From) ?? MessageTypeNames.Default(upcaster.From);
            if (raw.TryGetValue(name, out var rawTo))
            {
                errors.Add($"Event type name '{name}' has a byte-level upcaster (to '{rawTo}') and a typed upcaster from '{upcaster.From.FullName}' (to '{upcaster.To.FullName}'); byte-level upcasters run first, so the typed one would never run. Keep one of them.");
            }
        }
    }

    private static bool HasCycle<T>(T start, Dictionary<T, T> next)
        where T : notnull
    {
        var seen = new HashSet<T> { start };
        var current = start;
        while (next.TryGetValue(current, out var following))
        {
            if (!seen.Add(following))
            {
                return true;
            }

            current = following;
        }

        return false;
    }
}
