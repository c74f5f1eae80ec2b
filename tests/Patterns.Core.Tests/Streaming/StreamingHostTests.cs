using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Patterns.Core.Tests.Queues;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.Streaming;
using Patterns.Testing;
using Patterns.Transport;
using static Patterns.Core.Tests.Streaming.T;

namespace Patterns.Core.Tests.Streaming;

public sealed record ClickCount(string User, DateTimeOffset WindowStart, long Count);

public sealed class StreamingHostTests
{
    [Fact]
    public async Task AddStreaming_SubscriptionToWindowsToPublisher_RunsAsHostedService()
    {
        var counts = new ConcurrentQueue<ClickCount>();
        var received = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(b =>
        {
            b.AddPubSub(ps => ps.Subscribe<ClickCount>(
                (c, _, _) =>
                {
                    counts.Enqueue(c);
                    if (counts.Count == 3)
                    {
                        received.TrySetResult();
                    }

                    return default;
                },
                "click-counts",
                o => o.ConsumerGroup = "counts"));
            b.AddStreaming(s => s.AddPipeline("clicks", sp =>
                DataStream.FromSubscription<Click>(sp, "clicks.*", "click-stream")
                    .WithEventTime(c => c.At, TimeSpan.FromSeconds(1))
                    .KeyBy(c => c.User)
                    .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)))
                    .Count()
                    .Select(r => new ClickCount(r.Key, r.Start, r.Value))
                    .PublishTo(sp.GetRequiredService<IPublisher>(), "click-counts")));
        });
        var publisher = host.Services.GetRequiredService<IPublisher>();

        foreach (var click in new[] { C("a", 1), C("b", 2), C("a", 5), C("a", 12), C("b", 30) })
        {
            await publisher.PublishAsync($"clicks.{click.User}", click);
        }

        await received.Task.WaitAsync(TestHost.Wait);
        counts.Should().BeEquivalentTo([new ClickCount("a", S(0), 2), new ClickCount("b", S(0), 1), new ClickCount("a", S(10), 1)]);
        await host.StopAsync();
    }

    [Fact]
    public async Task StopAndStartAgain_PipelineResumesFromItsSnapshot()
    {
        var store = new InMemoryStreamSnapshotStore();
        var counts = new ConcurrentQueue<(string, double, double, long)>();
        var seen = 0;
        void Configure(HostApplicationBuilder b)
        {
            b.Services.AddSingleton<IStreamSnapshotStore>(store);
            b.AddMessageQueue(q => q.AddQueue("clicks"));
            b.AddStreaming(s => s.AddPipeline("resumable", sp =>
                DataStream.FromQueue<Click>(sp, "clicks")
                    .Select(c =>
                    {
                        Interlocked.Increment(ref seen);
                        return c;
                    })
                    .WithEventTime(c => c.At, TimeSpan.Zero)
                    .KeyBy(c => c.User)
                    .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)))
                    .Count()
                    .To(r => counts.Enqueue(Row(r)))));
        }

        using (var first = await TestHost.StartAsync(Configure))
        {
            var sender = first.Services.GetRequiredService<IQueueSender>();
            foreach (var click in new[] { C("a", 1), C("a", 2), C("a", 11) })
            {
                await sender.SendAsync("clicks", click);
            }

            await Eventually.HoldsAsync(() => Volatile.Read(ref seen) == 3);
            await first.StopAsync();
        }

        counts.Should().Equal(("a", 0, 10, 2));
        (await store.LoadAsync("resumable")).Should().NotBeNull();

        using (var second = await TestHost.StartAsync(Configure))
        {
            var sender = second.Services.GetRequiredService<IQueueSender>();
            await sender.SendAsync("clicks", C("a", 14));
            await sender.SendAsync("clicks", C("a", 25));
            await Eventually.HoldsAsync(() => counts.Count == 2);
            await second.StopAsync();
        }

        counts.Should().Equal(("a", 0, 10, 2), ("a", 10, 20, 2));
    }

    [Fact]
    public async Task FailingPipeline_EndsWithoutStoppingTheHostOrOtherPipelines()
    {
        var good = new ConcurrentQueue<int>();
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(b => b.AddStreaming(s => s
            .AddPipeline("bad", _ => DataStream.From(new[] { 1, 2, 3 }).Select(i => i == 2 ? throw new InvalidOperationException("boom") : i).To(_ => { }))
            .AddPipeline("good", _ => DataStream.From(Enumerable.Range(0, 100)).To(i =>
            {
                good.Enqueue(i);
                if (i == 99)
                {
                    done.TrySetResult();
                }
            }))));

        await done.Task.WaitAsync(TestHost.Wait);
        good.Should().HaveCount(100);
        await host.StopAsync();
    }

    [Fact]
    public async Task FromQueue_MessageOfAnotherType_DeadLetteredByTheTransport()
    {
        var clicks = new ConcurrentQueue<Click>();
        using var host = await TestHost.StartAsync(b =>
        {
            b.AddMessageQueue(q => q.AddQueue("mixed"));
            b.AddStreaming(s => s.AddPipeline("typed", sp => DataStream.FromQueue<Click>(sp, "mixed").To(clicks.Enqueue)));
        });
        var sender = host.Services.GetRequiredService<IQueueSender>();

        await sender.SendAsync("mixed", new Job(1));
        await sender.SendAsync("mixed", C("a", 1));

        var dead = await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "mixed", 1);
        dead[0].Reason.Should().Contain("received a body of type").And.Contain(nameof(Job));
        await Eventually.HoldsAsync(() => clicks.Count == 1);
    }

    [Fact]
    public async Task StartAsync_DuplicatePipelineNames_FailValidation()
    {
        using var host = TestHost.Build(b => b.AddStreaming(s => s
            .AddPipeline("same", _ => DataStream.From(new[] { 1 }).To(_ => { }))
            .AddPipeline("same", _ => DataStream.From(new[] { 2 }).To(_ => { }))));

        var act = () => host.StartAsync();

        (await act.Should().ThrowAsync<OptionsValidationException>()).Which.Failures.Should().ContainSingle(f => f.Contains("'same' is registered twice"));
    }
}
