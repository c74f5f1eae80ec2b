using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using Patterns.Orchestration.History;

namespace Patterns.Orchestration.Tests;

/// <summary>
/// Two processes on one PostgreSQL store (or two store instances on one SQLite file) with a fake clock that never moves
/// unless a test says so: requests handed to the owner, and the ends of instances and updates that the other process
/// waits for, arrive through the store's notifications (on SQLite, its check of the file's version); the reads every
/// <see cref="OrchestrationOptions.HandoffInterval"/> only recover a lost wake-up.
/// </summary>
public sealed class PushedWakeUpTests : IAsyncLifetime
{
    private static readonly TimeSpan Fallback = TimeSpan.FromSeconds(5);
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "wf-pushed-" + Guid.NewGuid().ToString("N"));
    private string? _schema;

    public ValueTask InitializeAsync()
    {
        Directory.CreateDirectory(_directory);
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        if (_schema is not null)
        {
            await Postgres.DropAsync(_schema);
        }

        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData(StoreKind.Postgres)]
    [InlineData(StoreKind.Sqlite)]
    public async Task RequestsAndResults_BetweenProcesses_ArePushed_WithoutAdvancingTheClock(StoreKind store)
    {
        var (owner, other) = await StartPairAsync(store: store);
        await using var a = owner;
        await using var b = other;
        var before = _time.GetUtcNow();

        await b.Client.StartAsync(nameof(SequenceWorkflow), "pushed", "p");
        (await b.ResultAsync<string>("pushed")).Should().Be("echo-p-1,echo-p-2,echo-p-3");

        // The update follows the start at once: drained from the mailbox in the order they were sent, often in one workflow
        // task, where the update waits for the handler the body registers (it used to be rejected, or refused when drained
        // before the start).
        await b.Client.StartAsync(nameof(CounterWorkflow), "pushed-counter", 10);
        (await b.Client.UpdateAsync<int, int>("pushed-counter", "set", 4).WaitAsync(TestHost.Wait)).Should().Be(4);
        await b.Client.SignalAsync("pushed-counter", "add", 6);
        (await b.ResultAsync<int>("pushed-counter")).Should().Be(10);

        _time.GetUtcNow().Should().Be(before, "no interval elapsed: every wake-up was pushed");
        b.CommittedEvents.Should().Be(0, "the instances ran only on the owner");

        // The owner reports its commits to the test after it has told the waiters of the end: wait for that report.
        await a.WaitForAsync("pushed", HistoryEventKind.Completed);
        await a.WaitForAsync("pushed-counter", HistoryEventKind.Completed);
        a.EventsOf("pushed").Count(e => e.Kind == HistoryEventKind.Completed).Should().Be(1);
        a.EventsOf("pushed-counter").Count(e => e.Kind == HistoryEventKind.SignalReceived).Should().Be(1);
    }

    [Theory]
    [InlineData(StoreKind.Postgres)]
    [InlineData(StoreKind.Sqlite)]
    public async Task RequestsHandedOver_OneAfterAnother_ApplyInTheOrderTheyWereSent(StoreKind store)
    {
        var (owner, other) = await StartPairAsync(o => o.AddWorkflow<OrderedSignalsWorkflow>(), store);
        await using var a = owner;
        await using var b = other;

        // Each request commits to the owner's mailbox before the next is sent; entries the owner finds there together are
        // drained in key order, which used to be a random GUID's (a signal could pass the one before it, or the start).
        await b.Client.StartAsync(nameof(OrderedSignalsWorkflow), "ordered", 8);
        for (var i = 1; i <= 8; i++)
        {
            await b.Client.SignalAsync("ordered", "item", i);
        }

        (await b.ResultAsync<string>("ordered")).Should().Be("1,2,3,4,5,6,7,8");
        await a.WaitForAsync("ordered", HistoryEventKind.Completed); // reported after the end's waiters were told
        a.EventsOf("ordered").Count(e => e.Kind == HistoryEventKind.SignalReceived).Should().Be(8);
    }

    [Fact]
    public async Task AHandedOverRequest_WhoseWakeUpWasLost_IsAppliedByTheFallbackRead()
    {
        var (owner, other) = await StartPairAsync();
        await using var a = owner;
        await using var b = other;
        var lost = "lost-0";
        var pushed = Enumerable.Range(0, 100).Select(i => "pushed-" + i).First(id => a.Runtime.PartitionOf(id) != a.Runtime.PartitionOf(lost));

        // A request in the owner's mailbox without its marker event: as if the notification that announces it was dropped.
        var request = new HandedOffItem { InstanceId = lost, Kind = "s", WorkflowType = nameof(SequenceWorkflow), Input = JsonSerializer.SerializeToUtf8Bytes("l") };
        await b.Runtime.Documents.UpsertAsync(HandedOffItem.CollectionPrefix + a.Runtime.PartitionOf(lost), $"{lost}|{Guid.NewGuid():N}", JsonSerializer.SerializeToUtf8Bytes(request, OrchestrationJson.Default.HandedOffItem));
        await b.Client.StartAsync(nameof(SequenceWorkflow), pushed, "p");
        (await b.ResultAsync<string>(pushed)).Should().Be("echo-p-1,echo-p-2,echo-p-3");
        a.EventsOf(lost).Should().BeEmpty("nothing announced the request, and the fallback interval has not elapsed");

        _time.Advance(Fallback);

        (await b.ResultAsync<string>(lost)).Should().Be("echo-l-1,echo-l-2,echo-l-3");
        a.Log.Count("Echo:l-1").Should().Be(1);
    }

    [Fact]
    public async Task AWaiterElsewhere_OfAnInstanceThatFaults_LearnsItFromTheFallbackRead()
    {
        var (owner, other) = await StartPairAsync(o => o.AddWorkflow<ConfigureAwaitFalseWorkflow>());
        await using var a = owner;
        await using var b = other;
        var waiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        b.Runtime.WaitingForEnd += id => waiting.TrySetResult();
        var result = b.Client.GetResultAsync<string>("faulty");
        await waiting.Task.WaitAsync(TestHost.Wait);

        await b.Client.StartAsync(nameof(ConfigureAwaitFalseWorkflow), "faulty", "x");
        var onOwner = () => a.ResultAsync<string>("faulty");
        (await onOwner.Should().ThrowAsync<WorkflowFailedException>()).Which.Status.Should().Be(WorkflowStatus.Faulted);
        result.IsCompleted.Should().BeFalse("a fault records no history event, so no notification announces it");

        _time.Advance(Fallback);

        var onOther = () => result.WaitAsync(TestHost.Wait);
        (await onOther.Should().ThrowAsync<WorkflowFailedException>()).Which.Status.Should().Be(WorkflowStatus.Faulted);
    }

    /// <summary>Starts the owner of all four partitions, then a process that owns none (its leases last 60 s of the fake clock).</summary>
    private async Task<(TestHost Owner, TestHost Other)> StartPairAsync(Action<OrchestrationBuilder>? more = null, StoreKind store = StoreKind.Postgres)
    {
        var location = store == StoreKind.Postgres ? _schema = await Postgres.NewSchemaAsync() : Path.Combine(_directory, "pushed.db");
        var log = new CallLog();
        Action<OrchestrationBuilder> Node(string name) => o =>
        {
            WorkflowEngineTests.All(o);
            more?.Invoke(o);
            o.Options.NodeId = name;
            o.Options.Partitions = 4;
            o.Options.LeaseDuration = TimeSpan.FromSeconds(60);
            o.Options.HandoffInterval = Fallback;
        };
        var a = await TestHost.StartAsync(Node("node-a"), store, location, _time, log);
        var b = await TestHost.StartAsync(Node("node-b"), store, location, _time, log);
        a.Runtime.OwnedPartitions.Should().Equal(0, 1, 2, 3);
        b.Runtime.OwnedPartitions.Should().BeEmpty();
        return (a, b);
    }
}
