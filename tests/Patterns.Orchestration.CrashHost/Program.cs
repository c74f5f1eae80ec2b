// Usage: Patterns.Orchestration.CrashHost <sqlite|postgres> <file or schema> <activity log> <instance id>
// Resumes every unfinished instance, starts <instance id> (prints STARTED once the start is durable), waits for it, prints DONE. Each activity appends
// "instance|step" to the activity log (before it returns) and prints STEP, so the parent can kill it mid-way.
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Orchestration;
using Patterns.EventSourcing;

var (store, target, log, instanceId) = (args[0], args[1], args[2], args[3]);
var builder = Host.CreateApplicationBuilder();
builder.Logging.ClearProviders();
builder.AddPatterns(p => p.UseInMemory());
builder.AddEventSourcing(es =>
{
    if (store == "sqlite")
    {
        es.UseSqlite($"Data Source={target}");
    }
    else
    {
        es.UsePostgres(o =>
        {
            o.ConnectionString = Environment.GetEnvironmentVariable("PATTERNS_POSTGRES");
            o.Schema = target;
        });
    }
});
builder.AddOrchestration(o =>
{
    o.Options.NodeId = "crash-host"; // a restart takes its partitions back at once
    o.AddWorkflow<FiveSteps>()
        .AddActivity<int, int>("Step", (step, context) =>
        {
            File.AppendAllText(log, $"{context.InstanceId}|{step}\n");
            Console.Out.WriteLine("STEP");
            Console.Out.Flush();
            return Task.FromResult(step);
        });
});
using var host = builder.Build();
await host.StartAsync();
var client = host.Services.GetRequiredService<IWorkflowClient>();
await foreach (var running in client.ListAsync(WorkflowStatus.Running))
{
    await client.GetResultAsync<int>(running.InstanceId);
}

await client.StartAsync(nameof(FiveSteps), instanceId, 5);
Console.Out.WriteLine("STARTED");
Console.Out.Flush();
await client.GetResultAsync<int>(instanceId);
Console.Out.WriteLine("DONE");
Console.Out.Flush();
await host.StopAsync();

/// <summary>Five sequential activities.</summary>
internal sealed class FiveSteps : Workflow<int, int>
{
    public override async Task<int> RunAsync(WorkflowContext context, int steps)
    {
        var sum = 0;
        for (var i = 1; i <= steps; i++)
        {
            sum += await context.CallActivityAsync<int>("Step", i);
        }

        return sum;
    }
}
