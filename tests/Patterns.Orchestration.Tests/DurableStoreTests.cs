using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Tests;

/// <summary>The engine on SQLite and PostgreSQL: histories survive a host restart, which resumes from them.</summary>
public sealed class DurableStoreTests : IAsyncLifetime
{
    private readonly List<string> _schemas = [];
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "wf-tests-" + Guid.NewGuid().ToString("N"));

    public ValueTask InitializeAsync()
    {
        Directory.CreateDirectory(_directory);
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var schema in _schemas)
        {
            await Postgres.DropAsync(schema);
        }

        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task Sequence_OnADurableStore_CompletesAndKeepsItsHistory(StoreKind store)
    {
        var location = await LocationAsync(store);
        await using var host = await TestHost.StartAsync(WorkflowEngineTests.All, store, location);

        await host.Client.StartAsync(nameof(SequenceWorkflow), "durable-seq", "d");

        (await host.ResultAsync<string>("durable-seq")).Should().Be("echo-d-1,echo-d-2,echo-d-3");
        (await host.Client.GetHistoryAsync("durable-seq")).Events.Should().HaveCount(8);
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task Restart_ResumesRunningInstancesFromTheirHistory(StoreKind store)
    {
        var location = await LocationAsync(store);
        await using (var first = await TestHost.StartAsync(WorkflowEngineTests.All, store, location))
        {
            await first.Client.StartAsync(nameof(CounterWorkflow), "restart", 10);
            await first.Client.SignalAsync("restart", "add", 3);
        }

        await using var second = await TestHost.StartAsync(WorkflowEngineTests.All, store, location);
        (await second.Client.QueryAsync<int>("restart", "sum")).Should().Be(3);
        await second.Client.SignalAsync("restart", "add", 7);

        (await second.ResultAsync<int>("restart")).Should().Be(10);
        second.Runtime.Replays.Should().Be(1);
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task Restart_ReloadsDurableTimersFromTheDueTimeIndex(StoreKind store)
    {
        var location = await LocationAsync(store);
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        await using (var first = await TestHost.StartAsync(WorkflowEngineTests.All, store, location, time))
        {
            await first.Client.StartAsync(nameof(TimerWorkflow), "restart-timer", 30);
            await first.WaitForAsync("restart-timer", HistoryEventKind.TimerStarted);
        }

        await using var second = await TestHost.StartAsync(WorkflowEngineTests.All, store, location, time);
        second.Runtime.Timers.Count.Should().Be(1);
        time.Advance(TimeSpan.FromMinutes(30));

        (await second.ResultAsync<string>("restart-timer")).Should().Be("30");
        second.Log.Count("timer-done").Should().Be(1);
    }

    [Fact]
    public async Task CodeChange_OnARunningInstance_FaultsItWithTheEventIndexAndAFixResumesIt()
    {
        var location = await LocationAsync(StoreKind.Sqlite);
        var variant = new Variant("original");
        void Register(OrchestrationBuilder o)
        {
            o.Services.AddSingleton(_ => variant);
            o.AddWorkflow<CorpusWorkflow>().AddWorkflow<FanOutWorkflow>().AddActivities<TestActivities>();
        }

        await using (var first = await TestHost.StartAsync(Register, StoreKind.Sqlite, location))
        {
            await first.Client.StartAsync(nameof(CorpusWorkflow), "changed", "in");
            await first.WaitForAsync("changed", HistoryEventKind.TimerStarted);
        }

        variant = new Variant("rename-reserve");
        await using (var second = await TestHost.StartAsync(Register, StoreKind.Sqlite, location))
        {
            var act = () => second.ResultAsync<string>("changed");
            var failure = (await act.Should().ThrowAsync<WorkflowFailedException>()).Which;
            failure.Status.Should().Be(WorkflowStatus.Faulted);
            failure.Error.Should().StartWith("Workflow instance 'changed' does not match its history at event 1: the history records ActivityScheduled 'Echo' #1, but the code made ActivityScheduled 'EchoRenamed' #1.");
        }

        variant = new Variant("original");
        await using var third = await TestHost.StartAsync(Register, StoreKind.Sqlite, location);
        third.Time.Advance(TimeSpan.FromMinutes(5));
        await third.Client.SignalAsync("changed", "confirm", "fixed");

        (await third.ResultAsync<string>("changed")).Should().Be("done:fixed");
    }

    private async Task<string> LocationAsync(StoreKind store)
    {
        if (store == StoreKind.Postgres)
        {
            var schema = await Postgres.NewSchemaAsync();
            _schemas.Add(schema);
            return schema;
        }

        return Path.Combine(_directory, Guid.NewGuid().ToString("N") + ".db");
    }
}
