// Usage: Patterns.Orchestration.CrashHost <sqlite|postgres> <file or schema> <activity log> <instance id> [steps|retry|serve]
// Resumes every unfinished instance, starts <instance id> (prints STARTED once the start is durable), waits for it, prints DONE.
// Each activity attempt appends "instance|activity|attempt" to the activity log (before it returns or throws) and prints
// STEP, so the parent can kill it mid-way.
//   steps (the default)  FiveSteps: five sequential activities.
//   retry                RetrySaga: three steps that each fail twice before they succeed (4 attempts allowed), then a
//                        charge that always fails (3 attempts); the saga compensates the three steps in reverse order.
//   serve                Takes the partitions, prints READY and runs what other processes hand to it, until its
//                        standard input closes. Its SQLite poll interval is an hour and its hand-off interval 10 minutes:
//                        only pushed wake-ups reach it in time.
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Orchestration;
using Patterns.EventSourcing;

var (store, target, log, instanceId) = (args[0], args[1], args[2], args[3]);
var retry = args.Length > 4 && args[4] == "retry";
var serve = args.Length > 4 && args[4] == "serve";
var builder = Host.CreateApplicationBuilder();
builder.Logging.ClearProviders();
builder.AddPatterns(p => p.UseInMemory());
builder.AddEventSourcing(es =>
{
    if (store == "sqlite")
    {
        es.UseSqlite($"Data Source={target}", o => o.PollInterval = serve ? TimeSpan.FromHours(1) : o.PollInterval);
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

void Attempted(ActivityContext context, string activity)
{
    File.AppendAllText(log, $"{context.InstanceId}|{activity}|{context.Attempt}\n");
    Console.Out.WriteLine("STEP");
    Console.Out.Flush();
}

builder.AddOrchestration(o =>
{
    o.Options.NodeId = "crash-host"; // a restart takes its partitions back at once
    o.Options.HandoffInterval = serve ? TimeSpan.FromMinutes(10) : o.Options.HandoffInterval;
    o.AddWorkflow<FiveSteps>()
        .AddWorkflow<RetrySaga>()
        .AddActivity<int, int>("Step", (step, context) =>
        {
            Attempted(context, $"Step-{step}");
            return Task.FromResult(step);
        })
        .AddActivity<int, int>("Flaky", (step, context) =>
        {
            Attempted(context, $"Flaky-{step}");
            return context.Attempt <= RetrySaga.FailuresPerStep
                ? throw new InvalidOperationException($"step {step} attempt {context.Attempt} fails")
                : Task.FromResult(step);
        })
        .AddActivity<int, int>("Charge", (_, context) =>
        {
            Attempted(context, "Charge");
            throw new InvalidOperationException("the card is declined");
        })
        .AddActivity<int, int>("Undo", (step, context) =>
        {
            Attempted(context, $"Undo-{step}");
            return Task.FromResult(step);
        });
});
using var host = builder.Build();
await host.StartAsync();
var client = host.Services.GetRequiredService<IWorkflowClient>();
if (serve)
{
    Console.Out.WriteLine("READY");
    Console.Out.Flush();
    await Console.In.ReadToEndAsync();
    await host.StopAsync();
    return;
}

await foreach (var running in client.ListAsync(WorkflowStatus.Running))
{
    await WaitAsync(running.InstanceId);
}

if (retry)
{
    await client.StartAsync(nameof(RetrySaga), instanceId, RetrySaga.Steps);
}
else
{
    await client.StartAsync(nameof(FiveSteps), instanceId, 5);
}

Console.Out.WriteLine("STARTED");
Console.Out.Flush();
await WaitAsync(instanceId);
Console.Out.WriteLine("DONE");
Console.Out.Flush();
await host.StopAsync();

Task WaitAsync(string id) => retry ? client.GetResultAsync<string>(id) : client.GetResultAsync<int>(id);

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

/// <summary>Steps that succeed after retries, then a charge that fails after all its attempts: the steps are compensated in reverse order.</summary>
internal sealed class RetrySaga : Workflow<int, string>
{
    public const int Steps = 3;
    public const int FailuresPerStep = 2;
    public const int StepAttempts = 4;
    public const int ChargeAttempts = 3;

    public override async Task<string> RunAsync(WorkflowContext context, int steps)
    {
        static ActivityOptions Attempts(int n) => new() { Retry = new RetryPolicy { MaxAttempts = n, InitialInterval = TimeSpan.FromMilliseconds(20), BackoffCoefficient = 1 } };
        var saga = new CompensationScope();
        try
        {
            for (var i = 1; i <= steps; i++)
            {
                var step = await context.CallActivityAsync<int>("Flaky", i, Attempts(StepAttempts));
                saga.Add(() => context.CallActivityAsync<int>("Undo", step, Attempts(1)));
            }

            await context.CallActivityAsync<int>("Charge", 0, Attempts(ChargeAttempts));
            return "charged";
        }
        catch (ActivityFailureException)
        {
            await saga.CompensateAsync();
            return "compensated";
        }
    }
}
