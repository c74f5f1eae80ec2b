using Patterns.Orchestration.Engine;
using Patterns.Orchestration.History;
using Patterns.Orchestration.Runtime;

namespace Patterns.Orchestration.Tests;

/// <summary>An update handler that waits for a durable timer; the run can end (on a signal) while it still waits.</summary>
public sealed class SlowUpdateWorkflow : Workflow<int, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, int input)
    {
        context.SetUpdateHandler<int, int>("slow", async value =>
        {
            await context.DelayAsync(TimeSpan.FromHours(1));
            return value;
        });
        return await context.WaitForSignalAsync<string>("stop");
    }
}

/// <summary>Returns its input at once, registering no handler.</summary>
public sealed class ImmediateWorkflow : Workflow<int, int>
{
    public override Task<int> RunAsync(WorkflowContext context, int input) => Task.FromResult(input);
}

/// <summary>A clock that can be set, backwards too (a wall clock corrected by NTP).</summary>
internal sealed class SettableClock(DateTimeOffset now) : TimeProvider
{
    public DateTimeOffset Now { get; set; } = now;

    public override DateTimeOffset GetUtcNow() => Now;
}

/// <summary>Returns the first <c>input</c> "item" signals in the order it received them.</summary>
public sealed class OrderedSignalsWorkflow : Workflow<int, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, int input)
    {
        var items = new List<int>();
        while (items.Count < input)
        {
            items.Add(await context.WaitForSignalAsync<int>("item"));
        }

        return string.Join(",", items);
    }
}

/// <summary>Adds each "add" update's argument to a total (so an update applied twice shows) until cancelled.</summary>
public sealed class TallyWorkflow : Workflow<int, int>
{
    private int _total;

    public override async Task<int> RunAsync(WorkflowContext context, int input)
    {
        context.SetQueryHandler("total", () => _total);
        context.SetUpdateHandler<int, int>("add", value => Task.FromResult(_total += value));
        await context.WaitForSignalAsync<int>("stop");
        return _total;
    }
}

/// <summary>
/// Updates and signals delivered in the same workflow task as the start (issue 11): they wait for the handlers the workflow's
/// body registers, apply once and in arrival order, replay the same way, and no update is left waiting when the run ends.
/// </summary>
public sealed class UpdateDeliveryTests : IAsyncLifetime
{
    private readonly StoreLocations _locations = new();

    public ValueTask InitializeAsync() => ValueTask.CompletedTask;

    public ValueTask DisposeAsync() => _locations.DisposeAsync();

    [Theory]
    [InlineData(StoreKind.InMemory)]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task UpdateAndSignal_InTheStartsBatch_ApplyInOrderAfterTheBodyRegistersItsHandlers_AndReplayTheSame(StoreKind store)
    {
        var location = await _locations.NewAsync(store);
        await using (var host = await TestHost.StartAsync(WorkflowEngineTests.All, store, location))
        {
            // One mailbox batch, so one workflow task: the start, then an update to 8, then a signal adding 5.
            var completed = await StartWithUpdateAndSignalAsync(host, "batched", "set", 8, 5);
            completed.Error.Should().BeNull();
            host.Runtime.Serializer.Deserialize(completed.Payload!, typeof(int)).Should().Be(8);
            (await host.Client.QueryAsync<int>("batched", "sum")).Should().Be(13, "the update (set 8) applies before the signal (add 5) that came after it");
            var history = (await host.Client.GetHistoryAsync("batched")).Events;
            history.Select(e => e.Kind).Should().Equal(
                HistoryEventKind.Started, HistoryEventKind.UpdateRequested, HistoryEventKind.SignalReceived, HistoryEventKind.UpdateCompleted);
            history.Should().OnlyContain(e => e.Task == 1, "all of it is one workflow task");
            host.Runtime.Replays.Should().Be(0);
        }

        if (store == StoreKind.InMemory)
        {
            return;
        }

        // Replayed from the store by a new host: the same decisions, so the same state and no non-determinism.
        await using var second = await TestHost.StartAsync(WorkflowEngineTests.All, store, location);
        (await second.Client.QueryAsync<int>("batched", "sum")).Should().Be(13);
        second.Runtime.Replays.Should().Be(1);
        await second.Client.SignalAsync("batched", "add", 87);
        (await second.ResultAsync<int>("batched")).Should().Be(100);
    }

    [Fact]
    public async Task Update_WithoutAHandlerEvenAfterTheBodyRan_IsRejectedOnce_AndTheSignalBehindItStillApplies()
    {
        await using var host = await TestHost.StartAsync(WorkflowEngineTests.All);
        var completed = await StartWithUpdateAndSignalAsync(host, "no-handler", "reset", 0, 5);
        completed.ErrorType.Should().Be(typeof(KeyNotFoundException).FullName);
        completed.Error.Should().Be("Workflow 'CounterWorkflow' has no update handler 'reset' (none was registered by the time the workflow waited); register it with ctx.SetUpdateHandler.");
        (await host.Client.QueryAsync<int>("no-handler", "sum")).Should().Be(5);
        (await host.Client.GetHistoryAsync("no-handler")).Events.Count(e => e.Kind == HistoryEventKind.UpdateCompleted).Should().Be(1);
    }

    [Fact]
    public async Task Update_StartedWithTheInstanceThroughTheClient_IsHandled()
    {
        await using var host = await TestHost.StartAsync(WorkflowEngineTests.All);

        // Not awaited in between: the update usually lands in the start's batch, and is handled whichever batch it is in.
        var start = host.Client.StartAsync(nameof(CounterWorkflow), "client-batch", 100);
        var update = host.Client.UpdateAsync<int, int>("client-batch", "set", 40);

        await start;
        (await update.WaitAsync(TestHost.Wait)).Should().Be(40);
        (await host.Client.QueryAsync<int>("client-batch", "sum")).Should().Be(40);
    }

    [Fact]
    public async Task Update_StillRunningWhenTheWorkflowCompletes_FailsTheCaller_InsteadOfLeavingItWaiting()
    {
        await using var host = await TestHost.StartAsync(o => o.AddWorkflow<SlowUpdateWorkflow>());
        await host.Client.StartAsync(nameof(SlowUpdateWorkflow), "slow", 1);

        var update = host.Client.UpdateAsync<int, int>("slow", "slow", 7);
        await host.WaitForAsync("slow", HistoryEventKind.TimerStarted);
        await host.Client.SignalAsync("slow", "stop", "done");

        (await host.ResultAsync<string>("slow")).Should().Be("done");
        var failed = await FluentActions.Awaiting(() => update.WaitAsync(TestHost.Wait)).Should().ThrowAsync<InvalidOperationException>();
        failed.Which.Message.Should().Be(
            "Update 'slow' of workflow instance 'slow' failed: System.InvalidOperationException: Workflow instance 'slow' ended (Completed) before update 'slow' completed.");
        var kinds = (await host.Client.GetHistoryAsync("slow")).Events.Select(e => e.Kind).ToList();
        kinds.Should().EndWith([HistoryEventKind.UpdateCompleted, HistoryEventKind.Completed], "the update's failure is recorded before the end");
    }

    [Fact]
    public async Task Update_DeliveredTwice_AsAfterACrashBetweenItsCommitAndItsMailboxRemoval_RunsItsHandlerOnce()
    {
        await using var host = await TestHost.StartAsync(o => o.AddWorkflow<TallyWorkflow>());
        await host.Client.StartAsync(nameof(TallyWorkflow), "tally", 0);
        var request = new HistoryEvent { Kind = HistoryEventKind.UpdateRequested, Name = "add", Id = "tally-update", Payload = Payload(host, 5) };

        var first = host.Runtime.RegisterUpdate("tally-update");
        await host.Runtime.Enqueue("tally", new EventItem(request));
        (await first.WaitAsync(TestHost.Wait)).Error.Should().BeNull();
        await host.Runtime.Enqueue("tally", new EventItem(request)); // the same request again: a mailbox drained twice

        (await host.Client.QueryAsync<int>("tally", "total")).Should().Be(5);
        var history = (await host.Client.GetHistoryAsync("tally")).Events;
        history.Count(e => e.Kind == HistoryEventKind.UpdateRequested).Should().Be(1);
        history.Count(e => e.Kind == HistoryEventKind.UpdateCompleted).Should().Be(1);
    }

    [Fact]
    public async Task Update_StillRunningWhenTheInstanceIsTerminated_FailsTheCaller_InsteadOfLeavingItWaiting()
    {
        await using var host = await TestHost.StartAsync(o => o.AddWorkflow<SlowUpdateWorkflow>());
        await host.Client.StartAsync(nameof(SlowUpdateWorkflow), "terminated", 1);

        var update = host.Client.UpdateAsync<int, int>("terminated", "slow", 7);
        await host.WaitForAsync("terminated", HistoryEventKind.TimerStarted);
        await host.Client.TerminateAsync("terminated", "operator");

        var failed = await FluentActions.Awaiting(() => update.WaitAsync(TestHost.Wait)).Should().ThrowAsync<InvalidOperationException>();
        failed.Which.Message.Should().Be("Workflow instance 'terminated' ended (Terminated) before update 'slow' completed.");
    }

    [Fact]
    public async Task Update_AndTerminate_SentTogether_FailTheUpdatesCaller()
    {
        await using var host = await TestHost.StartAsync(o => o.AddWorkflow<SlowUpdateWorkflow>());
        await host.Client.StartAsync(nameof(SlowUpdateWorkflow), "together", 1);
        await host.WaitForAsync("together", HistoryEventKind.Started);

        // Not awaited in between: the two usually land in one mailbox batch; the outcome is the same either way.
        var update = host.Client.UpdateAsync<int, int>("together", "slow", 7);
        var terminate = host.Client.TerminateAsync("together");

        await terminate.WaitAsync(TestHost.Wait);
        var failed = await FluentActions.Awaiting(() => update.WaitAsync(TestHost.Wait)).Should().ThrowAsync<InvalidOperationException>();
        failed.Which.Message.Should().Be("Workflow instance 'together' ended (Terminated) before update 'slow' completed.");
    }

    [Fact]
    public async Task Update_HeldWhenTheRunEndsInTheStartsTask_FailsWithTheSameWordingAsOneStillRunning()
    {
        await using var host = await TestHost.StartAsync(o => o.AddWorkflow<ImmediateWorkflow>());
        var outcome = host.Runtime.RegisterUpdate("immediate-update");
        host.Runtime.EnqueueAll(
            "immediate",
            new StartItem(nameof(ImmediateWorkflow), Payload(host, 3), null, 0),
            new EventItem(new HistoryEvent { Kind = HistoryEventKind.UpdateRequested, Name = "set", Id = "immediate-update", Payload = Payload(host, 1) }));

        var completed = await outcome.WaitAsync(TestHost.Wait);
        completed.ErrorType.Should().Be(typeof(InvalidOperationException).FullName);
        completed.Error.Should().Be("Workflow instance 'immediate' ended (Completed) before update 'set' completed.");
        (await host.ResultAsync<int>("immediate")).Should().Be(3);
    }

    [Fact]
    public async Task MailboxKeys_KeepTheirOrder_WhenTheClockGoesBack()
    {
        var clock = new SettableClock(new DateTimeOffset(2026, 1, 1, 12, 0, 0, TimeSpan.Zero));
        await using var host = await TestHost.StartAsync(o => o.AddWorkflow<ImmediateWorkflow>(), clock: clock);

        var keys = new List<string> { host.Runtime.MailboxKey("i") };
        clock.Now -= TimeSpan.FromMinutes(5); // an NTP correction
        keys.Add(host.Runtime.MailboxKey("i"));
        keys.Add(host.Runtime.MailboxKey("i"));
        clock.Now += TimeSpan.FromHours(1);
        keys.Add(host.Runtime.MailboxKey("i"));

        keys.Should().BeInAscendingOrder(StringComparer.Ordinal, "requests are drained in key order, which is the order they were sent");
        keys.Should().OnlyHaveUniqueItems();
    }

    /// <summary>Queues a CounterWorkflow start (target 100), an update and a signal "add" as one mailbox batch; returns the update's outcome.</summary>
    private static Task<HistoryEvent> StartWithUpdateAndSignalAsync(TestHost host, string instanceId, string update, int argument, int add)
    {
        var updateId = instanceId + "-update";
        var outcome = host.Runtime.RegisterUpdate(updateId);
        host.Runtime.EnqueueAll(
            instanceId,
            new StartItem(nameof(CounterWorkflow), Payload(host, 100), null, 0),
            new EventItem(new HistoryEvent { Kind = HistoryEventKind.UpdateRequested, Name = update, Id = updateId, Payload = Payload(host, argument) }),
            new EventItem(new HistoryEvent { Kind = HistoryEventKind.SignalReceived, Name = "add", Payload = Payload(host, add) }));
        return outcome.WaitAsync(TestHost.Wait);
    }

    private static byte[]? Payload(TestHost host, object value) => host.Runtime.Serializer.ToPayload(value, typeof(object));
}
