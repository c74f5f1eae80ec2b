using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Tests;

/// <summary>Idle instances beyond <see cref="OrchestrationOptions.MaxCachedIdleInstances"/> leave the cache and replay on their next item.</summary>
public sealed class IdleEvictionTests
{
    private static void Counter(OrchestrationBuilder o, int limit)
    {
        o.Options.MaxCachedIdleInstances = limit;
        WorkflowEngineTests.All(o);
    }

    [Fact]
    public async Task Signal_ToAnEvictedInstance_ReplaysItAndAppliesTheSignalOnce()
    {
        await using var host = await TestHost.StartAsync(o => Counter(o, 1));
        var evicted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Runtime.Evicted += _ =>
        {
            if (host.Runtime.Evictions >= 4)
            {
                evicted.TrySetResult();
            }
        };

        var ids = Enumerable.Range(0, 5).Select(i => $"evict-{i}").ToArray();
        foreach (var id in ids)
        {
            await host.Client.StartAsync(nameof(CounterWorkflow), id, 3);
        }

        // Five instances idle on a signal with room for one: four leave the cache.
        await evicted.Task.WaitAsync(TestHost.Wait);
        host.Runtime.CachedInstances.Should().BeLessThanOrEqualTo(1);

        foreach (var id in ids)
        {
            await host.Client.SignalAsync(id, "add", 1);
        }

        foreach (var id in ids)
        {
            (await host.Client.QueryAsync<int>(id, "sum").WaitAsync(TestHost.Wait)).Should().Be(1, id);
            await host.Client.SignalAsync(id, "add", 2);
        }

        foreach (var id in ids)
        {
            (await host.ResultAsync<int>(id)).Should().Be(3, id);
            var history = await host.Client.GetHistoryAsync(id);
            history.Events.Count(e => e.Kind == HistoryEventKind.SignalReceived).Should().Be(2, id);
            history.Events.Count(e => e.Kind == HistoryEventKind.Started).Should().Be(1, id);
        }

        host.Runtime.Replays.Should().BeGreaterThanOrEqualTo(4);
    }

    [Fact]
    public async Task Update_ToAnEvictedInstance_ReplaysItAndReturnsItsResult()
    {
        await using var host = await TestHost.StartAsync(o => Counter(o, 0));
        var evicted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Runtime.Evicted += id =>
        {
            if (id == "evict-update")
            {
                evicted.TrySetResult();
            }
        };

        await host.Client.StartAsync(nameof(CounterWorkflow), "evict-update", 10);
        await evicted.Task.WaitAsync(TestHost.Wait);

        (await host.Client.UpdateAsync<int, int>("evict-update", "set", 7).WaitAsync(TestHost.Wait)).Should().Be(7);
        await host.Client.SignalAsync("evict-update", "add", 3);

        (await host.ResultAsync<int>("evict-update")).Should().Be(10);
        host.Runtime.Replays.Should().BeGreaterThanOrEqualTo(1);
    }

    [Fact]
    public async Task CorrelatedMessage_DeliveredAgainToAnEvictedInstance_IsAppliedOnce()
    {
        await using var host = await TestHost.StartAsync(o =>
        {
            o.Options.MaxCachedIdleInstances = 0;
            o.AddWorkflow<AccountWorkflow>().AddActivities<TestActivities>();
        });
        using var evicted = new SemaphoreSlim(0);
        host.Runtime.Evicted += _ => evicted.Release();
        await host.Client.StartAsync(nameof(AccountWorkflow), "evict-acct", 2);
        var id = Guid.NewGuid();

        // Evicted after its start, and again after the first deposit: the copy below finds only the history.
        (await evicted.WaitAsync(TestHost.Wait)).Should().BeTrue();
        await host.Runtime.DeliverMessageAsync("evict-acct", new Deposit("evict-acct", 5), id, CancellationToken.None).WaitAsync(TestHost.Wait);
        (await evicted.WaitAsync(TestHost.Wait)).Should().BeTrue();
        await host.Runtime.DeliverMessageAsync("evict-acct", new Deposit("evict-acct", 5), id, CancellationToken.None).WaitAsync(TestHost.Wait);
        await host.Runtime.DeliverMessageAsync("evict-acct", new Deposit("evict-acct", 7), Guid.NewGuid(), CancellationToken.None).WaitAsync(TestHost.Wait);

        (await host.ResultAsync<int>("evict-acct")).Should().Be(12);
        var history = await host.Client.GetHistoryAsync("evict-acct");
        history.Events.Count(e => e.Kind == HistoryEventKind.SignalReceived).Should().Be(2);
    }

    [Fact]
    public async Task Timer_OfAnInstanceWithNoRoomInTheCache_FindsItLive()
    {
        await using var host = await TestHost.StartAsync(o => Counter(o, 0));

        await host.Client.StartAsync(nameof(TimerWorkflow), "evict-timer", 60);
        await host.WaitForAsync("evict-timer", HistoryEventKind.TimerStarted);
        host.Time.Advance(TimeSpan.FromMinutes(60));

        // An instance that waits for a timer (or an activity, or a child) is never evicted: its result finds it live.
        (await host.ResultAsync<string>("evict-timer")).Should().Be("60");
        host.Runtime.Replays.Should().Be(0);
        host.Runtime.Evictions.Should().Be(0);
    }
    [Fact]
    public async Task ConcurrentSignalsAndQueries_WithRoomForOne_AreEachAppliedOnce()
    {
        const int Instances = 6;
        const int Signals = 12;
        await using var host = await TestHost.StartAsync(o => Counter(o, 1));
        var ids = Enumerable.Range(0, Instances).Select(i => $"evict-race-{i}").ToArray();
        foreach (var id in ids)
        {
            await host.Client.StartAsync(nameof(CounterWorkflow), id, Signals);
        }

        // Every signal and query races the others' evictions and reloads: none is lost, none applied twice, every query answers.
        var work = new List<Task>();
        for (var round = 0; round < Signals; round++)
        {
            foreach (var id in ids)
            {
                work.Add(host.Client.SignalAsync(id, "add", 1));
                work.Add(QueryInRangeAsync(host, id, Signals));
            }
        }

        await Task.WhenAll(work).WaitAsync(TestHost.Wait);
        foreach (var id in ids)
        {
            (await host.ResultAsync<int>(id)).Should().Be(Signals, id);
            var history = await host.Client.GetHistoryAsync(id);
            history.Events.Count(e => e.Kind == HistoryEventKind.SignalReceived).Should().Be(Signals, id);
            history.Events.Count(e => e.Kind == HistoryEventKind.Started).Should().Be(1, id);
        }

        host.Runtime.Evictions.Should().BeGreaterThan(0);
    }

    [Fact]
    public async Task ConcurrentUpdates_WithRoomForOne_EachReturnsItsOwnResultOnce()
    {
        const int Instances = 4;
        const int Updates = 8;
        await using var host = await TestHost.StartAsync(o => Counter(o, 1));
        var ids = Enumerable.Range(0, Instances).Select(i => $"evict-upd-{i}").ToArray();
        foreach (var id in ids)
        {
            await host.Client.StartAsync(nameof(CounterWorkflow), id, 1_000_000);
        }

        // No caller waits for ever on a waiter of an evicted slot: each update is answered with its own value.
        var updates = ids.SelectMany(id => Enumerable.Range(1, Updates).Select(async value =>
            (await host.Client.UpdateAsync<int, int>(id, "set", value)).Should().Be(value, id))).ToList();
        await Task.WhenAll(updates).WaitAsync(TestHost.Wait);

        foreach (var id in ids)
        {
            await host.Client.SignalAsync(id, "add", 1_000_000);
            (await host.ResultAsync<int>(id)).Should().BeInRange(1_000_001, 1_000_000 + Updates, id);
            var history = await host.Client.GetHistoryAsync(id);
            history.Events.Count(e => e.Kind == HistoryEventKind.UpdateRequested).Should().Be(Updates, id);
            history.Events.Count(e => e.Kind == HistoryEventKind.UpdateCompleted).Should().Be(Updates, id);
        }

        host.Runtime.Evictions.Should().BeGreaterThan(0);
    }

    [Fact]
    public async Task LateResultOfAnAbandonedActivity_ToAnEvictedInstance_IsDroppedAndTheActivityRunsOnce()
    {
        await using var host = await TestHost.StartAsync(o =>
        {
            o.Options.MaxCachedIdleInstances = 0;
            o.AddWorkflow<AbandonActivityWorkflow>().AddActivities<TestActivities>();
        });
        using var evicted = new SemaphoreSlim(0);
        host.Runtime.Evicted += _ => evicted.Release();
        await host.Client.StartAsync(nameof(AbandonActivityWorkflow), "evict-abandon", "a");
        await host.Log.WaitForAsync("Blocking:a");

        // The signal wins the race: the activity is abandoned (its worker told to cancel) and the instance, now waiting only
        // for a signal, is evicted; the cancelled attempt's outcome, whenever it comes, finds only the history.
        await host.Client.SignalAsync("evict-abandon", "go", 1);
        (await evicted.WaitAsync(TestHost.Wait)).Should().BeTrue();
        await host.Log.WaitForAsync("Blocking-canceled:a");
        await host.Client.SignalAsync("evict-abandon", "done", 2);

        (await host.ResultAsync<string>("evict-abandon")).Should().Be("signal 2");
        host.Log.Count("Blocking:a").Should().Be(1);
        var history = await host.Client.GetHistoryAsync("evict-abandon");
        history.Events.Count(e => e.Kind == HistoryEventKind.ActivityScheduled).Should().Be(1);
        history.Events.Count(e => e.Kind is HistoryEventKind.ActivityCompleted or HistoryEventKind.ActivityFailed).Should().Be(0);
        history.Events.Count(e => e.Kind == HistoryEventKind.SignalReceived).Should().Be(2);
    }

    [Fact]
    public async Task SignalWithATimeout_ThatCameFirst_KeepsTheInstanceCachedUntilItsTimerFires()
    {
        await using var host = await TestHost.StartAsync(o =>
        {
            o.Options.MaxCachedIdleInstances = 0;
            o.AddWorkflow<SignalOrTimeoutWorkflow>();
        });
        using var evicted = new SemaphoreSlim(0);
        host.Runtime.Evicted += _ => evicted.Release();
        await host.Client.StartAsync(nameof(SignalOrTimeoutWorkflow), "evict-timeout", 5);
        await host.WaitForAsync("evict-timeout", HistoryEventKind.TimerStarted);

        // The signal comes before the timeout, whose timer is still waited for (a timer is never evicted); once it fires,
        // the instance waits only for "done" and is evicted.
        await host.Client.SignalAsync("evict-timeout", "go", 1);
        await host.WaitForAsync("evict-timeout", HistoryEventKind.SignalReceived);
        host.Time.Advance(TimeSpan.FromMinutes(5));
        (await evicted.WaitAsync(TestHost.Wait)).Should().BeTrue();

        await host.Client.SignalAsync("evict-timeout", "done", 2);
        (await host.ResultAsync<string>("evict-timeout")).Should().Be("go 1, done 2");
        var history = await host.Client.GetHistoryAsync("evict-timeout");
        history.Events.Count(e => e.Kind == HistoryEventKind.TimerFired).Should().Be(1);
        history.Events.Count(e => e.Kind == HistoryEventKind.SignalReceived).Should().Be(2);
        host.Runtime.Replays.Should().Be(1);
    }

    private static async Task QueryInRangeAsync(TestHost host, string id, int max) =>
        (await host.Client.QueryAsync<int>(id, "sum")).Should().BeInRange(0, max, id);
}

/// <summary>Races an activity against a signal and cancels the activity when the signal wins, then waits for another signal.</summary>
public sealed class AbandonActivityWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string input)
    {
        using var cancel = new CancellationTokenSource();
        var activity = context.CallActivityAsync<string>("Blocking", input, new ActivityOptions { CancellationToken = cancel.Token });
        var go = context.WaitForSignalAsync<int>("go");
        var first = await Task.WhenAny(activity, go);
        if (first == go)
        {
            // Cancel, not CancelAsync: the callbacks must run here, on the workflow's scheduler.
#pragma warning disable CA1849
            cancel.Cancel();
#pragma warning restore CA1849
        }

        var done = await context.WaitForSignalAsync<int>("done");
        return first == go ? $"signal {done}" : "activity";
    }
}

/// <summary>Waits for a signal with a timeout, then for another signal without one.</summary>
public sealed class SignalOrTimeoutWorkflow : Workflow<int, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, int minutes)
    {
        var go = await context.WaitForSignalAsync<int>("go", TimeSpan.FromMinutes(minutes));
        var done = await context.WaitForSignalAsync<int>("done");
        return $"go {go}, done {done}";
    }
}
