using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
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
/// A transport source gives messages back to the transport without counting a delivery when nothing failed (a graceful
/// stop, a snapshot that could not take them), and a message given back is checked against the inbox when it comes
/// again, since a committed snapshot may include it.
/// </summary>
public sealed class TransportSourceHandBackTests
{
    private const int Messages = 40;
    private const int Stops = 5;

    [Fact]
    public async Task GracefulStops_WithMessagesInFlight_HandThemBackUncountedAndApplyEachOnce()
    {
        var storage = new InMemoryEventStorage(new InMemoryEventStorageOptions());
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddQueue("clicks")));
        var harness = host.Harness();
        var snapshots = new StoreStreamSnapshotStore(storage, storage, host.Services.GetRequiredService<IMessageSerializer>());
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var i = 0; i < Messages; i++)
        {
            await sender.SendAsync("clicks", C("a", i));
        }

        var applied = new ConcurrentQueue<double>();
        for (var run = 0; run < Stops; run++)
        {
            await RunUntilStoppedAsync(host.Services, snapshots, applied, beforeStop: null);
        }

        await RunToTheEndAsync(host.Services, snapshots, applied);

        applied.Should().OnlyHaveUniqueItems("a message is applied once, however often the stream stopped with it in flight")
            .And.HaveCount(Messages);
        harness.Deliveries.Should().Contain(d => d.Outcome == SettlementKind.Retry, "the stops found messages in flight and handed them back");
        harness.Deliveries.Should().OnlyContain(
            d => d.Envelope.DeliveryCount == 0 && d.Outcome != SettlementKind.DeadLetter,
            "a message given back on a graceful stop was not handled: no delivery is counted, no retry budget burned");
        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync("clicks")).Should().BeEmpty();
        await host.StopAsync();
    }

    /// <summary>
    /// The end-of-run snapshot commits, but its commit reports a failure (a connection lost after COMMIT): the messages it
    /// includes go back uncounted, and when they come again the inbox shows that they are included, so none is applied twice.
    /// </summary>
    [Fact]
    public async Task CommitThatLandsButReportsFailure_MessagesGivenBack_AreNotAppliedAgain()
    {
        var storage = new InMemoryEventStorage(new InMemoryEventStorageOptions());
        var units = new FailAfterCommit(storage);
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddQueue("clicks")));
        var harness = host.Harness();
        var snapshots = new StoreStreamSnapshotStore(storage, units, host.Services.GetRequiredService<IMessageSerializer>());
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var i = 0; i < Messages; i++)
        {
            await sender.SendAsync("clicks", C("a", i));
        }

        var applied = new ConcurrentQueue<double>();
        var failed = async () => await RunUntilStoppedAsync(host.Services, snapshots, applied, beforeStop: units.Arm);
        await failed.Should().ThrowAsync<InvalidOperationException>().WithMessage("*after the commit*");
        units.Landed.Should().BeTrue("the end-of-run snapshot committed before the failure was reported");
        var includedBefore = applied.Count;

        await RunToTheEndAsync(host.Services, snapshots, applied);

        includedBefore.Should().BeGreaterThan(0);
        applied.Should().OnlyHaveUniqueItems("the messages the landed snapshot includes came back and must be recognised")
            .And.HaveCount(Messages);
        harness.Deliveries.Should().OnlyContain(d => d.Envelope.DeliveryCount == 0 && d.Outcome != SettlementKind.DeadLetter);
        harness.Deliveries.Should().Contain(
            d => d.Outcome == SettlementKind.Ack && d.Envelope.Headers != null && d.Envelope.Headers.ContainsKey(EnvelopeHeaders.Released),
            "a message given back comes again marked, and is acknowledged as included");
        await host.StopAsync();
    }

    /// <summary>
    /// An ordinary stage failure (a Stop policy) is the message's fault, not the stream's: the messages held go back with a
    /// counted delivery, so that a poison message reaches the dead-letter queue instead of coming back uncounted forever.
    /// </summary>
    [Fact]
    public async Task StageFailure_HandsTheMessageBackCounted()
    {
        var storage = new InMemoryEventStorage(new InMemoryEventStorageOptions());
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddQueue("clicks")));
        var harness = host.Harness();
        var snapshots = new StoreStreamSnapshotStore(storage, storage, host.Services.GetRequiredService<IMessageSerializer>());
        await host.Services.GetRequiredService<IQueueSender>().SendAsync("clicks", C("a", 1));

        for (var run = 1; run <= 2; run++)
        {
            var pipeline = DataStream.FromQueue<Click>(host.Services, "clicks", new StreamOptions
            {
                Name = "poison",
                SnapshotStore = snapshots,
                MaxUnacknowledged = 4,
            }).Select<Click>(_ => throw new FormatException("poison")).To(_ => { });
            var failed = async () => await pipeline.RunAsync(CancellationToken.None).WaitAsync(TestHost.Wait);
            await failed.Should().ThrowAsync<FormatException>();
            await harness.WaitForDeliveriesAsync(run);
        }

        harness.Deliveries.Select(d => d.Envelope.DeliveryCount).Should().Equal([0, 1], "each failed handling counts a delivery");
        harness.Deliveries.Should().OnlyContain(d => d.Outcome != SettlementKind.Ack);
        await host.StopAsync();
    }

    /// <summary>
    /// A snapshot that cannot be built (window state that does not serialise) fails the same way each time: the messages
    /// it held go back counted, like a stage failure, instead of coming back uncounted forever as after a store failure.
    /// </summary>
    [Fact]
    public async Task SnapshotThatCannotBeBuilt_HandsTheMessageBackCounted()
    {
        var storage = new InMemoryEventStorage(new InMemoryEventStorageOptions());
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddQueue("clicks")));
        var harness = host.Harness();
        var snapshots = new StoreStreamSnapshotStore(storage, storage, new UnserialisableState(host.Services.GetRequiredService<IMessageSerializer>()));
        await host.Services.GetRequiredService<IQueueSender>().SendAsync("clicks", C("a", 1));

        for (var run = 1; run <= 2; run++)
        {
            var taken = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var stop = new CancellationTokenSource();
            var pipeline = DataStream.FromQueue<Click>(host.Services, "clicks", new StreamOptions
            {
                Name = "unserialisable",
                SnapshotStore = snapshots,
                MaxUnacknowledged = 4,
            })
                .Select(c =>
                {
                    taken.TrySetResult();
                    return c;
                })
                .WithEventTime(c => c.At, TimeSpan.Zero)
                .KeyBy(c => c.User)
                .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), name: "per-user")
                .Count()
                .To(_ => { });
            var running = pipeline.RunAsync(stop.Token);
            await Task.WhenAny(taken.Task, running).WaitAsync(TestHost.Wait);
            await stop.CancelAsync();
            var failed = async () => await running.WaitAsync(TestHost.Wait);
            await failed.Should().ThrowAsync<NotSupportedException>();
            await harness.WaitForDeliveriesAsync(run);
        }

        harness.Deliveries.Select(d => d.Envelope.DeliveryCount).Should().Equal([0, 1], "a snapshot that cannot be built counts a delivery");
        await host.StopAsync();
    }

    private static StreamPipeline Pipeline(IServiceProvider services, IStreamSnapshotStore snapshots, Func<Click, CancellationToken, ValueTask> sink) =>
        DataStream.FromQueue<Click>(services, "clicks", new StreamOptions
        {
            Name = "hand-back",
            SnapshotStore = snapshots,
            MaxUnacknowledged = 4,
            BufferCapacity = 2,
        }).To(sink);

    /// <summary>
    /// Runs the pipeline until its sink holds the first message of the run, with the next ones in flight behind it, then
    /// stops it gracefully.
    /// </summary>
    private static async Task RunUntilStoppedAsync(IServiceProvider services, IStreamSnapshotStore snapshots, ConcurrentQueue<double> applied, Action? beforeStop)
    {
        using var stop = new CancellationTokenSource();
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stopped = stop.Token.Register(() => go.TrySetResult());
        var first = 0;
        var pipeline = Pipeline(services, snapshots, async (c, ct) =>
        {
            applied.Enqueue((c.At - Zero).TotalSeconds);
            if (Interlocked.Exchange(ref first, 1) == 0)
            {
                holding.TrySetResult();
                await go.Task.WaitAsync(ct);
            }
        });

        var running = pipeline.RunAsync(stop.Token);
        await Task.WhenAny(holding.Task, running).WaitAsync(TestHost.Wait);
        beforeStop?.Invoke();
        await stop.CancelAsync();
        await running.WaitAsync(TestHost.Wait);
    }

    private static async Task RunToTheEndAsync(IServiceProvider services, IStreamSnapshotStore snapshots, ConcurrentQueue<double> applied)
    {
        using var stop = new CancellationTokenSource();
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (applied.Distinct().Count() >= Messages)
        {
            all.TrySetResult();
        }

        var pipeline = Pipeline(services, snapshots, (c, _) =>
        {
            applied.Enqueue((c.At - Zero).TotalSeconds);
            if (applied.Distinct().Count() >= Messages)
            {
                all.TrySetResult();
            }

            return default;
        });

        var running = pipeline.RunAsync(stop.Token);
        await Task.WhenAny(all.Task, running).WaitAsync(TestHost.Wait);
        await stop.CancelAsync();
        await running.WaitAsync(TestHost.Wait);
    }

    /// <summary>A serializer for the snapshot store that cannot write state (reading still works).</summary>
    private sealed class UnserialisableState(IMessageSerializer inner) : IMessageSerializer
    {
        public string ContentType => inner.ContentType;

        public void Serialize(System.Buffers.IBufferWriter<byte> writer, object value, Type type) =>
            throw new NotSupportedException($"{type.Name} does not serialise.");

        public object Deserialize(ReadOnlyMemory<byte> payload, Type type) => inner.Deserialize(payload, type);
    }

    /// <summary>A store whose armed commit lands and then reports a failure, as a connection lost after COMMIT would.</summary>
    private sealed class FailAfterCommit(InMemoryEventStorage inner) : IUnitOfWorkStorage, IInboxStore
    {
        private int _armed;
        private volatile bool _landed;

        public bool Landed => _landed;

        public void Arm() => Volatile.Write(ref _armed, 1);

        public async ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default)
        {
            var result = await inner.CommitAsync(work, cancellationToken);
            if (Interlocked.Exchange(ref _armed, 0) == 1)
            {
                _landed = true;
                throw new InvalidOperationException("The connection was lost after the commit was sent.");
            }

            return result;
        }

        public ValueTask<bool> ContainsAsync(string consumer, string messageId, CancellationToken cancellationToken = default) =>
            inner.ContainsAsync(consumer, messageId, cancellationToken);

        public ValueTask<bool> TryMarkHandledAsync(string consumer, string messageId, CancellationToken cancellationToken = default) =>
            inner.TryMarkHandledAsync(consumer, messageId, cancellationToken);

        public ValueTask<long> PruneAsync(DateTimeOffset olderThan, CancellationToken cancellationToken = default) =>
            inner.PruneAsync(olderThan, cancellationToken);
    }
}
