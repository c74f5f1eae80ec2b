using System.Runtime.CompilerServices;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.Hosting;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.EventSourcing;

/// <summary>Owns every subscription and projection runtime; <see cref="IEventSubscriptions"/> for the application.</summary>
internal sealed class SubscriptionManager : IEventSubscriptions, IDisposable
{
    private readonly Dictionary<string, EventProcessor> _processors = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (InlineProjector.Entry Entry, ProjectionOptions Options)> _inline = new(StringComparer.Ordinal);
    private readonly EventProcessorServices _services;
    private readonly InlineProjector _inlineProjector;
    private readonly SemaphoreSlim _inlineRebuilds = new(1, 1);
    private readonly ILogger _logger;

    public SubscriptionManager(EventSourcingTopology topology, IServiceProvider serviceProvider, InlineProjector inline, EventProcessorServices services)
    {
        _services = services;
        _inlineProjector = inline;
        _logger = services.LoggerFactory.CreateLogger<SubscriptionManager>();
        foreach (var registration in topology.Processors)
        {
            try
            {
                // Fails the start when the event types select nothing: inline projections match by CLR type at
                // append time, but their rebuild reads the log by name, so they are held to the same rule.
                services.Types.CreateFilter(registration.Options.EventTypes, registration.Options.StreamPrefix);
            }
            catch (InvalidOperationException ex)
            {
                throw new InvalidOperationException($"The {registration.Describe()} cannot start: {ex.Message}", ex);
            }

            if (registration.IsInline)
            {
                _inline[registration.Name] = (inline.Entries.First(e => e.Name == registration.Name), (ProjectionOptions)registration.Options);
            }
            else
            {
                _processors[registration.Name] = new EventProcessor(registration, services, registration.CreateHandler(serviceProvider));
            }
        }
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var processor in _processors.Values)
        {
            await processor.StartAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public Task StopAsync(CancellationToken drainDeadline, CancellationToken abandonAfter) =>
        Task.WhenAll(_processors.Values.Select(p => p.StopAsync(drainDeadline, abandonAfter)));

    public void Dispose()
    {
        foreach (var processor in _processors.Values)
        {
            processor.Dispose();
        }

        _inlineRebuilds.Dispose();
    }

    public IReadOnlyList<SubscriptionStatus> GetStatuses() =>
        [.. _processors.Values.Select(p => p.Status).Concat(_inline.Keys.Select(InlineStatus)).OrderBy(s => s.Name, StringComparer.Ordinal)];

    public SubscriptionStatus GetStatus(string name) =>
        _inline.ContainsKey(Known(name)) ? InlineStatus(name) : _processors[name].Status;

    public Task WaitForPositionAsync(string name, long position, CancellationToken cancellationToken = default) =>
        _inline.ContainsKey(Known(name)) ? Task.CompletedTask : _processors[name].WaitForPositionAsync(position, cancellationToken);

    public Task RestartAsync(string name, CancellationToken cancellationToken = default) =>
        _inline.ContainsKey(Known(name)) ? Task.CompletedTask : _processors[name].RestartAsync(cancellationToken);

    public Task RebuildAsync(string name, CancellationToken cancellationToken = default) =>
        _inline.TryGetValue(Known(name), out var inline) ? RebuildInlineAsync(name, inline.Entry, inline.Options, cancellationToken) : _processors[name].RebuildAsync(cancellationToken);

    public Task<int> ReplayParkedEventsAsync(string name, CancellationToken cancellationToken = default) =>
        _inline.ContainsKey(Known(name)) ? Task.FromResult(0) : _processors[name].ReplayParkedAsync(cancellationToken);

    public async IAsyncEnumerable<ParkedEvent> GetParkedEventsAsync(string name, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var (_, parked) in ParkedEvents.ListAsync(_services, Known(name), cancellationToken).ConfigureAwait(false))
        {
            yield return parked;
        }
    }

    private static SubscriptionStatus InlineStatus(string name) => new(name, SubscriptionState.Inline, 0, long.MaxValue, null);

    /// <summary>
    /// Rebuilds an inline projection into shadow collections while appends go on (their inline writes still go to the
    /// live model, which is served as it was), then closes this process's append gate, replays what was appended
    /// meanwhile into the shadow, swaps the shadow in with one unit of work and opens the gate: every event is in the new
    /// model exactly once, and appends wait only for the last catch-up and the swap.
    /// </summary>
    private async Task RebuildInlineAsync(string name, InlineProjector.Entry entry, ProjectionOptions options, CancellationToken cancellationToken)
    {
        await _inlineRebuilds.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            string[] collections = [.. options.Collections];
            EventSourcingLog.Rebuilding(_logger, name, collections.Length == 0 ? "none" : string.Join(", ", collections));
            await ProjectionRebuild.ClearShadowsAsync(_services.Documents, collections, cancellationToken).ConfigureAwait(false);
            var context = new ProjectionContext(name, new ShadowWriter(_services.Documents, collections) { Redirect = true }, _services.Serializer, isInline: false);
            var selector = _services.Types.CreateSelector(options.EventTypes, options.StreamPrefix);
            var cursor = await ReplayInlineAsync(entry, selector, context, 0, cancellationToken).ConfigureAwait(false);
            await _inlineProjector.Gate.CloseAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                cursor = await ReplayInlineAsync(entry, selector, context, cursor, cancellationToken).ConfigureAwait(false);
                var work = new UnitOfWork();
                await ProjectionRebuild.AddSwapAsync(work, _services.Documents, collections, cancellationToken).ConfigureAwait(false);
                await ProjectionRebuild.CommitSwapAsync(work, _services, lease: null, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _inlineProjector.Gate.Open();
            }

            EventSourcingLog.RebuildSwapped(_logger, name, cursor);
        }
        finally
        {
            _inlineRebuilds.Release();
        }
    }

    /// <summary>Replays the log after <paramref name="cursor"/> into the shadow, page by page until a page comes back short; returns the last position read.</summary>
    private async Task<long> ReplayInlineAsync(InlineProjector.Entry entry, EventSelector selector, ProjectionContext context, long cursor, CancellationToken cancellationToken)
    {
        const int PageSize = 512;
        while (true)
        {
            var read = 0;
            await foreach (var stored in _services.Storage.ReadAllAsync(cursor, selector.ReadFilter, PageSize, cancellationToken).ConfigureAwait(false))
            {
                read++;
                cursor = stored.Position;
                var selection = selector.Select(stored.StreamId, stored.EventType);
                if (selection == EventSelection.Unknown)
                {
                    // The live model is untouched: the rebuild fails rather than build a model without an event it may select.
                    throw new UnknownEventTypeException(stored.EventType, stored.StreamId, stored.Version, stored.Position);
                }

                if (selection == EventSelection.Handle)
                {
                    await InlineProjector.ProjectAsync(entry, _services.Types.Deserialize(stored), context, cancellationToken).ConfigureAwait(false);
                }
            }

            if (read < PageSize)
            {
                return cursor;
            }
        }
    }

    private string Known(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!_processors.ContainsKey(name) && !_inline.ContainsKey(name))
        {
            throw new ArgumentException($"No subscription or projection is named '{name}'.", nameof(name));
        }

        return name;
    }
}

/// <summary>
/// Starts every subscription and async projection with the host, and stops them (saving checkpoints) when it stops:
/// each finishes the event in hand until <see cref="PatternsOptions.ShutdownTimeout"/>, then its handler is cancelled.
/// </summary>
internal sealed class EventSourcingHostedService(
    SubscriptionManager manager, IOptions<PatternsOptions> options, TimeProvider timeProvider, EventSourcingTopology topology, IMessageSerializer serializer) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        EnsureSerializable(topology, serializer);
        return manager.StartAsync(cancellationToken);
    }

    /// <summary>
    /// Fails the start naming every type the store serializes (events, upcast sources, snapshotted aggregate states,
    /// projected documents) that the JSON serializer has no metadata for (under NativeAOT or trimming, a type missing
    /// from the JsonSerializerContext), instead of failing at the first append, snapshot or projected event.
    /// </summary>
    internal static void EnsureSerializable(EventSourcingTopology topology, IMessageSerializer serializer)
    {
        if (serializer is not JsonMessageSerializer json)
        {
            return;
        }

        var missing = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var type in topology.SerializedTypes())
        {
            if (!json.HasMetadataFor(type))
            {
                missing.Add(type.FullName ?? type.Name);
            }
        }

        if (missing.Count > 0)
        {
            throw new InvalidOperationException(
                $"The JSON serializer has no metadata for {string.Join(", ", missing.Select(t => $"'{t}'"))}, which the event store must serialize. "
                + "Add [JsonSerializable(typeof(...))] for each to a JsonSerializerContext and pass it with UseSystemTextJson(context) (NativeAOT and trimmed apps cannot serialize by reflection).");
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        using var deadline = new CancellationTokenSource(options.Value.ShutdownTimeout, timeProvider);
        using var drain = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token, cancellationToken);
        try
        {
            // Past the drain deadline a cancelled handler still gets to end (and its loop to save the checkpoint);
            // only the host's own shutdown token abandons a handler that ignores cancellation.
            await manager.StopAsync(drain.Token, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // A handler that ignores cancellation is abandoned; its checkpoint stays before its event.
        }
    }
}
