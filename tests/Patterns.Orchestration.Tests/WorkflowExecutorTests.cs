using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration.Engine;
using Patterns.Orchestration.History;
using Patterns.Serialization;

namespace Patterns.Orchestration.Tests;

/// <summary>
/// The executor on its own, driven task by task as the runtime drives it: what it keeps between tasks and what it lets go
/// of once its run has ended.
/// </summary>
public sealed class WorkflowExecutorTests
{
    private static readonly DateTimeOffset Now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    [Fact]
    public async Task HasPendingActivities_TrueOnlyWhileAnActivityWaits()
    {
        var (executor, serializer) = CreateSut();

        await RunAndCommitAsync(executor, new HistoryEvent { Kind = HistoryEventKind.Started, Payload = serializer.ToPayload(5, typeof(int)) });
        executor.IsPending(1).Should().BeTrue("the timer waits");
        executor.HasPendingActivities.Should().BeFalse("a timer is not an activity");

        await RunAndCommitAsync(executor, new HistoryEvent { Kind = HistoryEventKind.TimerFired, Seq = 1 });
        executor.HasPendingActivities.Should().BeTrue();
        executor.PendingActivities.Select(static a => a.Seq).Should().Equal(2);

        await RunAndCommitAsync(executor, new HistoryEvent { Kind = HistoryEventKind.ActivityCompleted, Seq = 2 });
        executor.HasPendingActivities.Should().BeFalse();
        executor.Final!.Kind.Should().Be(HistoryEventKind.Completed);
    }

    [Fact]
    public async Task Committed_KeepsNoCommandsBetweenTasks()
    {
        var (executor, serializer) = CreateSut();

        var events = await RunAndCommitAsync(executor, new HistoryEvent { Kind = HistoryEventKind.Started, Payload = serializer.ToPayload(5, typeof(int)) });

        events.Select(static e => e.Kind).Should().Equal(HistoryEventKind.Started, HistoryEventKind.TimerStarted);
        executor.Version.Should().Be(2);
        executor.HistoryLength.Should().Be(2, "the committed commands are counted by the version alone, not kept");
    }

    [Fact]
    public async Task Release_AfterTheRunEnded_DropsTheLastTasksObjects()
    {
        var (executor, serializer) = CreateSut();
        await RunAndCommitAsync(executor, new HistoryEvent { Kind = HistoryEventKind.Started, Payload = serializer.ToPayload(5, typeof(int)) });
        await RunAndCommitAsync(executor, new HistoryEvent { Kind = HistoryEventKind.TimerFired, Seq = 1 });
        var events = await executor.RunTaskAsync([new HistoryEvent { Kind = HistoryEventKind.ActivityCompleted, Seq = 2 }], Now, CancellationToken.None);
        executor.Record = new InstanceRecord { Id = "x", Type = nameof(TimerWorkflow), Status = WorkflowStatus.Completed, Result = events[^1].Payload };
        executor.Committed(events.Count);
        executor.Final.Should().NotBeNull();

        executor.Release();

        executor.Record.Should().BeNull();
        executor.Final.Should().BeNull();
        executor.CustomStatus.Should().BeNull();
        executor.HistoryLength.Should().Be(events.Count + 4);
        events[^1].Kind.Should().Be(HistoryEventKind.Completed, "what the runtime committed is its own list, untouched by the release");
    }

    private static (WorkflowExecutor Executor, IMessageSerializer Serializer) CreateSut()
    {
        var serializer = new JsonMessageSerializer();
        var services = new ServiceCollection().AddSingleton(new CallLog()).BuildServiceProvider();
        var executor = new WorkflowExecutor(WorkflowDefinition.For<TimerWorkflow>(null), services, serializer, "x", 1, int.MaxValue, static () => { }) { Stream = "wf-x" };
        return (executor, serializer);
    }

    private static async Task<List<HistoryEvent>> RunAndCommitAsync(WorkflowExecutor executor, HistoryEvent incoming)
    {
        var events = await executor.RunTaskAsync([incoming], Now, CancellationToken.None);
        executor.Committed(events.Count);
        return events;
    }
}
