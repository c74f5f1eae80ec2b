using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.Streaming;

/// <summary>Registers stream pipelines that run as hosted services.</summary>
/// <remarks>
/// Each pipeline starts with the host and stops gracefully with it: it stops reading, finishes what it holds within
/// <see cref="Hosting.PatternsOptions.ShutdownTimeout"/>, and saves its window state to the registered
/// <see cref="IStreamSnapshotStore"/> (the store's documents when <c>AddEventSourcing</c> chose a store with units of work, in memory otherwise, unless another is registered), from which it resumes on the next start.
/// A pipeline that fails (a <see cref="FailurePolicy.Stop"/> stage) is logged and ends; the host keeps running.
/// </remarks>
public sealed class StreamingBuilder
{
    internal StreamingBuilder(IServiceCollection services) => Services = services;

    /// <summary>Gets the service collection.</summary>
    public IServiceCollection Services { get; }

    /// <summary>
    /// Keeps the pipelines' snapshots in the store chosen with <c>AddEventSourcing</c> (document collection
    /// <see cref="StoreStreamSnapshotStore.Collection"/>), written through its units of work. This is already the default
    /// when that store has units of work; the call makes it explicit, and the host then fails to start without such a store.
    /// </summary>
    /// <returns>This builder.</returns>
    public StreamingBuilder UseStoreSnapshots()
    {
        Services.Replace(ServiceDescriptor.Singleton<IStreamSnapshotStore>(static sp => StreamSnapshotStores.Store(sp)));
        return this;
    }

    /// <summary>Adds a pipeline, built from the application's services when the host starts.</summary>
    /// <param name="name">The pipeline's name, unique in the application (logs, telemetry, snapshots); <see cref="StreamOptions.Name"/> overrides it.</param>
    /// <param name="factory">Builds the pipeline; sources such as <see cref="DataStream.FromSubscription{T}"/> take the services.</param>
    /// <returns>This builder.</returns>
    public StreamingBuilder AddPipeline(string name, Func<IServiceProvider, StreamPipeline> factory)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(factory);
        Services.Configure<StreamingTopology>(t => t.Pipelines.Add(new PipelineRegistration(name, factory)));
        return this;
    }
}

/// <summary>Chooses the snapshot store from the registered services.</summary>
internal static class StreamSnapshotStores
{
    /// <summary>The store's documents when it has units of work (durable), otherwise in memory.</summary>
    public static IStreamSnapshotStore Default(IServiceProvider services) =>
        (IStreamSnapshotStore?)TryStore(services) ?? new InMemoryStreamSnapshotStore();

    public static IStreamSnapshotStore Store(IServiceProvider services) =>
        TryStore(services) ?? throw new InvalidOperationException(
            "UseStoreSnapshots() needs a store with documents and units of work (IDocumentStorage and IUnitOfWorkStorage): choose one with AddEventSourcing(es => es.UseSqlite(...)) or UsePostgres(...).");

    private static StoreStreamSnapshotStore? TryStore(IServiceProvider services) =>
        services.GetService<IUnitOfWorkStorage>() is { } units && services.GetService<IDocumentStorage>() is { } documents
            ? new StoreStreamSnapshotStore(documents, units, services.GetRequiredService<IMessageSerializer>())
            : null;
}

internal sealed record PipelineRegistration(string Name, Func<IServiceProvider, StreamPipeline> Factory);

internal sealed class StreamingTopology
{
    public List<PipelineRegistration> Pipelines { get; } = [];
}

/// <summary>Checks the pipeline registrations at host start.</summary>
internal sealed class StreamingTopologyValidator : IValidateOptions<StreamingTopology>
{
    public ValidateOptionsResult Validate(string? name, StreamingTopology options)
    {
        var errors = new List<string>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var pipeline in options.Pipelines)
        {
            if (string.IsNullOrWhiteSpace(pipeline.Name))
            {
                errors.Add("A stream pipeline has an empty name.");
            }
            else if (!names.Add(pipeline.Name))
            {
                errors.Add($"Stream pipeline '{pipeline.Name}' is registered twice; pipeline names are unique (they name snapshots).");
            }
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
