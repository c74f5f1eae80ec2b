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

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task Restart_DuringARetry_GoesOnFromTheAttemptReached(StoreKind store)
    {
        var location = await LocationAsync(store);
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var log = new CallLog();
        await using (var first = await TestHost.StartAsync(WorkflowEngineTests.All, store, location, time, log))
        {
            var retry = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            first.Worker.RetryScheduled += (_, _) => retry.TrySetResult();
            await first.Client.StartAsync(nameof(StickyWorkflow), "sticky", "x");
            await retry.Task.WaitAsync(TestHost.Wait);
            time.Advance(TimeSpan.FromSeconds(10));
            await log.WaitForAsync("Sticky:x:2"); // the host stops during attempt 2
        }

        await using var second = await TestHost.StartAsync(WorkflowEngineTests.All, store, location, time, log);

        (await second.ResultAsync<string>("sticky")).Should().Be("sticky-x-2");
        log.Calls.Where(c => c.StartsWith("Sticky", StringComparison.Ordinal)).Should().Equal("Sticky:x:1", "Sticky:x:2", "Sticky:x:2");
        (await second.Runtime.Documents.GetAsync(AttemptRecord.Collection, TimerRecord.Key("sticky", 1, 1))).Should().BeNull();
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task TwoHosts_OnOneStore_EachInstanceRunsOnlyWhereItsPartitionIsOwned_AndTheOtherTakesOver(StoreKind store)
    {
        var location = await LocationAsync(store);
        var log = new CallLog();
        Action<OrchestrationBuilder> Node(string name) => o =>
        {
            WorkflowEngineTests.All(o);
            o.Options.NodeId = name;
            o.Options.Partitions = 4;
            o.Options.LeaseDuration = TimeSpan.FromSeconds(10); // renewed every 3.3 s: a loaded machine never lets it lapse; a graceful stop hands over at once
            o.Options.HandoffInterval = TimeSpan.FromMilliseconds(50);
        };
        await using var a = await TestHost.StartAsync(Node("node-a"), store, location, log: log, clock: TimeProvider.System);
        await using var b = await TestHost.StartAsync(Node("node-b"), store, location, log: log, clock: TimeProvider.System);
        a.Runtime.OwnedPartitions.Should().Equal(0, 1, 2, 3);
        b.Runtime.OwnedPartitions.Should().BeEmpty();

        var ids = Enumerable.Range(0, 8).Select(i => "owned-" + i).ToList();
        for (var i = 0; i < ids.Count; i++)
        {
            await (i % 2 == 0 ? a : b).Client.StartAsync(nameof(SequenceWorkflow), ids[i], ids[i]);
        }

        foreach (var id in ids)
        {
            (await b.ResultAsync<string>(id)).Should().Be($"echo-{id}-1,echo-{id}-2,echo-{id}-3");
            Enumerable.Range(1, 3).Select(n => log.Count($"Echo:{id}-{n}")).Should().Equal(1, 1, 1);
        }

        b.CommittedEvents.Should().Be(0, "every instance belongs to a partition the first host owns");
        var missing = () => b.Client.QueryAsync<int>("owned-0", "missing");
        (await missing.Should().ThrowAsync<KeyNotFoundException>()).Which.Message.Should().Contain("no query handler 'missing'");

        await b.Client.StartAsync(nameof(CounterWorkflow), "failover", 10);
        await b.Client.SignalAsync("failover", "add", 3);
        await a.WaitForAsync("failover", HistoryEventKind.SignalReceived);
        (await b.Client.QueryAsync<int>("failover", "sum")).Should().Be(3);
        await a.DisposeAsync(); // releases its leases: the second host takes the partitions over and resumes the instance

        await b.Client.SignalAsync("failover", "add", 7);

        (await b.ResultAsync<int>("failover")).Should().Be(10);
        b.Runtime.OwnedPartitions.Should().Contain(b.Runtime.PartitionOf("failover"));
        b.EventsOf("failover").Count(e => e.Kind == HistoryEventKind.SignalReceived).Should().Be(1);
        (await b.Client.GetHistoryAsync("failover")).Events.Count(e => e.Kind == HistoryEventKind.SignalReceived).Should().Be(2);
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
