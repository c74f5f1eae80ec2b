using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Patterns.Streaming;

/// <summary>Registers stream pipelines that run as hosted services.</summary>
/// <remarks>
/// Each pipeline starts with the host and stops gracefully with it: it stops reading, finishes what it holds within
/// <see cref="Hosting.PatternsOptions.ShutdownTimeout"/>, and saves its window state to the registered
/// <see cref="IStreamSnapshotStore"/> (in memory unless another is registered), from which it resumes on the next start.
/// A pipeline that fails (a <see cref="FailurePolicy.Stop"/> stage) is logged and ends; the host keeps running.
/// </remarks>
public sealed class StreamingBuilder
{
    internal StreamingBuilder(IServiceCollection services) => Services = services;

    /// <summary>Gets the service collection.</summary>
    public IServiceCollection Services { get; }

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
