using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.EventSourcing;

public sealed partial class EventSourcingBuilder
{
    /// <summary>
    /// Registers an event type under a stored name that is independent of its CLR name. Every type that is read
    /// back must be registered (appending registers a type on first use, but a fresh process reads first).
    /// </summary>
    /// <typeparam name="TEvent">The event type.</typeparam>
    /// <param name="name">The stored name; the type's <see cref="MessageNameAttribute"/> or its full name when null.</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder AddEvent<TEvent>(string? name = null) => AddEvent(typeof(TEvent), name);

    /// <summary>Registers an event type under a stored name (see <see cref="AddEvent{TEvent}"/>).</summary>
    /// <param name="eventType">The event type.</param>
    /// <param name="name">The stored name; the type's <see cref="MessageNameAttribute"/> or its full name when null.</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder AddEvent(Type eventType, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(eventType);
        Services.Configure<EventSourcingTopology>(t => t.Events.Add(new EventRegistration(eventType, name)));
        return this;
    }

    /// <summary>
    /// Adds a typed upcaster: an event read as <typeparamref name="TFrom"/> is converted to <typeparamref name="TTo"/>
    /// before anyone sees it. Chain them (v1 → v2 → v3) by registering one per step; both types are registered
    /// as events under their default names (give the old type a <see cref="MessageNameAttribute"/> with the name it was stored under).
    /// </summary>
    /// <typeparam name="TFrom">The older event type.</typeparam>
    /// <typeparam name="TTo">The newer event type.</typeparam>
    /// <param name="upcast">Converts one event.</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder AddUpcaster<TFrom, TTo>(Func<TFrom, TTo> upcast)
        where TFrom : notnull
        where TTo : notnull
    {
        ArgumentNullException.ThrowIfNull(upcast);
        Services.Configure<EventSourcingTopology>(t => t.TypedUpcasters.Add(new TypedUpcasterRegistration(typeof(TFrom), typeof(TTo), e => upcast((TFrom)e))));
        return this;
    }

    /// <summary>
    /// Adds a byte-level upcaster: the serialized body of an event stored as <paramref name="fromEventType"/> is
    /// rewritten and read as <paramref name="toEventType"/>, so the old CLR type need not exist any more. Byte-level
    /// upcasters run before deserialization, typed ones after.
    /// </summary>
    /// <param name="fromEventType">The stored name of the old event.</param>
    /// <param name="toEventType">The name to read it as.</param>
    /// <param name="upcast">Rewrites the serialized body (for JSON, for example with <c>JsonNode</c>).</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder AddUpcaster(string fromEventType, string toEventType, Func<ReadOnlyMemory<byte>, ReadOnlyMemory<byte>> upcast)
    {
        ArgumentNullException.ThrowIfNull(fromEventType);
        ArgumentNullException.ThrowIfNull(toEventType);
        ArgumentNullException.ThrowIfNull(upcast);
        Services.Configure<EventSourcingTopology>(t => t.RawUpcasters.Add(new RawUpcasterRegistration(fromEventType, toEventType, upcast)));
        return this;
    }

    /// <summary>Adjusts the options shared by every event-sourcing feature.</summary>
    /// <param name="configure">The adjustment.</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder Configure(Action<EventSourcingOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        Services.Configure(configure);
        return this;
    }

    /// <summary>Registers an <see cref="IAggregate"/> and its <see cref="IAggregateRepository{TState}"/>.</summary>
    /// <typeparam name="TAggregate">The aggregate; a new instance is the state before the first event.</typeparam>
    /// <param name="configure">Adjusts its options (stream prefix, snapshots, conflict retries).</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder AddAggregate<TAggregate>(Action<AggregateOptions>? configure = null)
        where TAggregate : class, IAggregate, new() =>
        AddAggregate(static () => new TAggregate(), static (state, e) =>
        {
            state.Apply(e);
            return state;
        }, configure);

    /// <summary>Registers an aggregate whose state is folded from its events, and its <see cref="IAggregateRepository{TState}"/>.</summary>
    /// <typeparam name="TState">The state type (immutable states work: <paramref name="apply"/> returns the next one).</typeparam>
    /// <param name="create">Creates the state before the first event.</param>
    /// <param name="apply">Returns the state after one more event.</param>
    /// <param name="configure">Adjusts its options (stream prefix, snapshots, conflict retries).</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder AddAggregate<TState>(Func<TState> create, Func<TState, object, TState> apply, Action<AggregateOptions>? configure = null)
        where TState : class
    {
        ArgumentNullException.ThrowIfNull(create);
        ArgumentNullException.ThrowIfNull(apply);
        var options = new AggregateOptions();
        configure?.Invoke(options);
        Services.Configure<EventSourcingTopology>(t => t.Aggregates.Add(new AggregateRegistration(typeof(TState), options)));
        Services.TryAddSingleton<IAggregateRepository<TState>>(sp => new AggregateRepository<TState>(
            new AggregateDefinition<TState>(create, apply, options),
            sp.GetRequiredService<IEventStore>(),
            sp.GetRequiredService<EventTypeMap>(),
            sp.GetRequiredService<ISnapshotStorage>(),
            sp.GetRequiredService<IMessageSerializer>(),
            sp.GetRequiredService<TimeProvider>(),
            LoggerFactory(sp).CreateLogger("Patterns.EventSourcing.Aggregates." + typeof(TState).Name)));
        return this;
    }

    /// <summary>Registers a projection type (inline or async, see <see cref="ProjectionOptions.Mode"/>).</summary>
    /// <typeparam name="TProjection">The projection; resolved from a new scope per event unless registered as a singleton.</typeparam>
    /// <param name="name">The projection's name: its checkpoint's name, unique among subscriptions and projections.</param>
    /// <param name="configure">Adjusts its options.</param>
    /// <param name="lifetime">The projection's lifetime, when it is not registered already.</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder AddProjection<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TProjection>(
        string name, Action<ProjectionOptions>? configure = null, ServiceLifetime lifetime = ServiceLifetime.Singleton)
        where TProjection : class, IProjection
    {
        var effective = HandlerRegistration.EnsureRegistered<TProjection>(Services, lifetime);
        return AddProcessor(name, typeof(TProjection).Name, NewOptions(configure), sp => FromService<TProjection>(sp, effective, static (p, e, c, ct) => p.ProjectAsync(e, c, ct)));
    }

    /// <summary>Registers a projection delegate (inline or async, see <see cref="ProjectionOptions.Mode"/>): the read model may go anywhere the delegate writes.</summary>
    /// <param name="name">The projection's name: its checkpoint's name, unique among subscriptions and projections.</param>
    /// <param name="project">Projects one event.</param>
    /// <param name="configure">Adjusts its options.</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder AddProjection(string name, Func<RecordedEvent, ProjectionContext, CancellationToken, ValueTask> project, Action<ProjectionOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(project);
        return AddProcessor(name, "delegate", NewOptions(configure), _ => (e, c, ct) => project(e, c, ct));
    }

    /// <summary>
    /// Registers a projection that keeps one document per id in a collection: for each selected event it finds the
    /// document id, loads the document, applies the event and stores the result (or deletes the document when the
    /// result is null). The collection is cleared when the projection is rebuilt.
    /// </summary>
    /// <typeparam name="TDocument">The document type; it must round-trip through the configured serializer.</typeparam>
    /// <param name="name">The projection's name: its checkpoint's name, unique among subscriptions and projections.</param>
    /// <param name="collection">The document collection.</param>
    /// <param name="documentId">The id of the document an event changes, or null to skip the event.</param>
    /// <param name="apply">Returns the new document (null deletes it) from the current one (null when there is none) and the event.</param>
    /// <param name="configure">Adjusts its options.</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder AddDocumentProjection<TDocument>(
        string name,
        string collection,
        Func<RecordedEvent, string?> documentId,
        Func<TDocument?, RecordedEvent, TDocument?> apply,
        Action<ProjectionOptions>? configure = null)
        where TDocument : class
    {
        ArgumentException.ThrowIfNullOrEmpty(collection);
        ArgumentNullException.ThrowIfNull(documentId);
        ArgumentNullException.ThrowIfNull(apply);
        var options = NewOptions(configure);
        if (!options.Collections.Contains(collection))
        {
            options.Collections.Add(collection);
        }

        Services.Configure<EventSourcingTopology>(static t => t.Documents.Add(typeof(TDocument)));
        return AddProcessor(
            name,
            $"documents<{typeof(TDocument).Name}>",
            options,
            _ => async (e, context, ct) =>
            {
                if (documentId(e) is { } id)
                {
                    await context.Collection<TDocument>(collection).UpdateAsync(id, current => apply(current, e), ct).ConfigureAwait(false);
                }
            },
            new DocumentReadAhead(collection, documentId));
    }

    /// <summary>Registers a subscription handler type, to the whole log or one stream (see <see cref="SubscriptionOptions"/>).</summary>
    /// <typeparam name="THandler">The handler; resolved from a new scope per event unless registered as a singleton.</typeparam>
    /// <param name="name">The subscription's name: its checkpoint's name, unique among subscriptions and projections.</param>
    /// <param name="configure">Adjusts its options.</param>
    /// <param name="lifetime">The handler's lifetime, when it is not registered already.</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder AddSubscription<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
        string name, Action<SubscriptionOptions>? configure = null, ServiceLifetime lifetime = ServiceLifetime.Scoped)
        where THandler : class, IEventHandler
    {
        var effective = HandlerRegistration.EnsureRegistered<THandler>(Services, lifetime);
        return AddProcessor(name, typeof(THandler).Name, NewSubscriptionOptions(configure), sp => FromService<THandler>(sp, effective, static (h, e, _, ct) => h.HandleAsync(e, ct)));
    }

    /// <summary>Registers a subscription delegate, to the whole log or one stream (see <see cref="SubscriptionOptions"/>).</summary>
    /// <param name="name">The subscription's name: its checkpoint's name, unique among subscriptions and projections.</param>
    /// <param name="handler">Handles one event.</param>
    /// <param name="configure">Adjusts its options.</param>
    /// <returns>This builder.</returns>
    public EventSourcingBuilder AddSubscription(string name, Func<RecordedEvent, CancellationToken, ValueTask> handler, Action<SubscriptionOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(handler);
        return AddProcessor(name, "delegate", NewSubscriptionOptions(configure), _ => (e, _, ct) => handler(e, ct));
    }

    private static ProjectionOptions NewOptions(Action<ProjectionOptions>? configure)
    {
        var options = new ProjectionOptions();
        configure?.Invoke(options);
        return options;
    }

    private static SubscriptionOptions NewSubscriptionOptions(Action<SubscriptionOptions>? configure)
    {
        var options = new SubscriptionOptions();
        configure?.Invoke(options);
        return options;
    }

    private static EventProcessorHandler FromService<THandler>(
        IServiceProvider services, ServiceLifetime lifetime, Func<THandler, RecordedEvent, ProjectionContext, CancellationToken, ValueTask> invoke)
        where THandler : class
    {
        if (lifetime == ServiceLifetime.Singleton)
        {
            var handler = services.GetRequiredService<THandler>();
            return (e, context, ct) => invoke(handler, e, context, ct);
        }

        var scopes = services.GetRequiredService<IServiceScopeFactory>();
        return async (e, context, ct) =>
        {
            var scope = scopes.CreateAsyncScope();
            await using (scope.ConfigureAwait(false))
            {
                await invoke(scope.ServiceProvider.GetRequiredService<THandler>(), e, context, ct).ConfigureAwait(false);
            }
        };
    }

    private EventSourcingBuilder AddProcessor(
        string name, string handlerName, EventProcessorOptions options, Func<IServiceProvider, EventProcessorHandler> create, DocumentReadAhead? readAhead = null)
    {
        ArgumentNullException.ThrowIfNull(name);
        Services.Configure<EventSourcingTopology>(t => t.Processors.Add(new ProcessorRegistration
        {
            Name = name,
            HandlerName = handlerName,
            Options = options,
            CreateHandler = create,
            ReadAhead = readAhead,
        }));
        return this;
    }
}
