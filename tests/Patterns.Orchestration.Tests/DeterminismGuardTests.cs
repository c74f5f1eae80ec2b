using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Tests;

public sealed class TaskRunWorkflow : Workflow<string, int>
{
    // The escaped work takes a while: a Task.Run that finished before the await looked at it would be awaited
    // synchronously on the workflow's own thread, with nothing to detect (the test failed once so in CI). 200 ms could
    // still pass between the two on a machine under heavy load; 5 s cannot in practice, and the escape is reported as
    // soon as the workflow waits, so the test does not take longer.
    public override async Task<int> RunAsync(WorkflowContext context, string input) => await Task.Run(async () =>
    {
        await Task.Delay(TimeSpan.FromSeconds(5));
        return 42;
    });
}

public sealed class TaskDelayWorkflow : Workflow<string, int>
{
    public override async Task<int> RunAsync(WorkflowContext context, string input)
    {
        // Long enough that the delay cannot complete before the await looks at it (1 ms once did, on a busy machine,
        // so the workflow went on inline and never left its scheduler); the escape is reported as soon as the workflow
        // waits on it, not when it ends.
        await Task.Delay(TimeSpan.FromSeconds(5));
        return 1;
    }
}

public sealed class ConfigureAwaitFalseWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string input)
    {
        var a = await context.CallActivityAsync<string>("Echo", "a").ConfigureAwait(false);
        var b = await context.CallActivityAsync<string>("Echo", "b");
        return a + b;
    }
}

public sealed class TaskCompletionSourceWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string input)
    {
        await new TaskCompletionSource().Task;
        return "never";
    }
}

public sealed class DeterminismGuardTests
{
    private static void Register(OrchestrationBuilder o) => o
        .AddWorkflow<TaskRunWorkflow>()
        .AddWorkflow<TaskDelayWorkflow>()
        .AddWorkflow<ConfigureAwaitFalseWorkflow>()
        .AddWorkflow<TaskCompletionSourceWorkflow>()
        .AddActivities<TestActivities>();

    [Theory]
    [InlineData(nameof(TaskRunWorkflow))]
    [InlineData(nameof(TaskDelayWorkflow))]
    [InlineData(nameof(ConfigureAwaitFalseWorkflow))]
    [InlineData(nameof(TaskCompletionSourceWorkflow))]
    public async Task EscapingTheScheduler_FaultsTheWorkflowTaskWithAClearError(string workflow)
    {
        await using var host = await TestHost.StartAsync(Register);

        await host.Client.StartAsync(workflow, "escape", "x");
        var act = () => host.ResultAsync<object>("escape");

        var failure = (await act.Should().ThrowAsync<WorkflowFailedException>()).Which;
        failure.Status.Should().Be(WorkflowStatus.Faulted);
        failure.Error.Should().StartWith("Workflow instance 'escape' broke a determinism rule:");
        failure.Error.Should().ContainAny("Task.Run", "ConfigureAwait(false)");
        var info = await host.Client.DescribeAsync("escape");
        info!.Status.Should().Be(WorkflowStatus.Faulted);
        info.ClosedAt.Should().BeNull("a faulted instance is not over: it resumes once its code is fixed");
        // Nothing the escaped code did was recorded: after ConfigureAwait(false) the second activity was never scheduled.
        var history = await host.Client.GetHistoryAsync("escape");
        history.Events.Should().NotContain(e => e.Kind == HistoryEventKind.ActivityScheduled && e.Payload != null && System.Text.Encoding.UTF8.GetString(e.Payload) == "\"b\"");
        history.Events.Should().NotContain(e => e.IsFinal);
        history.Events.Should().HaveCount(workflow == nameof(ConfigureAwaitFalseWorkflow) ? 2 : 0, "a run that faults in its first task keeps only its input, in the summary");
    }

    [Fact]
    public void Replayer_CodeThatEscapes_FailsReplayToo()
    {
        var history = new WorkflowHistory("h", nameof(TaskRunWorkflow), 1, [new HistoryEvent { Kind = HistoryEventKind.Started, Task = 1, Payload = "\"x\""u8.ToArray() }]);

        var replay = () => new WorkflowReplayer().AddWorkflow<TaskRunWorkflow>().Replay(history);

        replay.Should().Throw<WorkflowDeterminismException>().WithMessage("Workflow instance 'h' broke a determinism rule:*");
    }
}
