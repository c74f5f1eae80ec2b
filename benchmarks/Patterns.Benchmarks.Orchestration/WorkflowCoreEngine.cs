using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using WorkflowCore.Interface;
using WorkflowCore.Models;
using WorkflowCore.Models.LifeCycleEvents;

namespace Patterns.Benchmarks.Orchestration;

public sealed class ChainData
{
    public int Activities { get; set; }
}

public sealed class NoOpStep : StepBody
{
    public override ExecutionResult Run(IStepExecutionContext context) => ExecutionResult.Next();
}

public sealed class FiveNoOps : IWorkflow<ChainData>
{
    public string Id => "five-noops";

    public int Version => 1;

    public void Build(IWorkflowBuilder<ChainData> builder) =>
        builder.StartWith<NoOpStep>().Then<NoOpStep>().Then<NoOpStep>().Then<NoOpStep>().Then<NoOpStep>();
}

public sealed class OneNoOp : IWorkflow<ChainData>
{
    public string Id => "one-noop";

    public int Version => 1;

    public void Build(IWorkflowBuilder<ChainData> builder) => builder.StartWith<NoOpStep>();
}

/// <summary>WorkflowCore with its in-memory persistence (the only one served here), as its README sets it up.</summary>
public sealed class WorkflowCoreEngine : IDisposable
{
    private readonly ServiceProvider _services;
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _waiting = new();

    public WorkflowCoreEngine()
    {
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddWorkflow();
        _services = services.BuildServiceProvider();
        Host = _services.GetRequiredService<IWorkflowHost>();
        Host.RegisterWorkflow<FiveNoOps, ChainData>();
        Host.RegisterWorkflow<OneNoOp, ChainData>();
        Host.OnLifeCycleEvent += e =>
        {
            if (e is WorkflowCompleted)
            {
                _waiting.GetOrAdd(e.WorkflowInstanceId, static _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
            }
        };
        Host.Start();
    }

    public IWorkflowHost Host { get; }

    public async Task RunAsync(string workflow, int count)
    {
        var all = new Task[count];
        for (var i = 0; i < count; i++)
        {
            var id = await Host.StartWorkflow(workflow, 1, new ChainData());
            all[i] = _waiting.GetOrAdd(id, static _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }

        await Task.WhenAll(all);
        _waiting.Clear();
    }

    public void Dispose()
    {
        Host.Stop();
        _services.Dispose();
    }
}
