using Patterns.Orchestration.History;
using Patterns.Storage;

namespace Patterns.Orchestration.Tests;

/// <summary>
/// What a run leaves behind when a timer (or any last event) ends it. Each object that a waiting, long-lived instance points
/// to from the last task survives the young collections (copied twice, into the old generation): with many timers firing
/// at once those copies were the collections' pauses, and so the timers' lateness. Only what the store keeps should remain.
/// </summary>
public sealed class EndedRunRetentionTests
{
    [Fact]
    public async Task TimerEndsTheRun_ItsExecutorIsReleased()
    {
        await using var host = await TestHost.StartAsync(WorkflowEngineTests.All);
        await host.Client.StartAsync(nameof(TimerWorkflow), "released", 5);
        await host.WaitForAsync("released", HistoryEventKind.TimerStarted);
        host.Runtime.ReleasedExecutors.Should().Be(0, "the run waits for its timer");

        // The slot leaves the instance map after the workflow task that ended the run has returned (the release included).
        var removed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Runtime.SlotRemoved += id =>
        {
            if (id == "released")
            {
                removed.TrySetResult();
            }
        };
        host.Time.Advance(TimeSpan.FromMinutes(5));

        (await host.ResultAsync<string>("released")).Should().Be("5");
        await removed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        host.Runtime.ReleasedExecutors.Should().Be(1);
    }

    [Fact]
    public async Task Commit_EventsOfOneRun_ShareOneStreamNameAndConstantEventTypes()
    {
        await using var host = await TestHost.StartAsync(WorkflowEngineTests.All);
        var ids = new[] { "names-1", "names-2" };
        foreach (var id in ids)
        {
            await host.Client.StartAsync(nameof(TimerWorkflow), id, 5);
            await host.WaitForAsync(id, HistoryEventKind.TimerStarted);
        }

        host.Time.Advance(TimeSpan.FromMinutes(5));
        foreach (var id in ids)
        {
            await host.ResultAsync<string>(id);
        }

        var streams = new List<List<StoredEvent>>();
        foreach (var id in ids)
        {
            var stored = new List<StoredEvent>();
            await foreach (var e in host.Runtime.Storage.ReadStreamAsync(host.Runtime.StreamOf(id, 1)))
            {
                stored.Add(e);
            }

            stored.Select(static e => e.EventType).Should().Equal(
                "wf.Started", "wf.TimerStarted", "wf.TimerFired", "wf.ActivityScheduled", "wf.ActivityCompleted", "wf.Completed");

            // Three commits (start, timer, activity result): one stream name for all of them, not one built per commit,
            // which an in-memory store would keep with every event.
            stored.Should().AllSatisfy(e => e.StreamId.Should().BeSameAs(stored[0].StreamId));
            streams.Add(stored);
        }

        for (var i = 0; i < streams[0].Count; i++)
        {
            streams[1][i].EventType.Should().BeSameAs(streams[0][i].EventType, "every kind's type name is one constant, not built per event");
        }
    }
}
