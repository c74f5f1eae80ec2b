using System.Text.Json;
using FluentAssertions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Queues;
using Patterns.Serialization;
using Patterns.Storage;
using Patterns.Streaming;
using Xunit;

namespace Patterns.Conformance;

/// <summary>Stream pipelines keep their window state in the store, and write window results to it exactly once across a crash.</summary>
public abstract partial class EventStoreConformanceTests
{
    private static readonly DateTimeOffset StreamEpoch = DateTimeOffset.UnixEpoch;

    /// <summary>A pipeline stopped with open windows resumes them from the store's documents, through a new store instance.</summary>
    [Fact]
    public async Task Streaming_StoreSnapshots_StopThenRestart_ResumesOpenWindowsFromTheStore()
    {
        var store = await OpenAsync();
        var serializer = new JsonMessageSerializer();
        var results = new List<WindowResult<string, long>>();
        var input = System.Threading.Channels.Channel.CreateUnbounded<StreamClick>();
        using var seen = new SemaphoreSlim(0);
        StreamPipeline Build(IStreamSnapshotStore snapshots) => DataStream.From(input.Reader, new StreamOptions { Name = "clicks", SnapshotStore = snapshots })
            .Select(c =>
            {
                seen.Release();
                return c;
            })
            .WithEventTime(c => c.At, TimeSpan.Zero)
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), name: "per-user")
            .Count()
            .To(r =>
            {
                lock (results)
                {
                    results.Add(r);
                }
            });

        using (var stop = new CancellationTokenSource())
        {
            var first = Build(new StoreStreamSnapshotStore(store.Documents, store.UnitOfWork!, serializer)).RunAsync(stop.Token);
            foreach (var click in new[] { Click("a", 1, 1), Click("a", 2, 2), Click("a", 12, 3) })
            {
                await input.Writer.WriteAsync(click, Timeout);
            }

            for (var i = 0; i < 3; i++)
            {
                await seen.WaitAsync(Timeout);
            }

            await stop.CancelAsync();
            await first.WaitAsync(Timeout);
        }

        (await store.Documents.GetAsync(StoreStreamSnapshotStore.Collection, "clicks", Timeout)).Should().NotBeNull("the snapshot is a document of the store");
        await input.Writer.WriteAsync(Click("a", 15, 4), Timeout);
        input.Writer.Complete();
        await Build(new StoreStreamSnapshotStore(store.Documents, store.UnitOfWork!, serializer)).RunAsync(Timeout).WaitAsync(Timeout);

        results.Select(r => (r.Key, r.Start, r.Value)).Should().Equal(("a", StreamEpoch, 2L), ("a", StreamEpoch.AddSeconds(10), 2L));
        (await store.Documents.GetAsync(StoreStreamSnapshotStore.Collection, "clicks", Timeout)).Should().BeNull("an exhausted input deletes the snapshot");
    }

    /// <summary>
    /// A queue-fed windowed count writes its results to documents in the unit of work of its snapshots, and holds each
    /// message's acknowledgement until a snapshot that includes it has committed. The store dies after a number of
    /// writes; the messages no committed snapshot includes go back to the queue. A second run resumes from the store:
    /// every count is exact and every result is in the store once.
    /// </summary>
    /// <param name="crashAfterWrites">How many commits succeed before the store dies.</param>
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    public Task Streaming_WindowedCountsToDocuments_AfterACrash_EachResultOnceWithExactCounts(int crashAfterWrites) =>
        WindowedCountsAfterACrashAsync(crashAfterWrites, partitioned: false);

    /// <summary>
    /// As <see cref="Streaming_WindowedCountsToDocuments_AfterACrash_EachResultOnceWithExactCounts"/>, with the count
    /// behind <c>SelectAsync</c> and in three partitions (<c>PartitionBy</c>), whose snapshots are taken at a barrier: each
    /// partition's window state and every result produced before it commit together, once per partition.
    /// </summary>
    /// <param name="crashAfterWrites">How many commits succeed before the store dies.</param>
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    public Task Streaming_PartitionedWindowedCountsToDocuments_AfterACrash_EachResultOnceWithExactCounts(int crashAfterWrites) =>
        WindowedCountsAfterACrashAsync(crashAfterWrites, partitioned: true);

    private async Task WindowedCountsAfterACrashAsync(int crashAfterWrites, bool partitioned)
    {
        var store = await OpenAsync();
        var serializer = new JsonMessageSerializer();
        var services = new ServiceCollection();
        services.AddMessageQueue(q => q.AddQueue("clicks"));
        await using var provider = services.BuildServiceProvider();
        var hosted = provider.GetServices<IHostedService>().ToList();
        foreach (var service in hosted)
        {
            await service.StartAsync(Timeout);
        }

        var clicks = Enumerable.Range(0, 60).Select(i => Click("u" + (i % 3), i, i)).ToList();
        var expected = clicks.GroupBy(c => (c.User, Start: StreamEpoch.AddSeconds(c.At.ToUnixTimeSeconds() / 10 * 10)))
            .ToDictionary(g => g.Key, g => (long)g.Count());
        var sender = provider.GetRequiredService<IQueueSender>();
        foreach (var click in clicks)
        {
            await sender.SendAsync("clicks", click, Timeout);
        }

        var crashing = new CrashingStore(store, crashAfterWrites);
        crashing.Arm();
        var first = Pipeline(provider, new StoreStreamSnapshotStore(crashing, crashing, serializer), () => { })
            .RunAsync(Timeout);
        await crashing.Crashed.WaitAsync(Timeout);
        await first.Awaiting(f => f.WaitAsync(Timeout)).Should().ThrowAsync<Exception>("the store died under the pipeline");

        // What the committed snapshot holds: the counts of the messages it acknowledged.
        var healthy = new StoreStreamSnapshotStore(store.Documents, store.UnitOfWork!, serializer);
        var committed = (int)await CommittedCountAsync(store);
        var seenSecond = 0;
        using var arrived = new SemaphoreSlim(0);
        using var stop = new CancellationTokenSource();
        var second = Pipeline(provider, healthy, () =>
        {
            Interlocked.Increment(ref seenSecond);
            arrived.Release();
        }).RunAsync(stop.Token);
        for (var i = 0; i < clicks.Count - committed; i++)
        {
            await arrived.WaitAsync(Timeout);
        }

        // An element far ahead moves the watermark past every window, which fire; the graceful stop commits them.
        // Partitions keep a watermark each: then each user's partition gets one (in a window that never fires).
        string[] far = partitioned ? ["u0", "u1", "u2"] : ["z"];
        foreach (var user in far)
        {
            await sender.SendAsync("clicks", Click(user, 1_000, 1_000), Timeout);
            await arrived.WaitAsync(Timeout);
        }

        await stop.CancelAsync();
        await second.WaitAsync(Timeout);

        var documents = new Dictionary<(string, DateTimeOffset), long>();
        await foreach (var (_, bytes) in store.Documents.ListAsync("click-counts", Timeout))
        {
            var result = (WindowResult<string, long>)serializer.Deserialize(bytes, typeof(WindowResult<string, long>));
            documents.Add((result.Key, result.Start), result.Value);
        }

        documents.Should().BeEquivalentTo(expected, "each window's count includes every click once, however the crash fell");
        Volatile.Read(ref seenSecond).Should().Be(clicks.Count - committed + far.Length, "only the messages no committed snapshot included are delivered again");
        foreach (var service in hosted.AsEnumerable().Reverse())
        {
            await service.StopAsync(Timeout);
        }

        StreamPipeline Pipeline(IServiceProvider services, IStreamSnapshotStore snapshots, Action seen)
        {
            var source = DataStream.FromQueue<StreamClick>(services, "clicks", new StreamOptions { Name = "click-counter", SnapshotStore = snapshots, MaxUnacknowledged = 8 })
                .Select(c =>
                {
                    seen();
                    return c;
                });
            if (partitioned)
            {
                // Calls in flight and partitions that hold elements on their own tasks: a snapshot waits for them.
                source = source
                    .SelectAsync(async (c, ct) =>
                    {
                        await Task.Yield();
                        return c;
                    }, maxParallelism: 4)
                    .PartitionBy(c => c.User, 3);
            }

            return source
                .WithEventTime(c => c.At, TimeSpan.FromSeconds(100))
                .KeyBy(c => c.User)
                .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), name: "per-user")
                .Count()
                .Where(r => r.Key != "z")
                .ToDocuments("click-counts", r => $"{r.Key}/{r.Start.ToUnixTimeSeconds()}");
        }
    }

    /// <summary>The number of clicks counted in the committed snapshot's open windows (none fire before the far element).</summary>
    private async Task<long> CommittedCountAsync(EventStoreFixture store)
    {
        if (await store.Documents.GetAsync(StoreStreamSnapshotStore.Collection, "click-counter", Timeout) is not { } envelope)
        {
            return 0;
        }

        using var outer = JsonDocument.Parse(envelope);
        var total = 0L;
        foreach (var stage in outer.RootElement.GetProperty("operators").EnumerateObject().Where(o => o.Name.StartsWith("per-user", StringComparison.Ordinal)))
        {
            // One entry per partition ("per-user#p1") when the count is partitioned.
            using var state = JsonDocument.Parse(stage.Value.GetBytesFromBase64());
            total += state.RootElement.GetProperty("windows").EnumerateArray().Sum(w => w.GetProperty("accumulator").GetInt64());
        }

        return total;
    }

    private static StreamClick Click(string user, int second, int seq) => new(user, StreamEpoch.AddSeconds(second), seq);
}

/// <summary>A click of the streaming conformance tests.</summary>
/// <param name="User">The user.</param>
/// <param name="At">When it happened.</param>
/// <param name="Seq">Its number.</param>
public sealed record StreamClick(string User, DateTimeOffset At, int Seq);
