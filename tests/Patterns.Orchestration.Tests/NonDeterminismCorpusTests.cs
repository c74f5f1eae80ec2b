using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Tests;

public sealed record Variant(string Name);

/// <summary>One workflow whose code a variant name changes the way a developer might: every change must be caught on replay.</summary>
public sealed class CorpusWorkflow(Variant variant) : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string input)
    {
        var v = variant.Name;
        if (v == "add-activity-first")
        {
            await context.CallActivityAsync<string>("Echo", "extra");
        }

        if (v == "add-timer-first")
        {
            await context.DelayAsync(TimeSpan.FromMinutes(1));
        }

        if (v == "reorder-reserve-charge")
        {
            await context.CallActivityAsync<int>("Double", 10);
            await context.CallActivityAsync<string>("Echo", "sku-1");
        }
        else if (v != "remove-reserve")
        {
            await context.CallActivityAsync<string>(v == "rename-reserve" ? "EchoRenamed" : "Echo", v == "change-reserve-input" ? "sku-2" : "sku-1");
        }

        if (v == "timer-to-activity")
        {
            await context.CallActivityAsync("Record", "t");
        }
        else if (v != "remove-timer")
        {
            await context.DelayAsync(TimeSpan.FromMinutes(v == "change-timer" ? 10 : 5));
        }

        if (v != "reorder-reserve-charge")
        {
            await context.CallActivityAsync<int>("Double", v == "change-charge-input" ? 20 : 10);
        }

        if (v == "add-activity-unpatched")
        {
            await context.CallActivityAsync("Record", "new step");
        }

        if (v == "patched-new-step" && context.Patched("new-step"))
        {
            await context.CallActivityAsync("Record", "new step");
        }

        string[] fan = v switch
        {
            "swap-fanout" => ["fan-b", "fan-a"],
            "add-fanout" => ["fan-a", "fan-b", "fan-c"],
            "remove-fanout" => ["fan-a"],
            _ => ["fan-a", "fan-b"],
        };
        await Task.WhenAll(fan.Select(f => context.CallActivityAsync<string>("Echo", f)));

        var confirmation = await context.WaitForSignalAsync<string>("confirm");
        if (v == "add-activity-after-signal")
        {
            await context.CallActivityAsync("Record", "after");
        }

        if (v != "remove-local")
        {
            await context.CallLocalActivityAsync(v == "rename-local" ? "Find" : "Lookup", _ => Task.FromResult(42));
        }

        if (v != "remove-child")
        {
            await context.CallChildWorkflowAsync<int>(
                v == "change-child-type" ? nameof(SequenceWorkflow) : nameof(FanOutWorkflow),
                v == "change-child-input" ? 3 : 2,
                v == "change-child-id" ? "other-child" : null);
        }

        if (v == "add-activity-at-end")
        {
            await context.CallActivityAsync("Record", "end");
        }

        if (v == "wait-at-end")
        {
            await context.WaitForSignalAsync<string>("never");
        }

        if (v == "deprecated-patch")
        {
            context.DeprecatePatch("new-step");
        }

        return "done:" + confirmation;
    }
}

/// <summary>Runs the original code once and keeps its history (and one recorded with the patched step).</summary>
public sealed class CorpusFixture : IAsyncLifetime
{
    public WorkflowHistory Original { get; private set; } = null!;

    public WorkflowHistory Patched { get; private set; } = null!;

    public async ValueTask InitializeAsync()
    {
        Original = await RunAsync("original");
        Patched = await RunAsync("patched-new-step");
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private static async Task<WorkflowHistory> RunAsync(string variant)
    {
        await using var host = await TestHost.StartAsync(o =>
        {
            o.Services.AddSingleton(new Variant(variant));
            o.AddWorkflow<CorpusWorkflow>().AddWorkflow<FanOutWorkflow>().AddActivities<TestActivities>();
        });
        await host.Client.StartAsync(nameof(CorpusWorkflow), "corpus", "in");
        await host.WaitForAsync("corpus", HistoryEventKind.TimerStarted);
        host.Time.Advance(TimeSpan.FromMinutes(5));
        await host.Client.SignalAsync("corpus", "confirm", "yes");
        (await host.ResultAsync<string>("corpus")).Should().Be("done:yes");
        return await host.Client.GetHistoryAsync("corpus");
    }
}

public sealed class NonDeterminismCorpusTests(CorpusFixture fixture) : IClassFixture<CorpusFixture>
{
    [Theory]
    [InlineData("add-activity-first", HistoryEventKind.ActivityScheduled, "Echo", 1, 0)]
    [InlineData("add-timer-first", HistoryEventKind.ActivityScheduled, "Echo", 1, 0)]
    [InlineData("reorder-reserve-charge", HistoryEventKind.ActivityScheduled, "Echo", 1, 0)]
    [InlineData("rename-reserve", HistoryEventKind.ActivityScheduled, "Echo", 1, 0)]
    [InlineData("change-reserve-input", HistoryEventKind.ActivityScheduled, "Echo", 1, 0)]
    [InlineData("remove-reserve", HistoryEventKind.ActivityScheduled, "Echo", 1, 0)]
    [InlineData("timer-to-activity", HistoryEventKind.TimerStarted, null, 1, 0)]
    [InlineData("remove-timer", HistoryEventKind.TimerStarted, null, 1, 0)]
    [InlineData("change-timer", HistoryEventKind.TimerStarted, null, 1, 0)]
    [InlineData("change-charge-input", HistoryEventKind.ActivityScheduled, "Double", 1, 0)]
    [InlineData("add-activity-unpatched", HistoryEventKind.ActivityScheduled, "Echo", 2, 0)]
    [InlineData("swap-fanout", HistoryEventKind.ActivityScheduled, "Echo", 2, 0)]
    [InlineData("add-fanout", HistoryEventKind.ActivityScheduled, "Echo", 3, 1)]
    [InlineData("remove-fanout", HistoryEventKind.ActivityScheduled, "Echo", 3, 0)]
    [InlineData("add-activity-after-signal", HistoryEventKind.LocalActivityCompleted, "Lookup", 1, 0)]
    [InlineData("rename-local", HistoryEventKind.LocalActivityCompleted, "Lookup", 1, 0)]
    [InlineData("remove-local", HistoryEventKind.LocalActivityCompleted, "Lookup", 1, 0)]
    [InlineData("change-child-type", HistoryEventKind.ChildStarted, null, 1, 0)]
    [InlineData("change-child-input", HistoryEventKind.ChildStarted, null, 1, 0)]
    [InlineData("change-child-id", HistoryEventKind.ChildStarted, null, 1, 0)]
    [InlineData("remove-child", HistoryEventKind.ChildStarted, null, 1, 0)]
    [InlineData("add-activity-at-end", HistoryEventKind.Completed, null, 1, 0)]
    [InlineData("wait-at-end", HistoryEventKind.Completed, null, 1, 0)]
    public void Replay_ChangedCode_IsDetectedAtTheFirstMismatchingEvent(string variant, HistoryEventKind kind, string? name, int occurrence, int offset)
    {
        var history = fixture.Original;
        var expected = IndexOf(history, kind, name, occurrence) + offset;

        var replay = () => Replayer(variant).Replay(history);

        var error = replay.Should().Throw<NonDeterminismException>().Which;
        error.EventIndex.Should().Be(expected);
        error.InstanceId.Should().Be("corpus");
        error.Message.Should().StartWith($"Workflow instance 'corpus' does not match its history at event {expected}:");
        if (offset == 0)
        {
            error.Recorded!.Kind.Should().Be(kind);
        }
    }

    [Fact]
    public void Corpus_HasAtLeastTwentyChanges() =>
        typeof(NonDeterminismCorpusTests).GetMethod(nameof(Replay_ChangedCode_IsDetectedAtTheFirstMismatchingEvent))!
            .GetCustomAttributes(typeof(InlineDataAttribute), false).Length.Should().BeGreaterThanOrEqualTo(20);

    [Fact]
    public void Replay_UnchangedCode_Passes()
    {
        var replay = () => Replayer("original").Replay(fixture.Original);

        replay.Should().NotThrow();
    }

    [Fact]
    public void Patched_NewStep_ReplaysOldHistoriesOnTheOldPathAndNewOnesOnTheNew()
    {
        var old = () => Replayer("patched-new-step").Replay(fixture.Original);
        var recorded = () => Replayer("patched-new-step").Replay(fixture.Patched);

        old.Should().NotThrow();
        recorded.Should().NotThrow();
        fixture.Patched.Events.Should().Contain(e => e.Kind == HistoryEventKind.PatchMarker && e.Name == "new-step");
    }

    [Fact]
    public void ReplayAll_ReportsEveryFailingHistoryByInstance()
    {
        var failures = Replayer("rename-reserve").ReplayAll([fixture.Original, fixture.Original with { InstanceId = "second" }]);

        failures.Keys.Should().BeEquivalentTo("corpus", "second");
        failures.Values.Should().AllBeOfType<NonDeterminismException>();
    }

    [Fact]
    public void History_RoundTripsThroughJsonForCi()
    {
        var json = fixture.Original.ToJson();
        var read = WorkflowHistory.FromJson(json);

        read.Events.Should().HaveCount(fixture.Original.Events.Count);
        var replay = () => Replayer("original").Replay(read);
        replay.Should().NotThrow();
        var bad = () => WorkflowHistory.FromJson("{\"x\":1}");
        bad.Should().Throw<FormatException>().WithMessage("The text is not a workflow history*");
    }

    private static WorkflowReplayer Replayer(string variant) =>
        new WorkflowReplayer(new ServiceCollection().AddSingleton(new Variant(variant)).BuildServiceProvider()).AddWorkflow<CorpusWorkflow>();

    private static int IndexOf(WorkflowHistory history, HistoryEventKind kind, string? name, int occurrence)
    {
        var seen = 0;
        for (var i = 0; i < history.Events.Count; i++)
        {
            if (history.Events[i].Kind == kind && (name is null || history.Events[i].Name == name) && ++seen == occurrence)
            {
                return i;
            }
        }

        throw new InvalidOperationException($"The history has no {kind} '{name}' #{occurrence}.");
    }
}
