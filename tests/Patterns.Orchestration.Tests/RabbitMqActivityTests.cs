using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Tests;

/// <summary>Five sequential activities; each returns its step number, so a run that saw every step once returns 15.</summary>
public sealed class FiveStepWorkflow : Workflow<string, int>
{
    public override async Task<int> RunAsync(WorkflowContext context, string input)
    {
        var sum = 0;
        for (var step = 1; step <= 5; step++)
        {
            sum += await context.CallActivityAsync<int>("Step", $"{input}|{step}");
        }

        return sum;
    }
}

/// <summary>Lets a test hold chosen activity attempts (by "instance|step") until a signal, or until their host stops them.</summary>
public sealed class StepGate
{
    public Func<string, CancellationToken, Task>? Hold { get; set; }
}

/// <summary>The one activity of <see cref="FiveStepWorkflow"/>: logs "Step:instance|step:attempt" in its host's log, passes the gate, returns the step.</summary>
public sealed class RelaySteps(CallLog log, StepGate gate)
{
    public async Task<int> Step(string input, ActivityContext context)
    {
        log.Add($"Step:{input}:{context.Attempt}");
        if (gate.Hold is { } hold)
        {
            await hold(input, context.CancellationToken);
        }

        return int.Parse(input[(input.IndexOf('|', StringComparison.Ordinal) + 1)..], CultureInfo.InvariantCulture);
    }
}

/// <summary>
/// Activities on the RabbitMQ transport, with two hosts (standing in for two processes) on one durable store (a SQLite file,
/// or a PostgreSQL schema): activity tasks leave the owner through the outbox, cross the broker to whichever host's
/// workers take them, and their results come back on the result queue. Each host logs the activity attempts its own
/// workers run, so the tests see where each ran.
/// </summary>
public sealed class RabbitMqActivityTests : IAsyncLifetime
{
    private readonly StoreLocations _locations = new();
    private Rabbit? _rabbit;

    public ValueTask InitializeAsync() => ValueTask.CompletedTask;

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (_rabbit is not null)
            {
                await _rabbit.DisposeAsync();
            }
        }
        finally
        {
            await _locations.DisposeAsync();
        }
    }

    /// <summary>
    /// The owner runs no activity workers: every activity it schedules must cross the broker to the other host's workers,
    /// and every result must come back over it. Each activity runs once, on the other host, and each workflow completes once.
    /// </summary>
    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task ActivitiesOfOneHost_RunOnAnotherHostsWorkers_OverRabbitMq_EachOnce_AndEachWorkflowCompletesOnce(StoreKind store)
    {
        var location = await _locations.NewAsync(store);
        _rabbit = await Rabbit.RequireAsync("wf-remote");
        var ownerLog = new CallLog();
        var workerLog = new CallLog();
        await using var owner = await StartNodeAsync("node-a", store, location, ownerLog, new StepGate(), o => o.Options.RunActivityWorkers = false);
        await using var worker = await StartNodeAsync("node-b", store, location, workerLog, new StepGate());
        owner.Runtime.OwnedPartitions.Should().Equal(0, 1, 2, 3);
        worker.Runtime.OwnedPartitions.Should().BeEmpty();

        var ids = Enumerable.Range(0, 6).Select(i => "remote-" + i).ToList();
        for (var i = 0; i < ids.Count; i++)
        {
            await (i % 2 == 0 ? owner : worker).Client.StartAsync(nameof(FiveStepWorkflow), ids[i], ids[i]);
        }

        foreach (var id in ids)
        {
            (await worker.ResultAsync<int>(id)).Should().Be(15);
            await AssertCompletedOnceAsync(owner, id);
        }

        ownerLog.Calls.Should().BeEmpty("the owner runs no activity workers");
        workerLog.Calls.Should().BeEquivalentTo(ids.SelectMany(id => Enumerable.Range(1, 5).Select(step => $"Step:{id}|{step}:1")), "each activity ran once, on the other host");
        worker.CommittedEvents.Should().Be(0, "only the owner commits the instances' histories");
    }

    /// <summary>
    /// Both hosts run workers, each one activity at a time with a prefetch of one. Two instances' first activities hold until
    /// both run at once, which they can only do on different hosts: the workers compete for the one activity queue. Every
    /// activity runs once in all, and each workflow completes once.
    /// </summary>
    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task CompetingWorkersOnTwoHosts_ShareTheActivityQueue_EachActivityOnce_AndEachWorkflowCompletesOnce(StoreKind store)
    {
        var location = await _locations.NewAsync(store);
        _rabbit = await Rabbit.RequireAsync("wf-compete");
        var running = 0;
        var bothRunning = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var gate = new StepGate
        {
            Hold = async (input, cancellationToken) =>
            {
                if (input.EndsWith("|1", StringComparison.Ordinal))
                {
                    if (Interlocked.Increment(ref running) == 2)
                    {
                        bothRunning.TrySetResult();
                    }

                    await bothRunning.Task.WaitAsync(TestHost.Wait, cancellationToken);
                }
            },
        };
        var logA = new CallLog();
        var logB = new CallLog();
        void OneAtATime(OrchestrationBuilder o) => o.Options.ActivityConcurrency = 1;
        await using var a = await StartNodeAsync("node-a", store, location, logA, gate, OneAtATime, prefetchOne: true);
        await using var b = await StartNodeAsync("node-b", store, location, logB, gate, OneAtATime, prefetchOne: true);

        string[] ids = ["compete-0", "compete-1"];
        foreach (var id in ids)
        {
            await a.Client.StartAsync(nameof(FiveStepWorkflow), id, id);
        }

        foreach (var id in ids)
        {
            (await b.ResultAsync<int>(id)).Should().Be(15);
            await AssertCompletedOnceAsync(a, id);
        }

        logA.Calls.Count(c => c.EndsWith("|1:1", StringComparison.Ordinal)).Should().Be(1, "each host ran one of the two first steps at once");
        logB.Calls.Count(c => c.EndsWith("|1:1", StringComparison.Ordinal)).Should().Be(1, "each host ran one of the two first steps at once");
        logA.Calls.Concat(logB.Calls).Should().BeEquivalentTo(ids.SelectMany(id => Enumerable.Range(1, 5).Select(step => $"Step:{id}|{step}:1")), "each activity ran once in all");
    }

    private static async Task AssertCompletedOnceAsync(TestHost host, string id)
    {
        var history = (await host.Client.GetHistoryAsync(id)).Events;
        history.Count(e => e.Kind == HistoryEventKind.Completed).Should().Be(1, $"{id} completes once");
        history.Where(e => e.Kind == HistoryEventKind.ActivityScheduled).Select(e => e.Seq).Should().Equal([1, 2, 3, 4, 5], $"{id} scheduled each step once");
        history.Where(e => e.Kind == HistoryEventKind.ActivityCompleted).Select(e => e.Seq).Should().Equal([1, 2, 3, 4, 5], $"{id} recorded each step's result once");
    }

    /// <summary>
    /// A host on the test's RabbitMQ prefix and the shared store, four partitions, leases renewed every 3.3 s (a loaded
    /// machine never lets them lapse; a graceful stop hands over at once), requests handed over every 50 ms.
    /// </summary>
    private Task<TestHost> StartNodeAsync(string name, StoreKind store, string? location, CallLog log, StepGate gate, Action<OrchestrationBuilder>? configure = null, bool prefetchOne = false) =>
        TestHost.StartAsync(
            o =>
            {
                o.AddWorkflow<FiveStepWorkflow>().AddActivities<RelaySteps>();
                o.Options.NodeId = name;
                o.Options.Partitions = 4;
                o.Options.LeaseDuration = TimeSpan.FromSeconds(10);
                o.Options.HandoffInterval = TimeSpan.FromMilliseconds(50);
                configure?.Invoke(o);
            },
            store,
            location,
            log: log,
            clock: TimeProvider.System,
            services: s => s.AddSingleton(gate),
            transport: _rabbit!.Transport(prefetchOne ? o => o.PrefetchCount = 1 : null));
}
