using Patterns.Orchestration.History;
using Patterns.Orchestration.Runtime;

namespace Patterns.Orchestration.Tests;

/// <summary>
/// Waits cancelled together through the run's token (a timer, a signal, a signal with a timeout): each wait's own
/// registration cancels it, in the order the token runs them (last registered first), the same live and on replay; and an
/// ended run is still answered (queries, its history replayed) once its executor has let go of its last task.
/// </summary>
public sealed class CancelledWaitsTests
{
    [Fact]
    public async Task Cancel_WhileWaitingForATimerAndSignals_CancelsEachWaitLastRegisteredFirst()
    {
        await using var host = await TestHost.StartAsync(static o => o.AddWorkflow<CancelledWaitsWorkflow>().AddActivities<TestActivities>());
        await host.Client.StartAsync(nameof(CancelledWaitsWorkflow), "waits", "x");
        await host.WaitForAsync("waits", HistoryEventKind.TimerStarted, 2);

        await host.Client.CancelAsync("waits");

        // The token runs its callbacks last registered first: the timeout's timer, the "late" signal, "go", the first timer.
        // The signal-with-timeout is cancelled by its timer, which is cancelled first.
        var order = await host.ResultAsync<string>("waits");
        order.Should().Be("signal-or-timeout,signal,timer");

        // The run ended and its executor let go of its last task: a query loads the run again from its history.
        var query = await host.Client.QueryAsync<string>("waits", "order").WaitAsync(TestHost.Wait);
        query.Should().Be(order);
        var history = await host.Client.GetHistoryAsync("waits");
        history.Events[^1].Kind.Should().Be(HistoryEventKind.Completed);
        var replay = () => new WorkflowReplayer().AddWorkflow<CancelledWaitsWorkflow>().Replay(history);
        replay.Should().NotThrow();
    }

    [Fact]
    public async Task SignalWait_CancelledByItsOwnToken_LeavesTheOtherWaitsAndBuffersALaterSignal()
    {
        await using var host = await TestHost.StartAsync(static o => o.AddWorkflow<OwnTokenSignalWorkflow>().AddActivities<TestActivities>());
        await host.Client.StartAsync(nameof(OwnTokenSignalWorkflow), "own", "x");
        await host.WaitForAsync("own", HistoryEventKind.Started);
        await host.Client.SignalAsync("own", "stop", 1);

        // Sent once the task that applied "stop" is committed: the code has run until it waits again by then.
        await host.WaitForAsync("own", static e => e is { Kind: HistoryEventKind.SignalReceived, Name: "stop" });

        // "stop" cancelled only the first wait for "go"; the second still waits, and gets the signal sent now.
        await host.Client.SignalAsync("own", "go", 7);
        (await host.ResultAsync<string>("own")).Should().Be("cancelled,7");
    }

    [Fact]
    public void EventTypes_AreTheNamesOlderVersionsStored()
    {
        foreach (var kind in Enum.GetValues<HistoryEventKind>())
        {
            WorkflowRuntime.EventTypeOf(kind).Should().Be("wf." + kind);
        }
    }
}

public sealed class CancelledWaitsWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string input)
    {
        var order = new List<string>();
        context.SetQueryHandler("order", () => string.Join(",", order));
        await Task.WhenAll(
            WatchAsync(order, "timer", context.DelayAsync(TimeSpan.FromDays(1))),
            WatchAsync(order, "signal", context.WaitForSignalAsync<int>("go")),
            WatchAsync(order, "signal-or-timeout", context.WaitForSignalAsync<int>("late", TimeSpan.FromDays(1))));
        return string.Join(",", order);
    }

    private static async Task WatchAsync(List<string> order, string name, Task wait)
    {
        try
        {
            await wait;
            order.Add(name + ":done");
        }
        catch (OperationCanceledException)
        {
            order.Add(name);
        }
    }
}

/// <summary>Waits for "go" on a token of its own, cancelled by a "stop" signal, then waits for "go" again.</summary>
public sealed class OwnTokenSignalWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string input)
    {
        using var stop = new CancellationTokenSource();
        var first = context.WaitForSignalAsync<int>("go", stop.Token);
        await context.WaitForSignalAsync<int>("stop");
#pragma warning disable CA1849 // CancelAsync runs the callbacks on the thread pool: off the workflow's scheduler
        stop.Cancel();
#pragma warning restore CA1849
        string outcome;
        try
        {
            outcome = (await first).ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (OperationCanceledException)
        {
            outcome = "cancelled";
        }

        var second = await context.WaitForSignalAsync<int>("go");
        return outcome + "," + second.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }
}
