using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.EventSourcing;
using Patterns.EventSourcing.InMemory;
using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

/// <summary>Rebuilds that crash, or run while events are appended, never serve an empty or half-built read model.</summary>
public sealed class RebuildTests
{
    private static IReadModels ReadModels(IHost host) => host.Services.GetRequiredService<IReadModels>();

    /// <summary>Counts events per stream: not idempotent, so an event applied twice (or lost) shows in the count.</summary>
    private static Func<RecordedEvent, ProjectionContext, CancellationToken, ValueTask> Counter(Func<RecordedEvent, ProjectionContext, bool>? fail = null) =>
        async (e, context, ct) =>
        {
            if (fail?.Invoke(e, context) == true)
            {
                throw new InvalidOperationException($"crash at position {e.Position}");
            }

            await context.Collection<CountView>("tallies").UpdateAsync(e.StreamId, c => new CountView((c?.Count ?? 0) + 1), ct);
        };

    [Fact]
    public async Task AsyncRebuild_CrashesHalfWay_OldModelIsServedAndTheRestartedProcessFinishesIt()
    {
        var storage = new InMemoryEventStorage();
        var crashing = false;
        void Tally(EventSourcingBuilder es) => es.UseStorage(_ => storage).AddProjection(
            "tally",
            Counter((e, _) => Volatile.Read(ref crashing) && e.Position == 2),
            o => { o.Collections.Add("tallies"); o.Retry = null; o.CheckpointInterval = 1; });

        using (var host = await EventSourcingHost.StartAsync(Tally))
        {
            var appended = await host.Store().AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(1m), new Deposited(2m)]);
            await host.Subscriptions().WaitForPositionAsync("tally", appended.LastPosition).WaitAsync(TestHost.Wait);

            Volatile.Write(ref crashing, true);
            await host.Subscriptions().RebuildAsync("tally").WaitAsync(TestHost.Wait);
            var wait = () => host.Subscriptions().WaitForPositionAsync("tally", appended.LastPosition).WaitAsync(TestHost.Wait);
            await wait.Should().ThrowAsync<SubscriptionFaultedException>("the rebuild crashes at position 2, after committing position 1");

            (await ReadModels(host).GetAsync<CountView>("tallies", "account-1")).Should().Be(new CountView(3), "the old model is served while the rebuild has not finished");

            // Appended while the rebuild is down: the resumed rebuild applies it exactly once.
            await host.Store().AppendAsync("account-1", ExpectedVersion.Exact(3), new Deposited(3m));
            (await ReadModels(host).GetAsync<CountView>("tallies", "account-1")).Should().Be(new CountView(3));

            // The faulted run hands its lease back as it ends; the next process takes it over at once (a process that
            // really crashed holds it until it expires).
            await host.StopAsync();
        }

        Volatile.Write(ref crashing, false);
        using var restarted = await EventSourcingHost.StartAsync(Tally);
        await restarted.Subscriptions().WaitForPositionAsync("tally", 4).WaitAsync(TestHost.Wait);

        (await ReadModels(restarted).GetAsync<CountView>("tallies", "account-1")).Should().Be(new CountView(4), "every event once, none twice");
        (await ((ICheckpointStore)storage).LoadAsync("tally")).Should().Be(4);
        (await storage.ListAsync("tallies~rebuild").CollectAsync()).Should().BeEmpty("the shadow was swapped in");
        (await storage.ListAsync("patterns.rebuilds").CollectAsync()).Should().BeEmpty("the rebuild is finished");

        var more = await restarted.Store().AppendAsync("account-1", ExpectedVersion.Exact(4), new Deposited(4m));
        await restarted.Subscriptions().WaitForPositionAsync("tally", more.LastPosition).WaitAsync(TestHost.Wait);
        (await ReadModels(restarted).GetAsync<CountView>("tallies", "account-1")).Should().Be(new CountView(5), "the projection runs live on the swapped-in model");
    }

    [Fact]
    public async Task AsyncRebuild_WhileStopped_RecordedAndRunByTheNextProcessToStart()
    {
        var storage = new InMemoryEventStorage();
        void Tally(EventSourcingBuilder es) => es.UseStorage(_ => storage).AddProjection("tally", Counter(), o => o.Collections.Add("tallies"));
        using (var host = await EventSourcingHost.StartAsync(Tally))
        {
            var appended = await host.Store().AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(1m)]);
            await host.Subscriptions().WaitForPositionAsync("tally", appended.LastPosition).WaitAsync(TestHost.Wait);
            await storage.UpsertAsync("tallies", "stray", "{\"count\":99}"u8.ToArray());
            await host.StopAsync();
            await host.Subscriptions().RebuildAsync("tally").WaitAsync(TestHost.Wait);
        }

        using var restarted = await EventSourcingHost.StartAsync(Tally);
        await restarted.Subscriptions().WaitForPositionAsync("tally", 2).WaitAsync(TestHost.Wait);

        var all = await ReadModels(restarted).ListAsync<CountView>("tallies").CollectAsync();
        all.Select(kv => (kv.Key, kv.Value.Count)).Should().Equal([("account-1", 2)], "the stray document went with the old model");
    }

    [Fact]
    public async Task InlineRebuild_AppendsWhileReplaying_ModelServedThroughoutAndEveryEventCountedOnce()
    {
        var paused = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var resume = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var count = Counter();
        using var host = await EventSourcingHost.StartAsync(es => es.AddProjection("tally", async (e, context, ct) =>
        {
            if (!context.IsInline && e.Position == 1 && paused.TrySetResult())
            {
                // The replay holds here, mid-rebuild, until the test has appended.
                await resume.Task.WaitAsync(ct);
            }

            await count(e, context, ct);
        }, o => { o.Mode = ProjectionMode.Inline; o.Collections.Add("tallies"); }));
        var store = host.Store();
        await store.AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(1m)]);

        var rebuild = host.Subscriptions().RebuildAsync("tally");
        await paused.Task.WaitAsync(TestHost.Wait);
        (await ReadModels(host).GetAsync<CountView>("tallies", "account-1")).Should().Be(new CountView(2), "the live model is served while the rebuild replays");
        await store.AppendAsync("account-1", ExpectedVersion.Exact(2), new Deposited(2m)).AsTask().WaitAsync(TestHost.Wait);
        (await ReadModels(host).GetAsync<CountView>("tallies", "account-1")).Should().Be(new CountView(3), "appends go on, inline, during the replay");
        resume.SetResult();
        await rebuild.WaitAsync(TestHost.Wait);

        (await ReadModels(host).GetAsync<CountView>("tallies", "account-1")).Should().Be(new CountView(3), "every event once in the rebuilt model");
        await store.AppendAsync("account-1", ExpectedVersion.Exact(3), new Withdrawn(1m));
        (await ReadModels(host).GetAsync<CountView>("tallies", "account-1")).Should().Be(new CountView(4), "appends after the swap project inline into the rebuilt model");
        var documents = host.Services.GetRequiredService<IDocumentStorage>();
        (await documents.ListAsync("tallies~rebuild").CollectAsync()).Should().BeEmpty();
    }

    [Fact]
    public async Task AppendGate_Closed_HoldsNewAppendsAndWaitsForTheOnesInFlight()
    {
        var gate = new AppendGate();
        await gate.EnterAsync(CancellationToken.None);

        var closing = gate.CloseAsync(CancellationToken.None).AsTask();
        closing.IsCompleted.Should().BeFalse("an append is in flight");
        var waiting = gate.EnterAsync(CancellationToken.None).AsTask();
        waiting.IsCompleted.Should().BeFalse("the gate is closing");
        gate.Exit();
        await closing.WaitAsync(TestHost.Wait);
        waiting.IsCompleted.Should().BeFalse("the gate is closed");

        gate.Open();
        await waiting.WaitAsync(TestHost.Wait);
        gate.Exit();
        await gate.CloseAsync(CancellationToken.None).AsTask().WaitAsync(TestHost.Wait);
        gate.Open();
    }
}
