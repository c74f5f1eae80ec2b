using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.Hosting;
using Patterns.Orchestration;
using Patterns.Orchestration.Activities;
using Patterns.Orchestration.Runtime;
using Patterns.Serialization;
using Patterns.Storage;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers durable workflows on an <see cref="IServiceCollection"/>. Calling it again adds registrations but never duplicates the engine.</summary>
public static class OrchestrationServiceCollectionExtensions
{
    /// <summary>
    /// Adds the workflow engine, its activity workers and <see cref="IWorkflowClient"/>. Histories go to the store chosen
    /// with <c>AddEventSourcing(es => es.UseSqlite(...))</c> (in memory unless another is chosen); activity tasks travel on
    /// the transport chosen with <c>AddPatterns</c>.
    /// </summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Registers workflows and activities and sets <see cref="OrchestrationOptions"/>.</param>
    /// <returns>The services.</returns>
    public static IServiceCollection AddOrchestration(this IServiceCollection services, Action<OrchestrationBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var existing = services.FirstOrDefault(static d => d.ServiceType == typeof(OrchestrationOptions))?.ImplementationInstance as OrchestrationOptions;
        var builder = new OrchestrationBuilder(services, existing ?? new OrchestrationOptions());
        configure?.Invoke(builder);
        if (existing is not null)
        {
            return services;
        }

        var options = builder.Options;
        services.AddEventSourcing();
        services.AddOutbox();
        services.AddSingleton(options);
        services.AddOptions<OrchestrationTopology>().ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<OrchestrationTopology>, OrchestrationValidator>());
        services.AddSingleton(static sp => new WorkflowRuntime(
            sp,
            sp.GetRequiredService<OrchestrationOptions>(),
            sp.GetRequiredService<IOptions<OrchestrationTopology>>().Value.Workflows,
            sp.GetRequiredService<IEventStorage>(),
            sp.GetRequiredService<IUnitOfWorkStorage>(),
            sp.GetRequiredService<IDocumentStorage>(),
            sp.GetRequiredService<IMessageSerializer>(),
            sp.GetRequiredService<MessageBus>(),
            sp.GetRequiredService<TimeProvider>(),
            PatternsServiceCollectionExtensions.LoggerFactory(sp).CreateLogger("Patterns.Orchestration"),
            sp.GetService<ILeaseStore>()));
        services.AddSingleton<IWorkflowClient>(static sp => new WorkflowClient(sp.GetRequiredService<WorkflowRuntime>()));
        services.AddSingleton(static sp => new ActivityWorker(
            sp.GetRequiredService<IOptions<OrchestrationTopology>>().Value.Activities.ToDictionary(static a => a.Name, StringComparer.Ordinal),
            sp.GetRequiredService<IServiceScopeFactory>(),
            sp.GetRequiredService<IMessageSerializer>(),
            sp.GetRequiredService<Patterns.Queues.IQueueSender>(),
            sp.GetRequiredService<IDocumentStorage>(),
            sp.GetRequiredService<OrchestrationOptions>(),
            sp.GetRequiredService<TimeProvider>(),
            PatternsServiceCollectionExtensions.LoggerFactory(sp).CreateLogger("Patterns.Orchestration.Activities")));
        services.AddMessageQueue(q =>
        {
            q.AddConsumer<ActivityResult>(
                options.ResultQueue,
                static (result, context, ct) => new ValueTask(context.Services.GetRequiredService<WorkflowRuntime>().DeliverResultAsync(result, ct)),
                o => o.Concurrency = options.ResultConcurrency);
            if (options.RunActivityWorkers)
            {
                q.AddConsumer<ActivityTask>(
                    options.ActivityQueue,
                    static (task, context, ct) => context.Services.GetRequiredService<ActivityWorker>().HandleAsync(task, context, ct),
                    o => o.Concurrency = options.ActivityConcurrency);
            }
            else
            {
                q.AddQueue(options.ActivityQueue);
            }
        });
        if (options.RunActivityWorkers)
        {
            // Every worker process hears every cancellation: one consumer group per process.
            var group = $"{options.CancellationTopic}.{Environment.MachineName}.{Environment.ProcessId}";
            services.AddPubSub(p => p.Subscribe<ActivityCancellation>(
                static (cancel, context, _) =>
                {
                    context.Services.GetRequiredService<ActivityWorker>().Cancel(cancel.InstanceId, cancel.Incarnation, cancel.Run, cancel.Seq);
                    return default;
                },
                options.CancellationTopic,
                o => o.ConsumerGroup = group));
        }

        services.AddSingleton<IHostedService>(static sp => new OrchestrationHostedService(
            sp.GetRequiredService<WorkflowRuntime>(), PatternsServiceCollectionExtensions.LoggerFactory(sp).CreateLogger("Patterns.Orchestration")));
        return services;
    }
}

[OptionsValidator]
internal sealed partial class OrchestrationOptionsAttributesValidator : IValidateOptions<OrchestrationOptions>;

/// <summary>Checks the options and the registrations at host start, reporting every problem at once.</summary>
internal sealed partial class OrchestrationValidator(OrchestrationOptions options, IServiceProviderIsService services, IMessageSerializer serializer) : IValidateOptions<OrchestrationTopology>
{
    public ValidateOptionsResult Validate(string? name, OrchestrationTopology topology)
    {
        var attributes = new OrchestrationOptionsAttributesValidator().Validate(null, options);
        var errors = attributes.Failed ? [.. attributes.Failures] : new List<string>();

        if (options.ActivityQueue == options.ResultQueue)
        {
            errors.Add($"OrchestrationOptions.ActivityQueue and ResultQueue must differ (both are '{options.ActivityQueue}').");
        }

        LeaseRunner.ValidateDuration(errors, "OrchestrationOptions.LeaseDuration", options.LeaseDuration);
        if (options.HandoffInterval <= TimeSpan.Zero || options.HandoffInterval > TimeSpan.FromMinutes(10))
        {
            errors.Add($"OrchestrationOptions.HandoffInterval must be between 0 and 10 minutes (was {options.HandoffInterval}).");
        }

        if (topology.Workflows.Count == 0)
        {
            errors.Add("AddOrchestration registered no workflow; add one with o.AddWorkflow<TWorkflow>().");
        }

        foreach (var duplicate in topology.Workflows.GroupBy(static w => w.Name).Where(static g => g.Count() > 1))
        {
            errors.Add($"Two workflows are registered as '{duplicate.Key}' ({string.Join(", ", duplicate.Select(static w => w.Type.Name))}); give one another name.");
        }

        foreach (var duplicate in topology.Activities.GroupBy(static a => a.Name).Where(static g => g.Count() > 1))
        {
            errors.Add($"Two activities are registered as '{duplicate.Key}'; give one another name.");
        }

        foreach (var workflow in topology.Workflows)
        {
            foreach (var conflict in workflow.Registration.Types.GroupBy(static d => (d.Kind, d.Name, d.Role)).Where(static g => g.Select(static d => d.Type).Distinct().Count() > 1))
            {
                var (kind, request, role) = conflict.Key;
                errors.Add($"Workflow '{workflow.Name}' declares {kind} '{request}' with different {role} types "
                    + $"({string.Join(", ", conflict.Select(static d => d.Type).Distinct().Select(static t => $"'{t.FullName ?? t.Name}'"))}); declare each name once.");
            }
        }

        foreach (var (service, what) in new[] { (typeof(IUnitOfWorkStorage), "units of work"), (typeof(IDocumentStorage), "documents") })
        {
            if (!services.IsService(service))
            {
                errors.Add($"Orchestration needs a store with {what} ({service.Name}); the store chosen in AddEventSourcing(...) has none.");
            }
        }

        if (serializer is JsonMessageSerializer json)
        {
            if (MissingJsonMetadata(topology, json) is { Count: > 0 } missing)
            {
                errors.Add(
                    $"The JSON serializer has no metadata for {string.Join(", ", missing.Select(static t => $"'{t}'"))}, which workflow histories must record "
                    + "(workflow inputs and results, activity inputs and results, correlated messages). Add [JsonSerializable(typeof(...))] for each to a "
                    + "JsonSerializerContext and pass it with UseSystemTextJson(context) (NativeAOT and trimmed apps cannot serialize by reflection).");
            }

            foreach (var workflow in topology.Workflows)
            {
                if (MissingDeclaredJsonMetadata(workflow, json) is { Count: > 0 } types)
                {
                    errors.Add(
                        $"Workflow '{workflow.Name}' declares {string.Join(", ", types)}, for which the JSON serializer has no metadata. Add "
                        + "[JsonSerializable(typeof(...))] for each to the JsonSerializerContext passed with UseSystemTextJson(context) (NativeAOT "
                        + "and trimmed apps cannot serialize by reflection).");
                }
            }
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>
    /// The full names of the registered types the serializer cannot write or read (under NativeAOT or trimming, types missing
    /// from the JsonSerializerContext), sorted; <c>object</c> (no input or no result) is skipped. Signal, update and query
    /// types are checked per workflow when declared (<see cref="MissingDeclaredJsonMetadata"/>); undeclared ones are only
    /// known when used, and fail there with an error that names them.
    /// </summary>
    internal static SortedSet<string> MissingJsonMetadata(OrchestrationTopology topology, JsonMessageSerializer json)
    {
        var types = topology.Workflows.SelectMany(static w => new[] { w.InputType, w.ResultType })
            .Concat(topology.Activities.SelectMany(static a => new[] { a.InputType, a.ResultType }))
            .Concat(topology.Messages);
        var missing = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var type in types)
        {
            if (type is not null && type != typeof(object) && !json.HasMetadataFor(type))
            {
                missing.Add(type.FullName ?? type.Name);
            }
        }

        return missing;
    }

    /// <summary>The declared signal, update and query types of <paramref name="workflow"/> the serializer cannot write or read, each described with its role and name.</summary>
    internal static List<string> MissingDeclaredJsonMetadata(Patterns.Orchestration.Engine.WorkflowDefinition workflow, JsonMessageSerializer json) =>
        [.. workflow.Registration.Types
            .Where(d => d.Type != typeof(object) && !json.HasMetadataFor(d.Type))
            .Select(static d => $"{d.Kind} '{d.Name}' with {d.Role} type '{d.Type.FullName ?? d.Type.Name}'")];
}

/// <summary>Resumes running instances when the host starts; stops the engine's timers when it stops.</summary>
internal sealed class OrchestrationHostedService(WorkflowRuntime runtime, ILogger logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            await runtime.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            OrchestrationLog.RecoveryFailed(logger, ex);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => runtime.StopAsync();
}
