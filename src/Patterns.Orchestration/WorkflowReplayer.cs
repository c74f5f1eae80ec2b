using System.Diagnostics.CodeAnalysis;
using Patterns.Orchestration.Engine;
using Patterns.Serialization;

namespace Patterns.Orchestration;

/// <summary>
/// Replays stored histories against the current workflow code, without a host or a store: run it in CI over histories
/// exported from production (<see cref="IWorkflowClient.GetHistoryAsync"/>, <see cref="WorkflowHistory.ToJson"/>) to find
/// changes that need <see cref="WorkflowContext.Patched"/> before they are deployed.
/// </summary>
public sealed class WorkflowReplayer
{
    private readonly Dictionary<string, WorkflowDefinition> _workflows = new(StringComparer.Ordinal);
    private readonly IServiceProvider _services;
    private readonly IMessageSerializer _serializer;

    /// <summary>Initializes a new instance of the <see cref="WorkflowReplayer"/> class.</summary>
    /// <param name="services">Creates workflow objects (constructor injection); an empty provider when null.</param>
    /// <param name="serializer">Reads payloads; the default JSON serializer when null (use the host's serializer).</param>
    public WorkflowReplayer(IServiceProvider? services = null, IMessageSerializer? serializer = null)
    {
        _services = services ?? EmptyServices.Instance;
        _serializer = serializer ?? new JsonMessageSerializer();
    }

    /// <summary>Adds a workflow type to replay histories of.</summary>
    /// <typeparam name="TWorkflow">The workflow.</typeparam>
    /// <param name="name">Its registered name; the class name when null.</param>
    /// <returns>This replayer.</returns>
    public WorkflowReplayer AddWorkflow<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TWorkflow>(string? name = null)
        where TWorkflow : WorkflowBase
    {
        var definition = WorkflowDefinition.For<TWorkflow>(name);
        _workflows[definition.Name] = definition;
        return this;
    }

    /// <summary>Replays one history.</summary>
    /// <param name="history">The history.</param>
    /// <exception cref="NonDeterminismException">The code does not match the history; names the first mismatching event and its index.</exception>
    /// <exception cref="WorkflowDeterminismException">The code broke a determinism rule.</exception>
    /// <exception cref="InvalidOperationException">The history's workflow type was not added.</exception>
    public void Replay(WorkflowHistory history)
    {
        ArgumentNullException.ThrowIfNull(history);
        if (!_workflows.TryGetValue(history.WorkflowType, out var definition))
        {
            throw new InvalidOperationException($"The replayer has no workflow '{history.WorkflowType}'; add it with AddWorkflow<T>().");
        }

        var executor = new WorkflowExecutor(definition, _services, _serializer, history.InstanceId, history.Run, int.MaxValue, static () => { }) { Stream = history.InstanceId };
        executor.Replay(history.Events);
    }

    /// <summary>Replays many histories and reports every one that fails, instead of stopping at the first.</summary>
    /// <param name="histories">The histories.</param>
    /// <returns>The failures, by instance id; empty when every history replays.</returns>
    public IReadOnlyDictionary<string, Exception> ReplayAll(IEnumerable<WorkflowHistory> histories)
    {
        ArgumentNullException.ThrowIfNull(histories);
        var failures = new Dictionary<string, Exception>(StringComparer.Ordinal);
        foreach (var history in histories)
        {
            try
            {
                Replay(history);
            }
            catch (Exception ex) when (ex is NonDeterminismException or WorkflowDeterminismException or InvalidOperationException)
            {
                failures[history.InstanceId] = ex;
            }
        }

        return failures;
    }

    private sealed class EmptyServices : IServiceProvider
    {
        public static EmptyServices Instance { get; } = new();

        public object? GetService(Type serviceType) => null;
    }
}
