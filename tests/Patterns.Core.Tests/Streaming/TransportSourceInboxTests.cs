using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing.InMemory;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.Serialization;
using Patterns.Storage;
using Patterns.Streaming;
using Patterns.Testing;
using Patterns.Transport;
using static Patterns.Core.Tests.Streaming.T;

namespace Patterns.Core.Tests.Streaming;

/// <summary>
/// A transport source on a durable snapshot store records the ids its snapshots include in the store's inbox, so that a
/// message delivered again (its acknowledgement lost) is not counted twice.
/// </summary>
public sealed class TransportSourceInboxTests
{
    /// <summary>
    /// A copy of a held message whose inbox read misses the snapshot that commits the held one a moment later: the copy
    /// must not enter the pipeline. (Found by the streaming kill test on RabbitMQ and PostgreSQL: the copy was taken
    /// again, and the next snapshot's unit of work failed on its inbox claim, stopping the pipeline.)
    /// </summary>
    [Fact]
    public async Task CopyWhoseInboxReadRacesTheHeldOnesCommit_IsAcknowledgedWithoutEnteringThePipeline()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var storage = new InMemoryEventStorage(new InMemoryEventStorageOptions(), time);
        var inbox = new GatedInbox(storage);
        var taken = new ConcurrentQueue<Click>();
        var tookTwo = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var tookOne = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(
            b =>
            {
                b.Services.AddSingleton<IStreamSnapshotStore>(sp => new StoreStreamSnapshotStore(storage, inbox, sp.GetRequiredService<IMessageSerializer>()));
                b.AddMessageQueue(q => q.AddQueue("clicks"));
                b.AddStreaming(s => s.AddPipeline("held", sp =>
                    DataStream.FromQueue<Click>(sp, "clicks", new StreamOptions { SnapshotInterval = TimeSpan.FromSeconds(5) })
                        .To(c =>
                        {
                            taken.Enqueue(c);
                            (taken.Count == 1 ? tookOne : tookTwo).TrySetResult();
                        })));
            },
            time);
        var harness = host.Harness();

        await host.Services.GetRequiredService<IQueueSender>().SendAsync("clicks", C("a", 1));
        await tookOne.Task.WaitAsync(TestHost.Wait);
        var original = harness.Sent.Single().Envelope;

        // The copy reads the inbox before the held message's snapshot commits, and goes on only after it has.
        inbox.Arm();
        await host.Services.GetRequiredService<MessageTransport>().SendAsync("clicks", original with { DeliveryCount = 1 });
        await inbox.Reading.Task.WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromSeconds(5));
        await harness.WaitForDeliveriesAsync(1);
        harness.Deliveries[0].Should().Match<RecordedDelivery>(d => d.Envelope.DeliveryCount == 0 && d.Outcome == SettlementKind.Ack, "the snapshot that includes it committed");
        inbox.Proceed();

        await Task.WhenAny(harness.WaitForDeliveriesAsync(2), tookTwo.Task).WaitAsync(TestHost.Wait);
        taken.Should().ContainSingle("the committed snapshot includes the message; its copy must not be counted again");
        await harness.WaitForDeliveriesAsync(2);
        harness.Deliveries[1].Should().Match<RecordedDelivery>(d => d.Envelope.DeliveryCount == 1 && d.Outcome == SettlementKind.Ack);
        (await storage.ContainsAsync("stream:held", original.MessageId.ToString())).Should().BeTrue();

        fake.Advance(TimeSpan.FromSeconds(5));
        await host.StopAsync();
        taken.Should().ContainSingle();
        harness.Deliveries.Should().OnlyContain(d => d.Exception == null);
    }

    /// <summary>
    /// A copy sent again (a producer's retry, an outbox relay that published before a crash) arrives as a first delivery,
    /// so the source takes it without reading the inbox. The snapshot that would count it twice fails on its inbox claim;
    /// the run must start again from the last snapshot and count the message once, not stop for good.
    /// </summary>
    [Fact]
    public async Task CopySentAgainAfterItsSnapshotCommitted_RunStartsAgainFromTheSnapshotAndCountsItOnce()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var storage = new InMemoryEventStorage(new InMemoryEventStorageOptions(), time);
        var taken = 0;
        using var host = await TestHost.StartAsync(
            b =>
            {
                b.Services.AddSingleton<IStreamSnapshotStore>(sp => new StoreStreamSnapshotStore(storage, storage, sp.GetRequiredService<IMessageSerializer>()));
                b.AddMessageQueue(q => q.AddQueue("clicks"));
                b.AddStreaming(s => s.AddPipeline("counted", sp =>
                    DataStream.FromQueue<Click>(sp, "clicks", new StreamOptions { SnapshotInterval = TimeSpan.FromSeconds(5) })
                        .Select(c =>
                        {
                            Interlocked.Increment(ref taken);
                            return c;
                        })
                        .WithEventTime(c => c.At, TimeSpan.Zero)
                        .KeyBy(c => c.User)
                        .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)))
                        .Count()
                        .Select(r => new ClickCount(r.Key, r.Start, r.Value))
                        .ToDocuments("counts", c => $"{c.User}/{(c.WindowStart - Zero).TotalSeconds}")));
            },
            time);
        var harness = host.Harness();
        var sender = host.Services.GetRequiredService<IQueueSender>();
        var id = Guid.NewGuid();

        await sender.SendAsync("clicks", C("a", 1), new MessageOptions { MessageId = id });
        await Eventually.HoldsAsync(() => Volatile.Read(ref taken) == 1);
        fake.Advance(TimeSpan.FromSeconds(5));
        await harness.WaitForDeliveriesAsync(1);
        Settled(harness, 0).Should().Be((0, SettlementKind.Ack), "the snapshot that includes the click committed");

        await sender.SendAsync("clicks", C("a", 1), new MessageOptions { MessageId = id });
        await Eventually.HoldsAsync(() => Volatile.Read(ref taken) == 2);
        fake.Advance(TimeSpan.FromSeconds(5));
        await harness.WaitForDeliveriesAsync(3);
        Settled(harness, 1).Should().Be((0, SettlementKind.Retry), "the snapshot that took the copy failed, and the run handed it back uncounted");
        Settled(harness, 2).Should().Be((0, SettlementKind.Ack), "the run started again, and the copy, marked as released, is in the inbox");
        harness.Deliveries[2].Envelope.TryGetHeader(EnvelopeHeaders.Released, out _).Should().BeTrue();

        await sender.SendAsync("clicks", C("a", 12));
        await Eventually.HoldsAsync(() =>
        {
            fake.Advance(TimeSpan.FromSeconds(5));
            return storage.GetAsync("counts", "a/0").AsTask().Result is not null;
        });
        using var document = System.Text.Json.JsonDocument.Parse((await storage.GetAsync("counts", "a/0"))!);
        document.RootElement.EnumerateObject().Single(p => p.NameEquals("count") || p.NameEquals("Count")).Value.GetInt64()
            .Should().Be(1, "the copy is counted once");
        Volatile.Read(ref taken).Should().Be(3, "the copy entered the pipeline once, before the run started again");
        await host.StopAsync();
    }

    private static (int DeliveryCount, SettlementKind Outcome) Settled(PatternsTestHarness harness, int index) =>
        (harness.Deliveries[index].Envelope.DeliveryCount, harness.Deliveries[index].Outcome);

    /// <summary>The store's inbox, whose next read can be held after it has looked (as a slow read would be).</summary>
    private sealed class GatedInbox(InMemoryEventStorage inner) : IUnitOfWorkStorage, IInboxStore
    {
        private readonly TaskCompletionSource _proceed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _armed;

        public TaskCompletionSource Reading { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Arm() => Volatile.Write(ref _armed, 1);

        public void Proceed() => _proceed.TrySetResult();

        public ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default) =>
            inner.CommitAsync(work, cancellationToken);

        public async ValueTask<bool> ContainsAsync(string consumer, string messageId, CancellationToken cancellationToken = default)
        {
            var contains = await inner.ContainsAsync(consumer, messageId, cancellationToken);
            if (Interlocked.Exchange(ref _armed, 0) == 1)
            {
                Reading.TrySetResult();
                await _proceed.Task.WaitAsync(cancellationToken);
            }

            return contains;
        }

        public ValueTask<bool> TryMarkHandledAsync(string consumer, string messageId, CancellationToken cancellationToken = default) =>
            inner.TryMarkHandledAsync(consumer, messageId, cancellationToken);

        public ValueTask<long> PruneAsync(DateTimeOffset olderThan, CancellationToken cancellationToken = default) =>
            inner.PruneAsync(olderThan, cancellationToken);
    }
}
