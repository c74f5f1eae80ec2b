using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Consuming;
using Patterns.Orchestration.History;
using Patterns.PubSub;
using Patterns.Queues;

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

/// <summary>A consume filter made of a delegate (a test's hook into one host's consumers).</summary>
internal sealed class DelegateFilter(Func<ConsumeContext, ConsumeDelegate, ValueTask> filter) : IConsumeFilter
{
    public ValueTask InvokeAsync(ConsumeContext context, ConsumeDelegate next) => filter(context, next);
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

    /// <summary>
    /// The owner stops while its worker runs the third activity of a workflow. Its engine stops first and stops the attempt:
    /// the delivery is released (uncounted), not failed, so the broker gives the task to the other host, which takes the
    /// partitions over, resumes the instance from its history, runs the third activity again, then the last two. The workflow
    /// completes once, each step completed once, the stop caused one extra execution (the interrupted attempt), and nothing
    /// is dead-lettered. (Before, the stopped attempt counted as a failed delivery: with no redeliveries configured the task
    /// was dead-lettered and the workflow waited until it was replayed.)
    /// </summary>
    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task TheOwnerStopsMidActivity_TheOtherHostFinishesTheWorkflowOnce_WithOneExtraExecution_AndNothingDeadLettered(StoreKind store)
    {
        var location = await _locations.NewAsync(store);
        _rabbit = await Rabbit.RequireAsync("wf-stop");
        var logA = new CallLog();
        var logB = new CallLog();
        var holdThird = new StepGate
        {
            Hold = (input, cancellationToken) => input == "mid|3" ? Task.Delay(Timeout.Infinite, cancellationToken) : Task.CompletedTask,
        };
        var a = await StartNodeAsync("node-a", store, location, logA, holdThird);
        try
        {
            await a.Client.StartAsync(nameof(FiveStepWorkflow), "mid", "mid");
            await logA.WaitForAsync("Step:mid|3:1"); // the first host's worker runs (and holds) the third step

            // The first host's stop stops the held attempt (its delivery is released) and hands the partitions over.
            await using var b = await TakeOverAsync(a, store, location, logB);

            (await ResultOrExplainAsync(b, "mid", logA, logB)).Should().Be(15);
            await AssertCompletedOnceAsync(b, "mid");
            logA.Calls.Should().Equal("Step:mid|1:1", "Step:mid|2:1", "Step:mid|3:1");
            logB.Calls.Should().Equal("Step:mid|3:1", "Step:mid|4:1", "Step:mid|5:1");
            b.EventsOf("mid").Count(e => e.Kind == HistoryEventKind.Completed).Should().Be(1, "the second host completed it");
            await AssertNothingDeadLetteredAsync(b);
        }
        finally
        {
            await a.DisposeAsync();
        }
    }

    /// <summary>
    /// The owner stops while an activity result is in its hands: its result consumer holds the third step's result until
    /// the owner's engine has stopped, then hands it on. The engine refuses it as stopped, the delivery is released
    /// (uncounted), and the other host, which takes the partitions over, commits it; the workflow completes once with every
    /// step run once, and nothing is dead-lettered. (Before, the refused hand-off counted as a failed delivery and the result
    /// was dead-lettered, leaving the workflow waiting.)
    /// </summary>
    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task TheOwnerStopsWithAResultInHand_TheOtherHostCommitsIt_AndTheWorkflowCompletesOnce(StoreKind store)
    {
        var location = await _locations.NewAsync(store);
        _rabbit = await Rabbit.RequireAsync("wf-result");
        var logA = new CallLog();
        var logB = new CallLog();
        var holdResult = new HoldUntilEngineStops(m => m is ActivityResult { InstanceId: "held", Seq: 3 });
        var a = await StartNodeAsync("node-a", store, location, logA, new StepGate(), extra: holdResult.AddTo);
        holdResult.Watch(a);
        try
        {
            await a.Client.StartAsync(nameof(FiveStepWorkflow), "held", "held");
            await holdResult.InHand.WaitAsync(TestHost.Wait); // the third step ran on the first host, and its result is in that host's hands
            await using var b = await TakeOverAsync(a, store, location, logB);

            (await ResultOrExplainAsync(b, "held", logA, logB)).Should().Be(15);
            await AssertCompletedOnceAsync(b, "held");
            logA.Calls.Should().Equal("Step:held|1:1", "Step:held|2:1", "Step:held|3:1");
            logB.Calls.Should().Equal("Step:held|4:1", "Step:held|5:1");
            await AssertNothingDeadLetteredAsync(b);
        }
        finally
        {
            await a.DisposeAsync();
        }
    }

    /// <summary>
    /// The owner stops while a correlated message is in its hands: its consumer holds the deposit until the owner's engine
    /// has stopped, then hands it on. The engine refuses it as stopped, the delivery is released (uncounted), and the other
    /// host (the same consumer group) takes it and, once it owns the partitions, applies it: the workflow completes once
    /// with the deposit applied once, and nothing is dead-lettered.
    /// </summary>
    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task TheOwnerStopsWithACorrelatedMessageInHand_TheOtherHostAppliesItOnce(StoreKind store)
    {
        var location = await _locations.NewAsync(store);
        _rabbit = await Rabbit.RequireAsync("wf-corr");
        var holdDeposit = new HoldUntilEngineStops(m => m is Deposit { AccountId: "acct-held" });
        static void Accounts(OrchestrationBuilder o) => o.AddWorkflow<AccountWorkflow>().CorrelateMessage<Deposit>("deposits", d => d.AccountId);
        var a = await StartNodeAsync("node-a", store, location, new CallLog(), new StepGate(), Accounts, extra: holdDeposit.AddTo);
        holdDeposit.Watch(a);
        try
        {
            await a.Client.StartAsync(nameof(AccountWorkflow), "acct-held", 1);
            await a.Host.Services.GetRequiredService<IPublisher>().PublishAsync("deposits", new Deposit("acct-held", 42));
            await holdDeposit.InHand.WaitAsync(TestHost.Wait);
            await using var b = await TakeOverAsync(a, store, location, new CallLog(), Accounts);

            (await b.ResultAsync<int>("acct-held")).Should().Be(42);
            var history = (await b.Client.GetHistoryAsync("acct-held")).Events;
            history.Count(e => e.Kind == HistoryEventKind.SignalReceived).Should().Be(1, "the deposit is applied once");
            history.Count(e => e.Kind == HistoryEventKind.Completed).Should().Be(1);
            (await b.Host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync("orchestration.Deposit", 10)).Should().BeEmpty("a stop releases the message, it does not fail it");
        }
        finally
        {
            await a.DisposeAsync();
        }
    }

    /// <summary>
    /// Starts the second host ("node-b") while the first still owns every partition, then stops the first (disposes it),
    /// which releases what it holds and hands its partitions over; returns the second host.
    /// </summary>
    private async Task<TestHost> TakeOverAsync(TestHost first, StoreKind store, string? location, CallLog log, Action<OrchestrationBuilder>? configure = null)
    {
        var second = await StartNodeAsync("node-b", store, location, log, new StepGate(), configure);
        try
        {
            second.Runtime.OwnedPartitions.Should().BeEmpty("the first host owns every partition");
            await first.DisposeAsync();
            return second;
        }
        catch
        {
            await second.DisposeAsync();
            throw;
        }
    }

    private static async Task<int> ResultOrExplainAsync(TestHost b, string id, CallLog logA, CallLog logB)
    {
        try
        {
            return await b.ResultAsync<int>(id);
        }
        catch (TimeoutException)
        {
            var history = (await b.Client.GetHistoryAsync(id)).Events.Select(e => $"{e.Kind} {e.Name} #{e.Seq}");
            var deadLetters = b.Host.Services.GetRequiredService<IDeadLetterQueue>();
            var options = b.Host.Services.GetRequiredService<OrchestrationOptions>();
            var dead = (await deadLetters.PeekAsync(options.ActivityQueue, 10)).Concat(await deadLetters.PeekAsync(options.ResultQueue, 10)).Select(d => d.Reason);
            throw new TimeoutException(
                $"The second host did not finish the workflow. First host ran [{string.Join(", ", logA.Calls)}]; second host ran [{string.Join(", ", logB.Calls)}], "
                + $"owns partitions [{string.Join(", ", b.Runtime.OwnedPartitions)}]; history [{string.Join(", ", history)}]; dead letters [{string.Join(" | ", dead)}].");
        }
    }

    private static async Task AssertNothingDeadLetteredAsync(TestHost host)
    {
        var deadLetters = host.Host.Services.GetRequiredService<IDeadLetterQueue>();
        var options = host.Host.Services.GetRequiredService<OrchestrationOptions>();
        (await deadLetters.PeekAsync(options.ActivityQueue, 10)).Should().BeEmpty("a stop releases the activity task, it does not fail it");
        (await deadLetters.PeekAsync(options.ResultQueue, 10)).Should().BeEmpty("a stop releases the result, it does not fail it");
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
    private Task<TestHost> StartNodeAsync(
        string name, StoreKind store, string? location, CallLog log, StepGate gate, Action<OrchestrationBuilder>? configure = null, bool prefetchOne = false, Action<IServiceCollection>? extra = null) =>
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
            services: s =>
            {
                s.AddSingleton(gate);
                extra?.Invoke(s);
            },
            transport: _rabbit!.Transport(prefetchOne ? o => o.PrefetchCount = 1 : null));

    /// <summary>
    /// A consume filter for one host that holds the first message <paramref name="matches"/> accepts until that host's engine has
    /// stopped (its consumers still run), then hands it on: the engine then refuses it as stopped.
    /// </summary>
    private sealed class HoldUntilEngineStops(Func<object?, bool> matches)
    {
        private readonly TaskCompletionSource _inHand = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Gets a task that completes when the message is in the host's hands.</summary>
        public Task InHand => _inHand.Task;

        /// <summary>Registers the filter with the host's services.</summary>
        public void AddTo(IServiceCollection services) => services.AddSingleton<IConsumeFilter>(new DelegateFilter(async (context, next) =>
        {
            if (matches(context.Message) && _inHand.TrySetResult())
            {
                await _stopped.Task.WaitAsync(TestHost.Wait);
            }

            await next(context);
        }));

        /// <summary>Lets the held message go once <paramref name="host"/>'s engine has stopped.</summary>
        public void Watch(TestHost host) => _ = host.Runtime.Stopped.ContinueWith(_ => _stopped.TrySetResult(), TaskScheduler.Default);
    }
}
