using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Patterns.Orchestration.Tests;

/// <summary>Workflow code that holds its workflow task until the test lets it go, counting how many run at once.</summary>
public sealed class HeldTasks
{
    private readonly ConcurrentDictionary<string, ManualResetEventSlim> _gates = new(StringComparer.Ordinal);
    private int _running;
    private int _most;
    private volatile bool _released;

    /// <summary>Gets the instances whose code started, in order.</summary>
    public BlockingCollection<string> Entered { get; } = [];

    /// <summary>Gets whether <see cref="Release"/> had let one go when each instance's code started.</summary>
    public ConcurrentDictionary<string, bool> SawRelease { get; } = new(StringComparer.Ordinal);

    /// <summary>Gets the most that ran at once.</summary>
    public int Most => Volatile.Read(ref _most);

    /// <summary>Gets or sets whether the code waits for <see cref="Release"/> (false: it goes on at once).</summary>
    public bool Hold { get; set; } = true;

    /// <summary>Runs in the workflow code, on its scheduler: holds the workflow task (and the thread) until released, at most <see cref="TestHost.Wait"/>.</summary>
    public void Enter(string instanceId)
    {
        var running = Interlocked.Increment(ref _running);
        int most;
        while (running > (most = Volatile.Read(ref _most)) && Interlocked.CompareExchange(ref _most, running, most) != most)
        {
        }

        SawRelease[instanceId] = _released;
        Entered.Add(instanceId);
        try
        {
            if (Hold)
            {
                Gate(instanceId).Wait(TestHost.Wait);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _running);
        }
    }

    public void Release(string instanceId)
    {
        _released = true;
        Gate(instanceId).Set();
    }

    public string Next()
    {
        Entered.TryTake(out var id, (int)TestHost.Wait.TotalMilliseconds, TestContext.Current.CancellationToken).Should().BeTrue("an instance's code should start");
        return id!;
    }

    private ManualResetEventSlim Gate(string instanceId) => _gates.GetOrAdd(instanceId, static _ => new ManualResetEventSlim());
}

/// <summary>Holds its first workflow task in <see cref="HeldTasks"/>, then returns its input.</summary>
public sealed class HeldWorkflow(HeldTasks held) : Workflow<int, int>
{
    public override Task<int> RunAsync(WorkflowContext context, int input)
    {
        held.Enter(context.InstanceId);
        return Task.FromResult(input);
    }
}

/// <summary>Holds its first workflow task, waits for signal "more", then holds the task that handles it.</summary>
public sealed class HeldTwiceWorkflow(HeldTasks held) : Workflow<int, int>
{
    public override async Task<int> RunAsync(WorkflowContext context, int input)
    {
        held.Enter(context.InstanceId);
        var more = await context.WaitForSignalAsync<int>("more");
        held.Enter(context.InstanceId + "/more");
        return input + more;
    }
}

/// <summary>A local activity that starts another instance and waits for its result.</summary>
public sealed class StartsAnotherLocallyWorkflow(IWorkflowClient client) : Workflow<int, int>
{
    public override Task<int> RunAsync(WorkflowContext context, int input) =>
        context.CallLocalActivityAsync("start-another", async cancellationToken =>
        {
            var callee = context.InstanceId + "-callee";
            await client.StartAsync(nameof(HeldWorkflow), callee, input + 1, cancellationToken).ConfigureAwait(false);
            return await client.GetResultAsync<int>(callee, cancellationToken).ConfigureAwait(false);
        });
}

/// <summary>At most <see cref="OrchestrationOptions.MaxConcurrentWorkflowTasks"/> instances run workflow tasks at once; the others wait their turn, oldest first.</summary>
public sealed class WorkflowTaskPlacesTests
{
    private static Task<TestHost> StartAsync(HeldTasks held, int places) => TestHost.StartAsync(
        o =>
        {
            o.Options.MaxConcurrentWorkflowTasks = places;
            o.AddWorkflow<HeldWorkflow>().AddWorkflow<HeldTwiceWorkflow>().AddWorkflow<StartsAnotherLocallyWorkflow>();
        },
        services: s => s.AddSingleton(held));

    [Fact]
    public async Task Start_WhileEveryPlaceIsHeld_WaitsForAPlaceAndRunsWhenOneIsFreed()
    {
        var held = new HeldTasks();
        await using var host = await StartAsync(held, 2);
        var first = host.Client.StartAsync(nameof(HeldWorkflow), "held-a", 1);
        var second = host.Client.StartAsync(nameof(HeldWorkflow), "held-b", 2);
        new[] { held.Next(), held.Next() }.Should().BeEquivalentTo(["held-a", "held-b"]);

        // Both places are held by running workflow tasks: a third start waits its turn.
        var third = host.Client.StartAsync(nameof(HeldWorkflow), "held-c", 3);
        host.Runtime.WaitingForPlace.Should().Be(1);
        third.IsCompleted.Should().BeFalse();

        held.Release("held-a");
        held.Next().Should().Be("held-c");
        held.SawRelease["held-c"].Should().BeTrue("the third ran only once a place was freed");

        held.Release("held-b");
        held.Release("held-c");
        await Task.WhenAll(first, second, third).WaitAsync(TestHost.Wait);
        (await host.ResultAsync<int>("held-a")).Should().Be(1);
        (await host.ResultAsync<int>("held-b")).Should().Be(2);
        (await host.ResultAsync<int>("held-c")).Should().Be(3);
        held.Most.Should().Be(2);
        host.Runtime.WaitingForPlace.Should().Be(0);
    }

    [Fact]
    public async Task ManyStarts_WithThreePlaces_AllComplete_NeverMoreThanThreeAtOnce()
    {
        var held = new HeldTasks { Hold = false };
        await using var host = await StartAsync(held, 3);
        var ids = Enumerable.Range(0, 300).Select(i => $"many-{i}").ToArray();
        await Task.WhenAll(ids.Select((id, i) => host.Client.StartAsync(nameof(HeldWorkflow), id, i))).WaitAsync(TestHost.Wait);
        for (var i = 0; i < ids.Length; i++)
        {
            (await host.ResultAsync<int>(ids[i])).Should().Be(i);
        }

        held.Entered.Count.Should().Be(ids.Length);
        held.Most.Should().BeInRange(1, 3);
        host.Runtime.WaitingForPlace.Should().Be(0);
    }

    [Fact]
    public async Task LocalActivity_ThatWaitsForAnotherInstance_WithOnePlace_GivesItsPlaceUp()
    {
        // The caller's workflow task holds the only place while its local activity waits for the callee, which needs a
        // place to run: the task gives its place up while its local activities run, so the callee gets it.
        var held = new HeldTasks { Hold = false };
        await using var host = await StartAsync(held, 1);
        await host.Client.StartAsync(nameof(StartsAnotherLocallyWorkflow), "caller", 41).WaitAsync(TestHost.Wait);
        (await host.ResultAsync<int>("caller")).Should().Be(42);
        (await host.ResultAsync<int>("caller-callee")).Should().Be(42);
        host.Runtime.WaitingForPlace.Should().Be(0);
        held.Next().Should().Be("caller-callee");

        // The place taken back after the local activity (beyond the limit, the callee held the only one) was returned:
        // one place again, neither more nor fewer.
        held.Hold = true;
        var first = host.Client.StartAsync(nameof(HeldWorkflow), "after-a", 1);
        held.Next().Should().Be("after-a");
        var second = host.Client.StartAsync(nameof(HeldWorkflow), "after-b", 2);
        host.Runtime.WaitingForPlace.Should().Be(1);
        held.Release("after-a");
        held.Next().Should().Be("after-b");
        held.Release("after-b");
        await Task.WhenAll(first, second).WaitAsync(TestHost.Wait);
        host.Runtime.WaitingForPlace.Should().Be(0);
    }

    [Fact]
    public async Task InstanceWithMoreWork_WhileOthersWait_GoesBehindThem()
    {
        // One place, held by the first task of "fair-a". "fair-b" starts and waits for the place; then a signal for
        // "fair-a" arrives. "fair-b" waited longer: it runs before "fair-a" handles the signal, else an instance whose
        // mailbox keeps refilling would keep its place while the others wait for good.
        var held = new HeldTasks();
        await using var host = await StartAsync(held, 1);
        var startA = host.Client.StartAsync(nameof(HeldTwiceWorkflow), "fair-a", 1);
        held.Next().Should().Be("fair-a");
        var startB = host.Client.StartAsync(nameof(HeldWorkflow), "fair-b", 2);
        host.Runtime.WaitingForPlace.Should().Be(1);
        var signal = host.Client.SignalAsync("fair-a", "more", 40);

        held.Release("fair-a");
        var next = held.Next();
        held.Release("fair-b");
        held.Release("fair-a/more");
        await Task.WhenAll(startA, startB, signal).WaitAsync(TestHost.Wait);
        (await host.ResultAsync<int>("fair-a")).Should().Be(41);
        (await host.ResultAsync<int>("fair-b")).Should().Be(2);

        next.Should().Be("fair-b", "it waited for a place before the signal reached the instance that held it");
        host.Runtime.WaitingForPlace.Should().Be(0);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(int.MaxValue)]
    public async Task MaxConcurrentWorkflowTasks_OutOfRange_FailsAtStartNamingIt(int places)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.AddOrchestration(o =>
        {
            o.Options.MaxConcurrentWorkflowTasks = places;
            o.AddWorkflow<HeldWorkflow>();
        });
        using var host = builder.Build();

        var start = () => host.StartAsync(TestContext.Current.CancellationToken);

        var error = (await start.Should().ThrowAsync<OptionsValidationException>()).Which;
        error.Failures.Should().Contain(f => f.Contains("MaxConcurrentWorkflowTasks", StringComparison.Ordinal) && f.Contains("1000000", StringComparison.Ordinal));
    }
}
