using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Tests;

public sealed class WorkflowEngineTests
{
    internal static void All(OrchestrationBuilder o) => o
        .AddWorkflow<SequenceWorkflow>()
        .AddWorkflow<FanOutWorkflow>()
        .AddWorkflow<TimerWorkflow>()
        .AddWorkflow<CounterWorkflow>()
        .AddWorkflow<RetryWorkflow>()
        .AddWorkflow<FailingActivityWorkflow>()
        .AddWorkflow<TimeoutWorkflow>()
        .AddWorkflow<LocalActivityWorkflow>()
        .AddWorkflow<ParentWorkflow>()
        .AddWorkflow<ContinueWorkflow>()
        .AddWorkflow<CancellableWorkflow>()
        .AddWorkflow<DeterministicValuesWorkflow>()
        .AddWorkflow<BlockingActivityWorkflow>()
        .AddWorkflow<StickyWorkflow>()
        .AddActivities<TestActivities>();

    [Fact]
    public async Task Start_SequenceWorkflow_RunsActivitiesInOrderAndRecordsHistory()
    {
        await using var host = await TestHost.StartAsync(All);

        await host.Client.StartAsync(nameof(SequenceWorkflow), "seq-1", "a");
        var result = await host.ResultAsync<string>("seq-1");

        result.Should().Be("echo-a-1,echo-a-2,echo-a-3");
        host.Log.Calls.Where(c => c.StartsWith("Echo", StringComparison.Ordinal)).Should().Equal("Echo:a-1", "Echo:a-2", "Echo:a-3");
        var history = await host.Client.GetHistoryAsync("seq-1");
        history.Events.Select(e => e.Kind).Should().Equal(
            HistoryEventKind.Started, HistoryEventKind.ActivityScheduled,
            HistoryEventKind.ActivityCompleted, HistoryEventKind.ActivityScheduled,
            HistoryEventKind.ActivityCompleted, HistoryEventKind.ActivityScheduled,
            HistoryEventKind.ActivityCompleted, HistoryEventKind.Completed);
        history.Events.Select(e => e.Task).Should().Equal(1, 1, 2, 2, 3, 3, 4, 4);
        (await host.Client.DescribeAsync("seq-1"))!.Status.Should().Be(WorkflowStatus.Completed);
    }

    [Fact]
    public async Task Start_WarmInstance_NeverReplays()
    {
        await using var host = await TestHost.StartAsync(All);

        await host.Client.StartAsync(nameof(SequenceWorkflow), "warm", "w");
        await host.ResultAsync<string>("warm");

        host.Log.Count("run").Should().Be(1);
        host.Runtime.Replays.Should().Be(0);
    }

    [Fact]
    public async Task Start_SameInstanceIdTwice_StartsOnce()
    {
        await using var host = await TestHost.StartAsync(All);

        await host.Client.StartAsync(nameof(SequenceWorkflow), "idem", "x");
        await host.Client.StartAsync(nameof(SequenceWorkflow), "idem", "y");
        var result = await host.ResultAsync<string>("idem");
        await host.Client.StartAsync(nameof(SequenceWorkflow), "idem", "z");

        result.Should().Be("echo-x-1,echo-x-2,echo-x-3");
        host.Log.Count("run").Should().Be(1);
        (await host.Client.GetHistoryAsync("idem")).Events.Count(e => e.Kind == HistoryEventKind.Started).Should().Be(1);
    }

    [Fact]
    public async Task WhenAll_FanOut_SchedulesEveryActivityInOneTask()
    {
        await using var host = await TestHost.StartAsync(All);

        await host.Client.StartAsync(nameof(FanOutWorkflow), "fan", 10);

        (await host.ResultAsync<int>("fan")).Should().Be(110);
        var history = await host.Client.GetHistoryAsync("fan");
        history.Events.Where(e => e.Task == 1 && e.Kind == HistoryEventKind.ActivityScheduled).Select(e => e.Seq).Should().Equal(Enumerable.Range(1, 10));
        history.Events.Count(e => e.Kind == HistoryEventKind.ActivityCompleted).Should().Be(10);
    }

    [Fact]
    public async Task DelayAsync_DurableTimer_FiresOnlyWhenVirtualTimeReachesIt()
    {
        await using var host = await TestHost.StartAsync(All);

        await host.Client.StartAsync(nameof(TimerWorkflow), "timer", 60);
        await host.WaitForAsync("timer", HistoryEventKind.TimerStarted);
        host.Time.Advance(TimeSpan.FromMinutes(59));
        host.Runtime.Timers.Count.Should().Be(1);
        host.Time.Advance(TimeSpan.FromMinutes(1));

        (await host.ResultAsync<string>("timer")).Should().Be("60");
        host.Log.Count("timer-done").Should().Be(1);
        host.Runtime.Timers.Count.Should().Be(0);
    }

    [Fact]
    public async Task GetResult_OfAnInstanceThatEndsAndLeavesWhileTheClientLooks_ReturnsItsResult()
    {
        // Without exclusive ownership (in-memory store): the client saw the instance running here, so it read no record;
        // the instance then ends and leaves the instance map before the client looks at the map again.
        await using var host = await TestHost.StartAsync(All);
        await host.Client.StartAsync(nameof(TimerWorkflow), "race", 60);
        await host.WaitForAsync("race", HistoryEventKind.TimerStarted);
        var removed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Runtime.SlotRemoved += id =>
        {
            if (id == "race")
            {
                removed.TrySetResult();
            }
        };
        host.Runtime.WaitingForEnd += id =>
        {
            if (id == "race" && !removed.Task.IsCompleted)
            {
                // Blocks the client between its look at the instance and its look at the map, while the timer fires and
                // the instance ends and leaves the map on other threads.
                host.Time.Advance(TimeSpan.FromMinutes(60));
                removed.Task.Wait(TestHost.Wait, TestContext.Current.CancellationToken).Should().BeTrue();
            }
        };

        (await host.ResultAsync<string>("race")).Should().Be("60");
    }

    [Fact]
    public async Task Signals_QueryAndUpdate_SeeAndChangeTheWorkflowState()
    {
        await using var host = await TestHost.StartAsync(All);
        await host.Client.StartAsync(nameof(CounterWorkflow), "counter", 10);

        await host.Client.SignalAsync("counter", "add", 3);
        (await host.Client.QueryAsync<int>("counter", "sum")).Should().Be(3);
        (await host.Client.UpdateAsync<int, int>("counter", "set", 8)).Should().Be(8);
        (await host.Client.QueryAsync<int>("counter", "sum")).Should().Be(8);
        var info = await host.Client.DescribeAsync("counter");
        System.Text.Encoding.UTF8.GetString(info!.CustomStatusPayload!.Value.Span).Should().Be("{\"sum\":3}");
        await host.Client.SignalAsync("counter", "add", 2);

        (await host.ResultAsync<int>("counter")).Should().Be(10);
        var kinds = (await host.Client.GetHistoryAsync("counter")).Events.Select(e => e.Kind).ToList();
        kinds.Should().ContainInOrder(HistoryEventKind.SignalReceived, HistoryEventKind.UpdateRequested, HistoryEventKind.UpdateCompleted, HistoryEventKind.SignalReceived, HistoryEventKind.Completed);
    }

    [Fact]
    public async Task Activity_FailingTwice_IsRetriedWithBackoffOnVirtualTime()
    {
        await using var host = await TestHost.StartAsync(All);
        var retries = new List<TaskCompletionSource>() { new(TaskCreationOptions.RunContinuationsAsynchronously), new(TaskCreationOptions.RunContinuationsAsynchronously) };
        host.Worker.RetryScheduled += (_, attempt) => retries[attempt - 1].TrySetResult();

        await host.Client.StartAsync(nameof(RetryWorkflow), "retry", "x");
        await retries[0].Task.WaitAsync(TestHost.Wait);
        host.Time.Advance(TimeSpan.FromSeconds(9));
        host.Log.Count("Flaky:x:2").Should().Be(0);
        host.Time.Advance(TimeSpan.FromSeconds(1));
        await retries[1].Task.WaitAsync(TestHost.Wait);
        host.Time.Advance(TimeSpan.FromSeconds(20));

        (await host.ResultAsync<string>("retry")).Should().Be("ok-x");
        host.Log.Calls.Where(c => c.StartsWith("Flaky", StringComparison.Ordinal)).Should().Equal("Flaky:x:1", "Flaky:x:2", "Flaky:x:3");
    }

    [Fact]
    public async Task Activity_FailingForGood_SurfacesInTheWorkflowAsActivityFailureException()
    {
        await using var host = await TestHost.StartAsync(All);

        await host.Client.StartAsync(nameof(FailingActivityWorkflow), "fail", "4242");

        (await host.ResultAsync<string>("fail")).Should().Be("AlwaysFails|System.ArgumentException|card declined: 4242");
        host.Log.Count("AlwaysFails:4242").Should().Be(1);
    }

    [Theory]
    [InlineData("Slow", 30)]
    [InlineData("Beating", 5)]
    public async Task Activity_TimingOutOrMissingHeartbeats_IsCancelledAndRetried(string activity, int timeoutSeconds)
    {
        await using var host = await TestHost.StartAsync(All);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var retry = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Worker.AttemptStarted += (_, attempt) =>
        {
            if (attempt == 1)
            {
                started.TrySetResult();
            }
        };
        host.Worker.RetryScheduled += (_, _) => retry.TrySetResult();

        await host.Client.StartAsync(nameof(TimeoutWorkflow), "timeout-" + activity, activity);
        await started.Task.WaitAsync(TestHost.Wait);
        host.Time.Advance(TimeSpan.FromSeconds(timeoutSeconds));
        await retry.Task.WaitAsync(TestHost.Wait);
        host.Time.Advance(TimeSpan.FromSeconds(1));

        (await host.ResultAsync<string>("timeout-" + activity)).Should().EndWith("-x");
        host.Log.Calls.Where(c => c.StartsWith(activity, StringComparison.Ordinal)).Should().Equal($"{activity}:x:1", $"{activity}:x:2");
    }

    [Fact]
    public async Task LocalActivity_RunsInlineOnceAndItsResultIsRecorded()
    {
        await using var host = await TestHost.StartAsync(All);

        await host.Client.StartAsync(nameof(LocalActivityWorkflow), "local", 5);

        (await host.ResultAsync<int>("local")).Should().Be(30);
        host.Log.Count("local").Should().Be(1);
        var history = await host.Client.GetHistoryAsync("local");
        var local = history.Events.Single(e => e.Kind == HistoryEventKind.LocalActivityCompleted);
        local.Name.Should().Be("AddTen");
        System.Text.Encoding.UTF8.GetString(local.Payload!).Should().Be("15");
        new WorkflowReplayer(host.Host.Services).AddWorkflow<LocalActivityWorkflow>().Replay(history);
        host.Log.Count("local").Should().Be(1);
    }

    [Fact]
    public async Task ChildWorkflows_RunConcurrentlyAndReturnToTheParent()
    {
        await using var host = await TestHost.StartAsync(All);

        await host.Client.StartAsync(nameof(ParentWorkflow), "parent", 3);

        (await host.ResultAsync<int>("parent")).Should().Be(12 + 20);
        (await host.Client.DescribeAsync("parent/child-1"))!.Status.Should().Be(WorkflowStatus.Completed);
        (await host.Client.DescribeAsync("parent/child-2"))!.Status.Should().Be(WorkflowStatus.Completed);
    }

    [Fact]
    public async Task ContinueAsNew_StartsFreshRunsUntilDone()
    {
        await using var host = await TestHost.StartAsync(All);

        await host.Client.StartAsync(nameof(ContinueWorkflow), "can", 1);

        (await host.ResultAsync<int>("can")).Should().Be(303);
        var info = await host.Client.DescribeAsync("can");
        info!.Run.Should().Be(3);
        var history = await host.Client.GetHistoryAsync("can");
        history.Run.Should().Be(3);
        history.Events.Should().HaveCount(4);
        host.Log.Calls.Where(c => c.StartsWith("Double", StringComparison.Ordinal)).Should().Equal("Double:1", "Double:2", "Double:3");
    }

    [Fact]
    public async Task Cancel_CancelsTheTimerAndLetsCompensationRun()
    {
        await using var host = await TestHost.StartAsync(All);
        await host.Client.StartAsync(nameof(CancellableWorkflow), "cancel", "x");
        await host.WaitForAsync("cancel", HistoryEventKind.TimerStarted);

        await host.Client.CancelAsync("cancel");

        var act = () => host.ResultAsync<string>("cancel");
        (await act.Should().ThrowAsync<WorkflowFailedException>()).Which.Status.Should().Be(WorkflowStatus.Canceled);
        host.Log.Count("cleanup-x").Should().Be(1);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task CancelOrTerminate_FiresTheRunningActivitysCancellationToken(bool terminate)
    {
        await using var host = await TestHost.StartAsync(All);
        var id = terminate ? "stop-running" : "cancel-running";
        await host.Client.StartAsync(nameof(BlockingActivityWorkflow), id, "a");
        await host.Log.WaitForAsync("Blocking:a");

        if (terminate)
        {
            await host.Client.TerminateAsync(id, "enough");
        }
        else
        {
            await host.Client.CancelAsync(id);
        }

        await host.Log.WaitForAsync("Blocking-canceled:a");
        var act = () => host.ResultAsync<string>(id);
        (await act.Should().ThrowAsync<WorkflowFailedException>()).Which.Status.Should().Be(terminate ? WorkflowStatus.Terminated : WorkflowStatus.Canceled);
        host.Log.Count("Blocking:a").Should().Be(1);
    }

    /// <summary>
    /// One activity slot, held by another instance's activity: the task of the cancelled (or terminated) instance waits
    /// in the queue behind it. When the slot frees, the task is dropped unrun.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task CancelOrTerminate_WhileTheActivityWaitsForAFreeSlot_ItNeverRuns(bool terminate)
    {
        await using var host = await TestHost.StartAsync(o =>
        {
            All(o);
            o.Options.ActivityConcurrency = 1;
        });
        var dropped = new TaskCompletionSource<ActivityTask>(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Worker.Dropped += task => dropped.TrySetResult(task);
        await host.Client.StartAsync(nameof(BlockingActivityWorkflow), "holder", "a");
        await host.Log.WaitForAsync("Blocking:a");
        await host.Client.StartAsync(nameof(BlockingActivityWorkflow), "queued", "b");
        await host.WaitForAsync("queued", HistoryEventKind.ActivityScheduled);

        if (terminate)
        {
            await host.Client.TerminateAsync("queued", "enough");
        }
        else
        {
            await host.Client.CancelAsync("queued");
        }

        var act = () => host.ResultAsync<string>("queued");
        (await act.Should().ThrowAsync<WorkflowFailedException>()).Which.Status.Should().Be(terminate ? WorkflowStatus.Terminated : WorkflowStatus.Canceled);
        await host.Client.TerminateAsync("holder"); // frees the slot
        var ran = host.Log.WaitForAsync("Blocking:b");
        (await Task.WhenAny(dropped.Task, ran).WaitAsync(TestHost.Wait)).Should().BeSameAs(dropped.Task, "the cancelled activity's task is dropped, not run");
        (await dropped.Task).Should().Match<ActivityTask>(t => t.InstanceId == "queued" && t.Seq == 1);

        await host.Client.StartAsync(nameof(SequenceWorkflow), "after", "c");
        (await host.ResultAsync<string>("after")).Should().Be("echo-c-1,echo-c-2,echo-c-3", "the slot serves later tasks");
        host.Log.Count("Blocking:b").Should().Be(0);
    }

    [Fact]
    public async Task Terminate_DuringARetryDelay_NoFurtherAttemptRuns()
    {
        await using var host = await TestHost.StartAsync(o =>
        {
            All(o);
            o.Options.ActivityConcurrency = 1;
        });
        var retry = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Worker.RetryScheduled += (_, _) => retry.TrySetResult();
        await host.Client.StartAsync(nameof(RetryWorkflow), "retry-stop", "x");
        await retry.Task.WaitAsync(TestHost.Wait); // attempt 1 failed; attempt 2 waits 10 s

        await host.Client.TerminateAsync("retry-stop");
        host.Time.Advance(TimeSpan.FromMinutes(1));

        // The one slot is free again (a retry still waiting would hold it): a later workflow's activities run.
        await host.Client.StartAsync(nameof(SequenceWorkflow), "after-retry", "y");
        (await host.ResultAsync<string>("after-retry")).Should().Be("echo-y-1,echo-y-2,echo-y-3");
        host.Log.Calls.Where(c => c.StartsWith("Flaky", StringComparison.Ordinal)).Should().Equal("Flaky:x:1");
    }

    [Fact]
    public async Task Terminate_EndsAnInstanceWithoutRunningItsCode()
    {
        await using var host = await TestHost.StartAsync(All);
        await host.Client.StartAsync(nameof(CounterWorkflow), "term", 100);

        await host.Client.TerminateAsync("term", "operator said so");

        var act = () => host.ResultAsync<int>("term");
        var failure = (await act.Should().ThrowAsync<WorkflowFailedException>()).Which;
        failure.Status.Should().Be(WorkflowStatus.Terminated);
        failure.Error.Should().Be("operator said so");
        var signal = () => host.Client.SignalAsync("term", "add", 1);
        await signal.Should().ThrowAsync<WorkflowFailedException>();
        (await host.Client.GetHistoryAsync("term")).Events[^1].Kind.Should().Be(HistoryEventKind.Terminated);
    }

    [Fact]
    public async Task DeterministicValues_AreTheSameOnReplay()
    {
        await using var host = await TestHost.StartAsync(All);
        await host.Client.StartAsync(nameof(DeterministicValuesWorkflow), "values", "x");
        var result = await host.ResultAsync<string>("values");

        var history = await host.Client.GetHistoryAsync("values");
        var replay = () => new WorkflowReplayer(host.Host.Services).AddWorkflow<DeterministicValuesWorkflow>().Replay(history);

        replay.Should().NotThrow();
        result.Should().EndWith("|2026-01-01T00:00:00.0000000+00:00");
        host.Log.Count("Echo:" + result).Should().Be(1);
    }

    [Fact]
    public async Task ListAndPurge_SelectByStatusAndRemoveHistory()
    {
        await using var host = await TestHost.StartAsync(All);
        await host.Client.StartAsync(nameof(FanOutWorkflow), "list-1", 1);
        await host.Client.StartAsync(nameof(FanOutWorkflow), "list-2", 1);
        await host.Client.StartAsync(nameof(CounterWorkflow), "list-3", 5);
        await host.ResultAsync<int>("list-1");
        await host.ResultAsync<int>("list-2");

        var completed = await host.Client.ListAsync(WorkflowStatus.Completed).Select(i => i.InstanceId).ToListAsync();
        var running = await host.Client.ListAsync(WorkflowStatus.Running).Select(i => i.InstanceId).ToListAsync();
        var purged = await host.Client.PurgeAsync("list-1");
        var purgeRunning = () => host.Client.PurgeAsync("list-3");

        completed.Should().Equal("list-1", "list-2");
        running.Should().Equal("list-3");
        purged.Should().BeTrue();
        (await host.Client.DescribeAsync("list-1")).Should().BeNull();
        await purgeRunning.Should().ThrowAsync<InvalidOperationException>().WithMessage("*list-3*Running*terminate it before purging*");
    }

    [Fact]
    public async Task Client_UnknownNames_FailClearly()
    {
        await using var host = await TestHost.StartAsync(All);
        await host.Client.StartAsync(nameof(CounterWorkflow), "names", 5);

        var start = () => host.Client.StartAsync("NoSuchWorkflow", "x");
        var signal = () => host.Client.SignalAsync("no-such-instance", "add", 1);
        var query = () => host.Client.QueryAsync<int>("names", "nope");
        var update = () => host.Client.UpdateAsync<int, int>("names", "nope", 1);

        await start.Should().ThrowAsync<InvalidOperationException>().WithMessage("No workflow named 'NoSuchWorkflow' is registered*");
        await signal.Should().ThrowAsync<WorkflowNotFoundException>().WithMessage("No workflow instance 'no-such-instance' exists.");
        await query.Should().ThrowAsync<KeyNotFoundException>().WithMessage("*has no query handler 'nope'*");
        await update.Should().ThrowAsync<InvalidOperationException>().WithMessage("*no update handler 'nope'*");
    }

    [Fact]
    public async Task AddOrchestration_InvalidOptions_FailAtStartListingEveryProblem()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.AddOrchestration(o =>
        {
            o.Options.ResultQueue = o.Options.ActivityQueue;
            o.Options.ActivityConcurrency = 0;
        });
        using var host = builder.Build();

        var start = () => host.StartAsync();

        var error = (await start.Should().ThrowAsync<OptionsValidationException>()).Which;
        error.Failures.Should().Contain(f => f.Contains("ActivityQueue and ResultQueue must differ", StringComparison.Ordinal));
        error.Failures.Should().Contain(f => f.Contains("registered no workflow", StringComparison.Ordinal));
        error.Failures.Should().Contain(f => f.Contains("ActivityConcurrency", StringComparison.Ordinal));
    }
}
