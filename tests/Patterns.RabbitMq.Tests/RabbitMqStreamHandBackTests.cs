using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.EventSourcing.InMemory;
using Patterns.Queues;
using Patterns.Serialization;
using Patterns.Streaming;
using Patterns.Testing;
using Patterns.Transport;

namespace Patterns.RabbitMq.Tests;

/// <summary>
/// A stream fed by a queue on the broker, with a durable snapshot store, stopped gracefully again and again with messages
/// in flight: the messages it gives back are not counted as deliveries (the broker republishes them with their count),
/// none is dead-lettered, and none is applied twice.
/// </summary>
public sealed class RabbitMqStreamHandBackTests
{
    private const int Messages = 30;
    private const int Stops = 5;

    [Fact]
    public Task GracefulStops_WithMessagesInFlight_HandThemBackUncountedAndApplyEachOnce() => StopAgainAndAgainAsync(refuseEveryOtherCopy: false);

    /// <summary>
    /// The same, with every other hand-back's copy refused by the broker (a test hook), so those messages go back by a
    /// plain requeue, which the broker marks redelivered: they still come again uncounted and marked, and apply once.
    /// </summary>
    [Fact]
    public Task GracefulStops_WhenHandBacksFallBackToARequeue_StillUncountedAndApplyEachOnce() => StopAgainAndAgainAsync(refuseEveryOtherCopy: true);

    private static async Task StopAgainAndAgainAsync(bool refuseEveryOtherCopy)
    {
        await Broker.RequireAsync();
        var prefix = Broker.Prefix("stream-handback");
        var copies = 0;
        await using var receiver = await RabbitHost.StartWithPrefixAsync(
            prefix,
            b =>
            {
                b.AddPatterns(p => p.UseTestHarness());
                b.AddMessageQueue(q => q.AddQueue("work"));
            },
            o => o.RedeliveryFault = refuseEveryOtherCopy ? _ => Interlocked.Increment(ref copies) % 2 == 0 : null);
        await using var sender = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddPatterns());
        var harness = receiver.Get<PatternsTestHarness>();
        var storage = new InMemoryEventStorage(new InMemoryEventStorageOptions());
        var snapshots = new StoreStreamSnapshotStore(storage, storage, receiver.Get<IMessageSerializer>());
        for (var i = 0; i < Messages; i++)
        {
            await sender.Get<IQueueSender>().SendAsync("work", new WorkItem(i));
        }

        var applied = new ConcurrentQueue<int>();
        for (var run = 0; run < Stops; run++)
        {
            using var stop = new CancellationTokenSource();
            var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var stopped = stop.Token.Register(() => go.TrySetResult());
            var first = 0;
            var running = Pipeline(receiver.Services, snapshots, async (w, ct) =>
            {
                applied.Enqueue(w.Number);
                if (Interlocked.Exchange(ref first, 1) == 0)
                {
                    holding.TrySetResult();
                    await go.Task.WaitAsync(ct);
                }
            }).RunAsync(stop.Token);
            await Task.WhenAny(holding.Task, running).WaitAsync(RabbitHost.Wait);
            await stop.CancelAsync();
            await running.WaitAsync(RabbitHost.Wait);
        }

        using (var stop = new CancellationTokenSource())
        {
            var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var running = Pipeline(receiver.Services, snapshots, (w, _) =>
            {
                applied.Enqueue(w.Number);
                if (applied.Distinct().Count() >= Messages)
                {
                    all.TrySetResult();
                }

                return default;
            }).RunAsync(stop.Token);
            if (applied.Distinct().Count() >= Messages)
            {
                all.TrySetResult();
            }

            await Task.WhenAny(all.Task, running).WaitAsync(RabbitHost.Wait);
            await stop.CancelAsync();
            await running.WaitAsync(RabbitHost.Wait);
        }

        applied.Should().OnlyHaveUniqueItems("a message is applied once, however often the stream stopped with it in flight")
            .And.HaveCount(Messages);
        harness.Deliveries.Should().Contain(d => d.Outcome == SettlementKind.Retry, "the stops found messages in flight and handed them back");
        harness.Deliveries.Should().OnlyContain(
            d => d.Envelope.DeliveryCount == 0 && d.Outcome != SettlementKind.DeadLetter,
            "a message given back on a graceful stop was not handled: no delivery is counted, no retry budget burned");
        (await receiver.Get<IDeadLetterQueue>().PeekAsync("work")).Should().BeEmpty();
        if (refuseEveryOtherCopy)
        {
            Volatile.Read(ref copies).Should().BeGreaterThan(0, "the first hand-back fell back to a requeue");
        }
    }

    private static StreamPipeline Pipeline(IServiceProvider services, StoreStreamSnapshotStore snapshots, Func<WorkItem, CancellationToken, ValueTask> sink) =>
        DataStream.FromQueue<WorkItem>(services, "work", new StreamOptions
        {
            Name = "work-hand-back",
            SnapshotStore = snapshots,
            MaxUnacknowledged = 4,
            BufferCapacity = 2,
        }).To(sink);
}
