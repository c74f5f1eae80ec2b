using Patterns.Orchestration.Engine;
using Patterns.Orchestration.History;
using Patterns.Orchestration.Runtime;

namespace Patterns.Orchestration.Tests;

/// <summary>
/// An update handler that runs a local activity and then an activity, while the body waits for a signal and then calls an
/// activity: an update and a signal applied in one workflow task interleave around the local activity.
/// </summary>
public sealed class LocalInUpdateWorkflow : Workflow<int, int>
{
    private int _value;

    public override async Task<int> RunAsync(WorkflowContext context, int input)
    {
        context.SetQueryHandler("value", () => _value);
        context.SetUpdateHandler<int, int>("set", async value =>
        {
            var local = await context.CallLocalActivityAsync("L", _ => Task.FromResult(value));
            await context.CallActivityAsync<int>("Double", local);
            _value += local;
            return local;
        });
        var add = await context.WaitForSignalAsync<int>("add");
        await context.CallActivityAsync<string>("Echo", "B");
        _value += add;
        await context.WaitForSignalAsync<int>("stop");
        return _value;
    }
}

/// <summary>Two branches of a fan-out: one runs a local activity then an activity, the other an activity.</summary>
public sealed class LocalInBranchWorkflow : Workflow<int, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, int input)
    {
        var results = await Task.WhenAll(
            Branch(context, async () =>
            {
                var local = await context.CallLocalActivityAsync("L", _ => Task.FromResult("local"));
                return await context.CallActivityAsync<string>("Echo", local);
            }),
            Branch(context, () => context.CallActivityAsync<string>("Echo", "other")));
        return string.Join(",", results);
    }

    private static Task<string> Branch(WorkflowContext context, Func<Task<string>> body) => body();
}

/// <summary>
/// Local activities resolve at the same point when replaying as they did live (once the code waits), so an event applied in the
/// same workflow task after the one that started a local activity does not reorder the commands on replay.
/// </summary>
public sealed class LocalActivityOrderTests : IAsyncLifetime
{
    private readonly StoreLocations _locations = new();

    public ValueTask InitializeAsync() => ValueTask.CompletedTask;

    public ValueTask DisposeAsync() => _locations.DisposeAsync();

    private static void Configure(OrchestrationBuilder o) => o.AddWorkflow<LocalInUpdateWorkflow>().AddWorkflow<LocalInBranchWorkflow>().AddActivities<TestActivities>();

    [Fact]
    public async Task UpdateWithALocalActivity_HeldWithASignalInTheStartsTask_ReplaysOnASecondHost()
    {
        var location = await _locations.NewAsync(StoreKind.Sqlite);
        await using (var host = await TestHost.StartAsync(Configure, StoreKind.Sqlite, location))
        {
            var outcome = host.Runtime.RegisterUpdate("held-update");
            host.Runtime.EnqueueAll(
                "held",
                new StartItem(nameof(LocalInUpdateWorkflow), Payload(host, 0), null, 0),
                new EventItem(new HistoryEvent { Kind = HistoryEventKind.UpdateRequested, Name = "set", Id = "held-update", Payload = Payload(host, 8) }),
                new EventItem(new HistoryEvent { Kind = HistoryEventKind.SignalReceived, Name = "add", Payload = Payload(host, 5) }));
            (await outcome.WaitAsync(TestHost.Wait)).Error.Should().BeNull();
            (await host.Client.QueryAsync<int>("held", "value")).Should().Be(13);
            ReplayAll(host, await host.Client.GetHistoryAsync("held"));
        }

        await using var second = await TestHost.StartAsync(Configure, StoreKind.Sqlite, location);
        (await second.Client.QueryAsync<int>("held", "value")).Should().Be(13, "the second host replays the history without a mismatch");
        second.Runtime.Replays.Should().Be(1);
        await second.Client.SignalAsync("held", "stop", 0);
        (await second.ResultAsync<int>("held")).Should().Be(13);
    }

    [Fact]
    public async Task UpdateWithALocalActivity_AndASignal_InALaterTask_Replay()
    {
        await using var host = await TestHost.StartAsync(Configure);
        await host.Client.StartAsync(nameof(LocalInUpdateWorkflow), "later", 0);
        await host.WaitForAsync("later", HistoryEventKind.Started);
        var outcome = host.Runtime.RegisterUpdate("later-update");
        host.Runtime.EnqueueAll(
            "later",
            new EventItem(new HistoryEvent { Kind = HistoryEventKind.UpdateRequested, Name = "set", Id = "later-update", Payload = Payload(host, 3) }),
            new EventItem(new HistoryEvent { Kind = HistoryEventKind.SignalReceived, Name = "add", Payload = Payload(host, 4) }));
        (await outcome.WaitAsync(TestHost.Wait)).Error.Should().BeNull();
        (await host.Client.QueryAsync<int>("later", "value")).Should().Be(7);
        ReplayAll(host, await host.Client.GetHistoryAsync("later"));
    }

    [Fact]
    public async Task LocalActivityInOneBranchOfAFanOut_Replays()
    {
        await using var host = await TestHost.StartAsync(Configure);
        await host.Client.StartAsync(nameof(LocalInBranchWorkflow), "branches", 0);
        (await host.ResultAsync<string>("branches")).Should().Be("echo-local,echo-other");
        ReplayAll(host, await host.Client.GetHistoryAsync("branches"));
    }

    private static void ReplayAll(TestHost host, WorkflowHistory history)
    {
        var replay = () => new WorkflowReplayer(host.Host.Services).AddWorkflow<LocalInUpdateWorkflow>().AddWorkflow<LocalInBranchWorkflow>().Replay(history);
        replay.Should().NotThrow();
    }

    private static byte[]? Payload(TestHost host, object value) => host.Runtime.Serializer.ToPayload(value, typeof(object));
}
