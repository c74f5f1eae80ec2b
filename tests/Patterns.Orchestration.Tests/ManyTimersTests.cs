using Microsoft.Extensions.Time.Testing;
using Patterns.Orchestration.History;
using Patterns.Orchestration.Runtime;

namespace Patterns.Orchestration.Tests;

/// <summary>
/// Many durable timers due at the same moment: each fires exactly once (one <c>TimerFired</c> in its history, its
/// due-time index entry gone), whether they fire in one process or partly before and partly after a restart.
/// </summary>
public sealed class ManyTimersTests : IAsyncLifetime
{
    private const int Instances = 120;
    private readonly StoreLocations _locations = new();

    public ValueTask InitializeAsync() => ValueTask.CompletedTask;

    public ValueTask DisposeAsync() => _locations.DisposeAsync();

    [Theory]
    [InlineData(StoreKind.InMemory)]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task ManyTimersDueAtOnce_FireExactlyOnceEach(StoreKind store)
    {
        var location = await _locations.NewAsync(store);
        await using var host = await TestHost.StartAsync(WorkflowEngineTests.All, store, location);
        var ids = Enumerable.Range(0, Instances).Select(i => $"many-{i}").ToList();
        foreach (var id in ids)
        {
            await host.Client.StartAsync(nameof(TimerWorkflow), id, 30);
        }

        await Task.WhenAll(ids.Select(id => host.WaitForAsync(id, HistoryEventKind.TimerStarted)));
        host.Runtime.Timers.Count.Should().Be(Instances);

        host.Time.Advance(TimeSpan.FromMinutes(30));

        (await Task.WhenAll(ids.Select(host.ResultAsync<string>))).Should().AllBe("30");
        await ShouldHaveFiredOnceEachAsync(host, ids);
        host.Log.Count("timer-done").Should().Be(Instances);
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task ManyTimersDueAtOnce_HalfFiredBeforeARestart_TheRestFireOnceAfterIt_AndNoneAgain(StoreKind store)
    {
        var location = await _locations.NewAsync(store);
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var log = new CallLog();
        var early = Enumerable.Range(0, Instances / 2).Select(i => $"early-{i}").ToList();
        var late = Enumerable.Range(0, Instances / 2).Select(i => $"late-{i}").ToList();
        await using (var first = await TestHost.StartAsync(WorkflowEngineTests.All, store, location, time, log))
        {
            foreach (var id in early)
            {
                await first.Client.StartAsync(nameof(TimerWorkflow), id, 10);
            }

            foreach (var id in late)
            {
                await first.Client.StartAsync(nameof(TimerWorkflow), id, 20);
            }

            await Task.WhenAll(early.Concat(late).Select(id => first.WaitForAsync(id, HistoryEventKind.TimerStarted)));
            time.Advance(TimeSpan.FromMinutes(10));
            (await Task.WhenAll(early.Select(first.ResultAsync<string>))).Should().AllBe("10");
        }

        await using var second = await TestHost.StartAsync(WorkflowEngineTests.All, store, location, time, log);
        second.Runtime.Timers.Count.Should().Be(late.Count, "the fired timers left the due-time index in the commits that recorded them");

        time.Advance(TimeSpan.FromMinutes(10));

        (await Task.WhenAll(late.Select(second.ResultAsync<string>))).Should().AllBe("20");
        await ShouldHaveFiredOnceEachAsync(second, [.. early, .. late]);
        log.Count("timer-done").Should().Be(Instances, "each instance went past its timer once");
    }

    private static async Task ShouldHaveFiredOnceEachAsync(TestHost host, List<string> ids)
    {
        foreach (var id in ids)
        {
            var history = await host.Client.GetHistoryAsync(id);
            history.Events.Count(e => e.Kind == HistoryEventKind.TimerFired).Should().Be(1, $"instance {id} waited for one timer");
        }

        var index = new List<string>();
        await foreach (var (key, _) in host.Runtime.Documents.ListAsync(TimerRecord.Collection))
        {
            index.Add(key);
        }

        index.Should().BeEmpty("every fired timer's due-time entry is removed");
        host.Runtime.Timers.Count.Should().Be(0);
    }
}
