using System.Threading.Channels;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing.InMemory;
using Patterns.Serialization;
using Patterns.Streaming;
using Patterns.Testing;
using static Patterns.Core.Tests.Streaming.T;

namespace Patterns.Core.Tests.Streaming;

public sealed class DurableSnapshotTests
{
    [Fact]
    public async Task SnapshotInterval_WhileRunning_CommitsTheSnapshotAndTheResultsTogetherEachInterval()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var storage = new InMemoryEventStorage(new InMemoryEventStorageOptions(), time);
        var store = new StoreStreamSnapshotStore(storage, storage, new JsonMessageSerializer());
        var input = Channel.CreateUnbounded<Click>();
        var seen = 0;
        var run = DataStream.From(input.Reader, new StreamOptions { Name = "clicks", SnapshotStore = store, SnapshotInterval = TimeSpan.FromSeconds(5), TimeProvider = time })
            .Select(c =>
            {
                Interlocked.Increment(ref seen);
                return c;
            })
            .WithEventTime(c => c.At, TimeSpan.Zero)
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), name: "per-user")
            .Count()
            .ToDocuments("counts", r => $"{r.Key}/{(r.Start - Zero).TotalSeconds}")
            .RunAsync();
        await input.Writer.WriteAsync(C("a", 1));
        await input.Writer.WriteAsync(C("a", 2));
        await input.Writer.WriteAsync(C("a", 12));
        await Eventually.HoldsAsync(() => Volatile.Read(ref seen) == 3 || run.IsCompleted);
        run.IsFaulted.Should().BeFalse(run.Exception?.ToString());

        (await storage.GetAsync("counts", "a/0")).Should().BeNull("a result is written only with the snapshot that includes it");
        (await storage.GetAsync(StoreStreamSnapshotStore.Collection, "clicks")).Should().BeNull();

        fake.Advance(TimeSpan.FromSeconds(5));
        await Eventually.HoldsAsync(() => storage.GetAsync("counts", "a/0").AsTask().Result is not null || run.IsCompleted);
        run.IsFaulted.Should().BeFalse(run.Exception?.ToString());
        (await storage.GetAsync(StoreStreamSnapshotStore.Collection, "clicks")).Should().NotBeNull("the snapshot committed with the result");
        var restored = await store.LoadAsync("clicks");
        restored!.Operators.Keys.Should().Equal("per-user");

        input.Writer.Complete();
        await run.WaitAsync(TestHost.Wait);
        (await storage.GetAsync("counts", "a/10")).Should().NotBeNull("the end of the input fires and commits the last window");
        (await storage.GetAsync(StoreStreamSnapshotStore.Collection, "clicks")).Should().BeNull("an exhausted input deletes the snapshot in the same commit");
    }

    [Fact]
    public async Task SendToOutbox_WhileRunning_StoresEachResultAsAMessageInTheSnapshotsUnitOfWork()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var storage = new InMemoryEventStorage(new InMemoryEventStorageOptions(), time);
        var serializer = new JsonMessageSerializer();
        var store = new StoreStreamSnapshotStore(storage, storage, serializer);
        using var host = TestHost.Build(b => b.AddMessageQueue(q => q.AddQueue("counts")));
        var sender = host.Services.GetRequiredService<Patterns.Queues.IQueueSender>();
        var input = Channel.CreateUnbounded<Click>();
        var seen = 0;
        var run = DataStream.From(input.Reader, new StreamOptions { Name = "clicks", SnapshotStore = store, SnapshotInterval = TimeSpan.FromSeconds(5), TimeProvider = time })
            .Select(c =>
            {
                Interlocked.Increment(ref seen);
                return c;
            })
            .WithEventTime(c => c.At, TimeSpan.Zero)
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), name: "per-user")
            .Count()
            .SendToOutbox(sender, "counts")
            .RunAsync();
        await input.Writer.WriteAsync(C("a", 1));
        await input.Writer.WriteAsync(C("a", 2));
        await input.Writer.WriteAsync(C("a", 12));
        await Eventually.HoldsAsync(() => Volatile.Read(ref seen) == 3 || run.IsCompleted);
        run.IsFaulted.Should().BeFalse(run.Exception?.ToString());
        (await storage.ReadOutboxAsync(0, 10)).Should().BeEmpty("a result is stored only with the snapshot that includes it");

        fake.Advance(TimeSpan.FromSeconds(5));
        await Eventually.HoldsAsync(() => storage.ReadOutboxAsync(0, 10).AsTask().Result.Count > 0 || run.IsCompleted);
        run.IsFaulted.Should().BeFalse(run.Exception?.ToString());
        (await storage.GetAsync(StoreStreamSnapshotStore.Collection, "clicks")).Should().NotBeNull("the snapshot committed with the message");

        input.Writer.Complete();
        await run.WaitAsync(TestHost.Wait);
        var messages = await storage.ReadOutboxAsync(0, 10);
        messages.Select(m => (m.Message.Destination, m.Message.Kind)).Should().Equal(("counts", Patterns.Storage.OutboxMessageKind.Send), ("counts", Patterns.Storage.OutboxMessageKind.Send));
        var results = messages.Select(m => Patterns.Outbox.OutboxCodec.Decode(m.Message.Payload))
            .Select(e => (WindowResult<string, long>)serializer.Deserialize(e.Payload, typeof(WindowResult<string, long>)))
            .Select(Row)
            .ToList();
        results.Should().Equal(("a", 0d, 10d, 2L), ("a", 10d, 20d, 1L));
    }

    [Fact]
    public async Task PublishToOutbox_WithoutAStoreWithUnitsOfWork_FailsExplaining()
    {
        using var host = TestHost.Build(b => b.AddPubSub());
        var run = () => DataStream.From([1], new StreamOptions { SnapshotStore = new InMemoryStreamSnapshotStore() })
            .PublishToOutbox(host.Services.GetRequiredService<Patterns.PubSub.IPublisher>(), "numbers")
            .RunAsync().WaitAsync(TestHost.Wait);
        (await run.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain("units of work").And.Contain("the outbox ('numbers')");
    }

    [Fact]
    public async Task SnapshotInterval_WithSelectAsyncAndPartitionBy_CommitsEveryPartitionsStateWithTheResultsOfEverythingTaken()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var storage = new InMemoryEventStorage(new InMemoryEventStorageOptions(), time);
        var store = new StoreStreamSnapshotStore(storage, storage, new JsonMessageSerializer());
        var input = Channel.CreateUnbounded<Click>();
        var seen = 0;
        using var release = new SemaphoreSlim(0);
        var run = DataStream.From(input.Reader, new StreamOptions { Name = "clicks", SnapshotStore = store, SnapshotInterval = TimeSpan.FromSeconds(5), TimeProvider = time })
            .Select(c =>
            {
                Interlocked.Increment(ref seen);
                return c;
            })
            .SelectAsync(
                async (c, ct) =>
                {
                    // The last click's lookup is still running when the snapshot is due: the snapshot waits for it.
                    if (c.User == "c" && c.At == S(12))
                    {
                        await release.WaitAsync(ct);
                    }

                    return c;
                },
                maxParallelism: 4,
                name: "lookup")
            .PartitionBy(c => c.User, 3, name: "users")
            .WithEventTime(c => c.At, TimeSpan.Zero)
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), name: "per-user")
            .Count()
            .ToDocuments("counts", r => $"{r.Key}/{(r.Start - Zero).TotalSeconds}")
            .RunAsync();
        // In time order: keys that share a partition share its watermark.
        foreach (var second in new[] { 1, 2, 12 })
        {
            foreach (var user in new[] { "a", "b", "c" })
            {
                await input.Writer.WriteAsync(C(user, second));
            }
        }

        await Eventually.HoldsAsync(() => Volatile.Read(ref seen) == 9 || run.IsCompleted);
        run.IsFaulted.Should().BeFalse(run.Exception?.ToString());
        fake.Advance(TimeSpan.FromSeconds(5));
        (await storage.GetAsync(StoreStreamSnapshotStore.Collection, "clicks")).Should().BeNull("the snapshot waits for the lookup in flight");
        release.Release();

        await Eventually.HoldsAsync(() => storage.GetAsync(StoreStreamSnapshotStore.Collection, "clicks").AsTask().Result is not null || run.IsCompleted);
        run.IsFaulted.Should().BeFalse(run.Exception?.ToString());
        var restored = await store.LoadAsync("clicks");
        restored!.Operators.Keys.Should().BeEquivalentTo(["per-user#p0", "per-user#p1", "per-user#p2"], "each partition saves its window state at the barrier");
        foreach (var user in new[] { "a", "b", "c" })
        {
            // Committed in the same unit as the snapshot: every partition had handled every click taken before it.
            (await storage.GetAsync("counts", user + "/0")).Should().NotBeNull($"{user}'s first window fired before the snapshot and commits with it");
            (await storage.GetAsync("counts", user + "/10")).Should().BeNull($"{user}'s second window is still open");
        }

        input.Writer.Complete();
        await run.WaitAsync(TestHost.Wait);
        (await storage.GetAsync("counts", "c/10")).Should().NotBeNull("the end of the input fires and commits the last windows");
        (await storage.GetAsync(StoreStreamSnapshotStore.Collection, "clicks")).Should().BeNull("an exhausted input deletes the snapshot in the same commit");
    }

    [Fact]
    public async Task ToDocuments_WithoutAStoreWithUnitsOfWork_FailsExplaining()
    {
        var run = () => DataStream.From([1], new StreamOptions { SnapshotStore = new InMemoryStreamSnapshotStore() })
            .ToDocuments("numbers", i => i.ToString(System.Globalization.CultureInfo.InvariantCulture))
            .RunAsync().WaitAsync(TestHost.Wait);

        (await run.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain("units of work");
    }

    [Fact]
    public void AddStreaming_WithAStoreThatHasUnitsOfWork_UsesStoreSnapshots_AndUseStoreSnapshotsNeedsOne()
    {
        using (var host = TestHost.Build(b =>
        {
            b.AddEventSourcing();
            b.AddStreaming();
        }))
        {
            host.Services.GetRequiredService<IStreamSnapshotStore>().Should().BeOfType<StoreStreamSnapshotStore>();
        }

        using (var host = TestHost.Build(b => b.AddStreaming()))
        {
            host.Services.GetRequiredService<IStreamSnapshotStore>().Should().BeOfType<InMemoryStreamSnapshotStore>();
        }

        using var without = TestHost.Build(b => b.AddStreaming(s => s.UseStoreSnapshots()));
        var resolve = () => without.Services.GetRequiredService<IStreamSnapshotStore>();
        resolve.Should().Throw<InvalidOperationException>().WithMessage("*UseStoreSnapshots()*");
    }
}
