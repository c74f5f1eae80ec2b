using Microsoft.DurableTask;
using Microsoft.DurableTask.Client;
using Microsoft.DurableTask.Testing;
using Microsoft.DurableTask.Worker;

namespace Patterns.Benchmarks.Orchestration;

/// <summary>DurableTask with its in-process test host (in-memory backend), as its docs set it up: the same chain of no-op activities.</summary>
public sealed class DurableTaskEngine : IAsyncDisposable
{
    private readonly DurableTaskTestHost _host;

    private DurableTaskEngine(DurableTaskTestHost host) => _host = host;

    public static async Task<DurableTaskEngine> StartAsync() =>
        new(await DurableTaskTestHost.StartAsync(tasks =>
        {
            tasks.AddOrchestratorFunc<int, int>("NoOpChain", async (context, activities) =>
            {
                for (var i = 0; i < activities; i++)
                {
                    await context.CallActivityAsync<int>("NoOp", i);
                }

                return activities;
            });
            tasks.AddActivityFunc<int, int>("NoOp", static (_, i) => i);
        }));

    /// <summary>Starts <paramref name="count"/> chains of <paramref name="activities"/> activities at once and waits for every one to complete.</summary>
    public async Task RunAsync(int count, int activities)
    {
        var ids = new Task<string>[count];
        for (var i = 0; i < count; i++)
        {
            ids[i] = _host.Client.ScheduleNewOrchestrationInstanceAsync("NoOpChain", activities);
        }

        var done = new Task<OrchestrationMetadata>[count];
        for (var i = 0; i < count; i++)
        {
            done[i] = _host.Client.WaitForInstanceCompletionAsync(await ids[i], getInputsAndOutputs: false);
        }

        foreach (var metadata in await Task.WhenAll(done))
        {
            if (metadata.RuntimeStatus != OrchestrationRuntimeStatus.Completed)
            {
                throw new InvalidOperationException($"DurableTask instance {metadata.InstanceId} ended {metadata.RuntimeStatus}.");
            }
        }
    }

    public ValueTask DisposeAsync() => _host.DisposeAsync();
}
