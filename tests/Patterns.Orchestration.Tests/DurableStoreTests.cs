using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Tests;

/// <summary>The engine on SQLite and PostgreSQL: histories survive a host restart, which resumes from them.</summary>
public sealed class DurableStoreTests : IAsyncLifetime
{
    private readonly StoreLocations _locations = new();

    public ValueTask InitializeAsync() => ValueTask.CompletedTask;

    public ValueTask DisposeAsync() => _locations.DisposeAsync();

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
    public async Task ConcurrentSignals_WithRoomForOneCachedInstance_OnADurableStore_AreEachAppliedOnce(StoreKind store)
    {
        const int Instances = 3;
        const int Signals = 5;
        var location = await LocationAsync(store);
        await using var host = await TestHost.StartAsync(
            o =>
            {
                WorkflowEngineTests.All(o);
                o.Options.MaxCachedIdleInstances = 1;
            },
            store,
            location);
        var ids = Enumerable.Range(0, Instances).Select(i => $"durable-evict-{i}").ToArray();
        foreach (var id in ids)
        {
            await host.Client.StartAsync(nameof(CounterWorkflow), id, Signals);
        }

        // The instances evict one another as they go idle, and reload from the store on their next signal.
        await Task.WhenAll(ids.SelectMany(id => Enumerable.Range(0, Signals).Select(_ => host.Client.SignalAsync(id, "add", 1)))).WaitAsync(TestHost.Wait);

        foreach (var id in ids)
        {
            (await host.ResultAsync<int>(id)).Should().Be(Signals, id);
            (await host.Client.GetHistoryAsync(id)).Events.Count(e => e.Kind == HistoryEventKind.SignalReceived).Should().Be(Signals, id);
        }

        host.Runtime.Evictions.Should().BeGreaterThan(0);
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task WithoutExclusiveOwnership_GetResult_WhereTheInstanceIsCachedRunning_SeesItsEndInAnotherProcess(StoreKind store)
    {
        var location = await LocationAsync(store);
        void Shared(OrchestrationBuilder o)
        {
            WorkflowEngineTests.All(o);
            o.Options.ExclusiveOwnership = false;
        }

        await using var here = await TestHost.StartAsync(Shared, store, location);
        await using var there = await TestHost.StartAsync(Shared, store, location);
        await here.Client.StartAsync(nameof(CounterWorkflow), "ended-there", 10);
        await here.Client.SignalAsync("ended-there", "add", 3);
        (await here.Client.QueryAsync<int>("ended-there", "sum")).Should().Be(3, "this process holds the instance, still running");

        await there.Client.SignalAsync("ended-there", "add", 7);
        (await there.ResultAsync<int>("ended-there")).Should().Be(10);

        // Nothing tells this process of an end committed elsewhere in this mode: the client reads the record.
        (await here.ResultAsync<int>("ended-there")).Should().Be(10);
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
        // Leases renewed every 3.3 s: a loaded machine never lets them lapse; a graceful stop hands over at once.
        Action<OrchestrationBuilder> Node(string name) => FourPartitionNode(name, TimeSpan.FromSeconds(10));
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

    /// <summary>
    /// PostgreSQL: the owner stops gracefully and its release is pushed (LISTEN/NOTIFY) to the standby, which takes the
    /// partitions over and resumes the instance at once, not at its next try a third of the lease duration (20 s) later.
    /// </summary>
    [Fact]
    public async Task Postgres_OwnerStops_TheStandbyIsNotifiedAndTakesOverAtOnce()
    {
        var location = await LocationAsync(StoreKind.Postgres);
        var log = new CallLog();
        await using var a = await TestHost.StartAsync(SlowRetryNode("node-a"), StoreKind.Postgres, location, log: log, clock: TimeProvider.System);
        await using var b = await TestHost.StartAsync(SlowRetryNode("node-b"), StoreKind.Postgres, location, log: log, clock: TimeProvider.System);
        b.Runtime.OwnedPartitions.Should().BeEmpty();
        await a.Client.StartAsync(nameof(CounterWorkflow), "handover", 10);
        await a.Client.SignalAsync("handover", "add", 3);
        await a.WaitForAsync("handover", HistoryEventKind.SignalReceived);

        var elapsed = System.Diagnostics.Stopwatch.StartNew();
        await a.DisposeAsync(); // releases its leases
        await b.Client.SignalAsync("handover", "add", 7);

        (await b.Client.GetResultAsync<int>("handover").WaitAsync(PromptTakeOver)).Should().Be(10);

        // The result needs only the instance's own partition: each of the others is taken over on its own release
        // notification, which may be handled just after.
        await UntilAsync(() => b.Runtime.OwnedPartitions.Order().SequenceEqual([0, 1, 2, 3]), b.Runtime);
        elapsed.Elapsed.Should().BeLessThan(PromptTakeOver);
        b.EventsOf("handover").Count(e => e.Kind == HistoryEventKind.SignalReceived).Should().Be(1);
    }

    /// <summary>
    /// PostgreSQL: the owner died holding its leases (they run out in 3 s and are never released). The standby takes the
    /// partitions over as they run out and resumes the instance, not at its next try 20 s after it started.
    /// </summary>
    [Fact]
    public async Task Postgres_OwnerDies_TheStandbyTakesOverAsItsLeaseRunsOut()
    {
        var location = await LocationAsync(StoreKind.Postgres);
        var log = new CallLog();
        await using (var a = await TestHost.StartAsync(SlowRetryNode("node-a"), StoreKind.Postgres, location, log: log, clock: TimeProvider.System))
        {
            await a.Client.StartAsync(nameof(CounterWorkflow), "orphan", 10);
            await a.Client.SignalAsync("orphan", "add", 3);
            await a.WaitForAsync("orphan", HistoryEventKind.SignalReceived);
        }

        // The owner "died": it holds every partition again, renews nothing and releases nothing.
        var elapsed = System.Diagnostics.Stopwatch.StartNew();
        await using (var store = new Patterns.Postgres.PostgresEventStore(new Patterns.Postgres.PostgresEventStoreOptions { ConnectionString = Postgres.ConnectionString, Schema = location }))
        {
            for (var p = 0; p < 4; p++)
            {
                (await store.TryAcquireLeaseAsync($"orchestration/wf-{p}", "node-a", TimeSpan.FromSeconds(3))).Should().NotBeNull();
            }
        }

        await using var b = await TestHost.StartAsync(SlowRetryNode("node-b"), StoreKind.Postgres, location, log: log, clock: TimeProvider.System);
        b.Runtime.OwnedPartitions.Should().BeEmpty("the dead owner's leases have not run out yet");
        await b.Client.SignalAsync("orphan", "add", 7);

        (await b.Client.GetResultAsync<int>("orphan").WaitAsync(PromptTakeOver)).Should().Be(10);

        // Each partition is taken over as its own lease runs out; the result needs only the instance's.
        await UntilAsync(() => b.Runtime.OwnedPartitions.Order().SequenceEqual([0, 1, 2, 3]), b.Runtime);
        elapsed.Elapsed.Should().BeLessThan(PromptTakeOver);
    }

    /// <summary>
    /// Balanced partitions: the first host takes all four, gives the two highest up when a second host joins, each runs
    /// only the instances of its own partitions, and the survivor takes all four back when the other stops.
    /// </summary>
    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task BalancedHosts_SplitThePartitions_AndTheSurvivorTakesThemAllBack(StoreKind store)
    {
        var location = await LocationAsync(store);
        var log = new CallLog();
        // Leases and membership renewed every 3.3 s, as in the test above: with 6 s (renewed every 2 s) a stall of 4 s on a
        // busy machine let a lease or a membership lapse, and partitions moved while the test checked where instances ran.
        Action<OrchestrationBuilder> Node(string name) => FourPartitionNode(name, TimeSpan.FromSeconds(10), balance: true);
        await using var a = await TestHost.StartAsync(Node("node-a"), store, location, log: log, clock: TimeProvider.System);
        a.Runtime.OwnedPartitions.Should().Equal(0, 1, 2, 3);
        await using var b = await TestHost.StartAsync(Node("node-b"), store, location, log: log, clock: TimeProvider.System);

        await UntilAsync(() => a.Runtime.OwnedPartitions.Count == 2 && b.Runtime.OwnedPartitions.Count == 2, a.Runtime, b.Runtime);
        a.Runtime.OwnedPartitions.Should().Equal(0, 1);
        b.Runtime.OwnedPartitions.Should().Equal(2, 3);
        a.Runtime.LiveNodes.Should().Be(2);

        var ids = new List<string>();
        for (var n = 0; ids.Count < 8; n++)
        {
            var id = "spread-" + n;
            if (ids.Count(i => a.Runtime.PartitionOf(i) == a.Runtime.PartitionOf(id)) < 2)
            {
                ids.Add(id);
            }
        }

        foreach (var id in ids)
        {
            await a.Client.StartAsync(nameof(SequenceWorkflow), id, id);
        }

        foreach (var id in ids)
        {
            (await a.ResultAsync<string>(id)).Should().Be($"echo-{id}-1,echo-{id}-2,echo-{id}-3");
            var runsOnB = a.Runtime.PartitionOf(id) >= 2;
            await (runsOnB ? b : a).WaitForAsync(id, HistoryEventKind.Completed); // it ran where its partition is owned
            (runsOnB ? a : b).EventsOf(id).Should().BeEmpty($"{id} runs only where its partition is owned");
        }

        await b.DisposeAsync(); // leaves, then releases its partitions
        await UntilAsync(() => a.Runtime.OwnedPartitions.Count == 4, a.Runtime);
        a.Runtime.LiveNodes.Should().Be(1);
        await a.Client.StartAsync(nameof(SequenceWorkflow), ids[^1] + "-again", "z");
        (await a.ResultAsync<string>(ids[^1] + "-again")).Should().Be("echo-z-1,echo-z-2,echo-z-3");
    }

    /// <summary>Waits (on the runtimes' ownership changes, never sleeping) until <paramref name="condition"/> holds.</summary>
    private static async Task UntilAsync(Func<bool> condition, params Runtime.WorkflowRuntime[] runtimes)
    {
        using var changed = new SemaphoreSlim(0);
        void OnChanged() => changed.Release();
        foreach (var runtime in runtimes)
        {
            runtime.OwnershipChanged += OnChanged;
        }

        try
        {
            using var timeout = new CancellationTokenSource(TestHost.Wait);
            while (!condition())
            {
                await changed.WaitAsync(timeout.Token);
            }
        }
        finally
        {
            foreach (var runtime in runtimes)
            {
                runtime.OwnershipChanged -= OnChanged;
            }
        }
    }

    /// <summary>
    /// Below the 20 s a standby waits between tries with <see cref="SlowRetryNode"/>'s 60 s lease (a take-over that waited
    /// for the next try comes after it), with room for a busy CI machine above the 3 s a prompt take-over takes.
    /// </summary>
    private static readonly TimeSpan PromptTakeOver = TimeSpan.FromSeconds(18);

    /// <summary>A node whose standby would try to take a partition only every 20 s (a third of its 60 s lease) if nothing woke it.</summary>
    private static Action<OrchestrationBuilder> SlowRetryNode(string name) => FourPartitionNode(name, TimeSpan.FromSeconds(60));

    /// <summary>A node of a shared store with four partitions, leases of <paramref name="lease"/>, and requests handed over every 50 ms.</summary>
    private static Action<OrchestrationBuilder> FourPartitionNode(string name, TimeSpan lease, bool balance = false) => o =>
    {
        WorkflowEngineTests.All(o);
        o.Options.NodeId = name;
        o.Options.Partitions = 4;
        o.Options.BalancePartitions = balance;
        o.Options.LeaseDuration = lease;
        o.Options.HandoffInterval = TimeSpan.FromMilliseconds(50);
    };

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

    private async Task<string> LocationAsync(StoreKind store) => (await _locations.NewAsync(store))!;
}
