using System.Collections.Concurrent;
using FluentAssertions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing.InMemory;
using Patterns.Messaging;
using Patterns.Outbox;
using Patterns.Storage;
using Xunit;

namespace Patterns.Core.Tests.Outbox;

/// <summary>The relay's in-memory hand-over of what its own process committed, and the store reads that cover the rest.</summary>
public sealed class OutboxHandoffTests
{
    private static OutboxMessage Message(string body) => new("q", OutboxMessageKind.Publish, new byte[] { (byte)body[0] });

    private static List<long> Take(OutboxHandoff handoff, long after, int max = 100)
    {
        var taken = new List<StoredOutboxMessage>();
        handoff.Take(after, max, taken);
        return taken.ConvertAll(m => m.Sequence);
    }

    [Fact]
    public void Take_GivesOnlyARunWithoutGapAfterThePosition_AndDropsWhatIsAtOrBelowIt()
    {
        var handoff = new OutboxHandoff();
        handoff.Open();
        var now = DateTimeOffset.UnixEpoch;
        handoff.Complete(handoff.Begin(), 3, [Message("a"), Message("b"), Message("c")], now); // 1, 2, 3
        handoff.Complete(handoff.Begin(), 6, [Message("e")], now);                              // 6: 4 and 5 are not here

        Take(handoff, 0, max: 2).Should().Equal(1, 2);
        Take(handoff, 2).Should().Equal(3);
        Take(handoff, 3).Should().BeEmpty("4 is missing: only the store can say whether it exists");
        handoff.HighestPending.Should().Be(6, "a message kept after a take that took nothing shows a gap");
        handoff.Complete(handoff.Begin(), 8, [Message("g")], now);
        handoff.DropThrough(6);
        handoff.HighestPending.Should().Be(8, "a store read that did not return 6 drops it, and nothing above it");
        Take(handoff, 8).Should().BeEmpty("8 is at the position the store read reached, so it is dropped");
        handoff.HighestPending.Should().Be(0);
    }

    [Fact]
    public void Complete_WhileClosedOrFailedOrFull_KeepsNothing()
    {
        var handoff = new OutboxHandoff();
        handoff.Complete(handoff.Begin(), 1, [Message("a")], default);
        handoff.Open();
        Take(handoff, 0).Should().BeEmpty("nothing is kept while no relay of the process owns the outbox");

        handoff.Complete(handoff.Begin(), 0, [Message("b")], default);
        Take(handoff, 0).Should().BeEmpty("a failed commit hands nothing over");

        var many = Enumerable.Range(0, OutboxHandoff.Capacity + 5).Select(_ => Message("c")).ToArray();
        handoff.Complete(handoff.Begin(), many.Length, many, default);
        Take(handoff, 0, max: int.MaxValue).Should().HaveCount(OutboxHandoff.Capacity, "the rest is read from the store");

        handoff.Complete(handoff.Begin(), many.Length + 1, [Message("d")], default);
        handoff.Close();
        Take(handoff, many.Length).Should().BeEmpty("closing drops what was kept");
    }

    [Fact]
    public void Settled_IsFalseUntilEveryCommitBegunUpToTheMarkHasEnded()
    {
        var handoff = new OutboxHandoff();
        handoff.Open();
        var first = handoff.Begin();
        var second = handoff.Begin();
        var mark = handoff.Mark;
        var later = handoff.Begin();

        handoff.Settled(mark).Should().BeFalse();
        handoff.Complete(second, 0, [], default);
        handoff.Settled(mark).Should().BeFalse();
        var changed = handoff.Changed;
        handoff.Complete(first, 0, [], default);
        changed.IsCompleted.Should().BeTrue("an ended commit wakes the relay");
        handoff.Settled(mark).Should().BeTrue("a commit begun after the mark does not hold it up");
        handoff.Settled(later).Should().BeFalse();
    }

    [Fact]
    public void Complete_ManyLargeUnits_KeepsNoMoreThanTheByteBudget()
    {
        var handoff = new OutboxHandoff(byteBudget: 10_000);
        handoff.Open();
        var large = new OutboxMessage("q", OutboxMessageKind.Publish, new byte[3_000]);
        for (var unit = 1; unit <= 50; unit++)
        {
            handoff.Complete(handoff.Begin(), unit * 2, [large, large], default);
            handoff.KeptBytes.Should().BeLessThanOrEqualTo(10_000);
        }

        handoff.KeptBytes.Should().Be(9_000, "three messages fit; over the budget nothing further is kept");
        Take(handoff, 0).Should().Equal(1, 2, 3);
        handoff.KeptBytes.Should().Be(0);
        handoff.HighestPending.Should().Be(0);

        handoff.Complete(handoff.Begin(), 102, [large, large], default);
        Take(handoff, 100).Should().Equal(101, 102); // taking freed the budget
        new OutboxHandoff().ByteBudget.Should().Be(16L * 1024 * 1024);
    }

    [Fact]
    public void Begin_WhileClosed_TakesNoTicket()
    {
        var handoff = new OutboxHandoff();
        var ticket = handoff.Begin();
        ticket.Should().Be(0);
        handoff.Idle.Should().BeTrue("no relay of this process waits for a commit while the handoff is closed");
        handoff.Mark.Should().Be(0);
        var changed = handoff.Changed;
        handoff.Complete(ticket, 1, [Message("a")], default);
        changed.IsCompleted.Should().BeFalse();
    }

    /// <summary>Starts a host whose relay publishes to "handoff.placed", over an in-memory store seen through <see cref="CountingOutbox"/> (and <see cref="GatedUnits"/>), and waits for the relay's first read.</summary>
    private static async Task<Relay> StartAsync(int expected, OutboxHandoff? handoff = null, TimeProvider? time = null, bool consecutive = true)
    {
        var store = new InMemoryEventStorage();
        var relay = new Relay(store, new CountingOutbox(store), new GatedUnits(store, consecutive));
        relay.Host = await TestHost.StartAsync(b =>
        {
            if (handoff is not null)
            {
                b.Services.AddSingleton(handoff);
            }

            b.AddEventSourcing(es => es.UseStorage(_ => store));
            b.AddOutbox(o => o.BatchSize = 16);
            b.Services.AddSingleton<IOutboxStore>(relay.Outbox);
            b.Services.AddSingleton<IUnitOfWorkStorage>(relay.Units);
            b.AddPubSub(ps => ps.Subscribe<OutboxOrderPlaced>((m, _, _) =>
            {
                relay.Received.Enqueue(m.OrderId);
                if (relay.Received.Count == expected)
                {
                    relay.All.TrySetResult();
                }

                return default;
            }, "handoff.placed", o => o.ConsumerGroup = "billing"));
        }, time, harness: false);
        await relay.Outbox.FirstRead.Task.WaitAsync(TestHost.Wait);
        return relay;
    }

    private static async Task<UnitOfWorkResult> PublishAsync(IHost host, int orderId)
    {
        await using var scope = host.Services.CreateAsyncScope();
        var session = scope.ServiceProvider.GetRequiredService<IStoreSession>();
        session.Publish("handoff.placed", new OutboxOrderPlaced(orderId, "c"), new MessageOptions { PartitionKey = "customer-1" });
        return await session.CommitAsync();
    }

    [Fact]
    public async Task Relay_SessionCommitsOfItsProcess_AreHandedOverWithoutReadingTheStoreAndRemoved()
    {
        const int Count = 100;
        var (store, outbox, _, received, all, host) = await StartAsync(Count);
        using var disposing = host;

        long last = 0;
        for (var i = 0; i < Count; i++)
        {
            last = (await PublishAsync(host, i)).LastOutboxSequence;
        }

        await all.Task.WaitAsync(TestHost.Wait);
        await outbox.RemovedThrough(last).WaitAsync(TestHost.Wait);

        received.Should().Equal(Enumerable.Range(0, Count));
        outbox.Reads.Should().Be(1, "only the read at start: the rest was handed over in memory");
        (await store.ReadOutboxAsync(0, 10)).Should().BeEmpty();
        await host.StopAsync();
    }

    [Fact]
    public async Task Relay_LowerSequenceHandedOverAfterAHigherOne_WaitsForItAndSendsBothOnceInOrder()
    {
        // Commit A gets sequence 1 but its session hears of it only after commit B (sequence 2) handed 2 over: the relay
        // must not send 2 first, nor remove the range through 2 before 1 was handed over.
        var (store, outbox, units, received, all, host) = await StartAsync(2);
        using var disposing = host;

        units.HoldNext();
        var first = PublishAsync(host, 1);
        await units.Held.Task.WaitAsync(TestHost.Wait); // A is committed (sequence 1), its session not told yet
        (await PublishAsync(host, 2)).LastOutboxSequence.Should().Be(2); // the order asserted below: 2 did not go first

        units.Release();
        (await first).LastOutboxSequence.Should().Be(1);
        await all.Task.WaitAsync(TestHost.Wait);
        await outbox.RemovedThrough(2).WaitAsync(TestHost.Wait);

        received.Should().Equal(1, 2);
        outbox.Reads.Should().Be(1, "the relay waited for the commit in progress rather than read the store");
        await host.StopAsync();
    }

    [Fact]
    public async Task Relay_CommitWhoseHandOverIsLost_IsReadFromTheStoreInOrderWithTheHandedOverOnes()
    {
        // Commit 2 is stored but its session fails before handing it over (as if the process lost it between commit and
        // hand-over); 1 and 3 are handed over. The relay must read 2 from the store, and send 1, 2, 3 once each, in order.
        var (store, outbox, units, received, all, host) = await StartAsync(3);
        using var disposing = host;

        await PublishAsync(host, 1);
        units.FailNextAfterCommit();
        await FluentActions.Awaiting(() => PublishAsync(host, 2)).Should().ThrowAsync<IOException>();
        await PublishAsync(host, 3);

        await all.Task.WaitAsync(TestHost.Wait);
        await outbox.RemovedThrough(3).WaitAsync(TestHost.Wait);
        received.Should().Equal(1, 2, 3);
        outbox.Reads.Should().BeGreaterThan(1, "2 was read from the store");
        (await store.ReadOutboxAsync(0, 10)).Should().BeEmpty();
        await host.StopAsync();
    }

    [Fact]
    public async Task Stop_WhileACommitOfItsProcessHangs_EndsTheRelay()
    {
        var (_, _, units, _, _, host) = await StartAsync(1);
        using var disposing = host;
        var relay = host.Services.GetRequiredService<OutboxRelay>();

        units.HoldNext();
        var held = PublishAsync(host, 1);
        await units.Held.Task.WaitAsync(TestHost.Wait);
        // The bound only tells a relay that waits for the held commit (which never ends here) from one that ends: 2 s was
        // too short for the host's whole stop on CI's two busy cores.
        using (var timeout = new CancellationTokenSource(TestHost.Wait))
        {
            await host.StopAsync(timeout.Token);
        }

        relay.Completion!.IsCompleted.Should().BeTrue("the relay ends when it is stopped, not when the commit it waited for ends");
        units.Release();
        await held;
    }

    [Fact]
    public async Task Relay_AnotherProcessesCommit_WhileACommitOfItsProcessHangs_IsReadWithinTheSettleWait()
    {
        var time = new TimerSignallingTime(OutboxRelay.MaxSettleWait);
        var (store, _, units, received, all, host) = await StartAsync(2, time: time);
        using var disposing = host;
        using var other = await TestHost.StartAsync(b =>
        {
            b.AddEventSourcing(es => es.UseStorage(_ => store));
            b.AddOutbox(o => o.RunRelay = false);
            b.AddPubSub(_ => { });
        }, time, harness: false);

        units.HoldNext();
        var held = PublishAsync(host, 1); // committed as 1, its session not told: the relay waits for it
        await units.Held.Task.WaitAsync(TestHost.Wait);
        (await PublishAsync(other, 2)).LastOutboxSequence.Should().Be(2);
        await time.Created.Task.WaitAsync(TestHost.Wait);
        time.Advance(OutboxRelay.MaxSettleWait);

        await all.Task.WaitAsync(TestHost.Wait);
        received.Should().Equal(1, 2);
        other.Services.GetRequiredService<OutboxHandoff>().Mark.Should().Be(0, "a process without a relay takes no tickets");
        units.Release();
        await held;
        await host.StopAsync();
    }

    [Fact]
    public async Task Relay_LargeMessagesOverTheByteBudget_ArriveOnceInOrderThroughTheStore()
    {
        const int Count = 40;
        var handoff = new OutboxHandoff(byteBudget: 600);
        var (store, outbox, units, received, all, host) = await StartAsync(Count, handoff);
        using var disposing = host;

        units.HoldNext();
        var held = PublishAsync(host, 0);
        await units.Held.Task.WaitAsync(TestHost.Wait);
        long last = 0;
        for (var i = 1; i < Count; i++)
        {
            last = (await PublishAsync(host, i)).LastOutboxSequence;
            handoff.KeptBytes.Should().BeLessThanOrEqualTo(600);
        }

        units.Release();
        await held;
        await all.Task.WaitAsync(TestHost.Wait);
        await outbox.RemovedThrough(last).WaitAsync(TestHost.Wait);
        received.Should().Equal(Enumerable.Range(0, Count));
        outbox.Reads.Should().BeGreaterThan(1, "what the handoff did not keep was read from the store");
        (await store.ReadOutboxAsync(0, 100)).Should().BeEmpty();
        await host.StopAsync();
    }

    [Fact]
    public async Task Relay_StoreWithoutConsecutiveNumbering_TakesNothingFromMemory()
    {
        const int Count = 5;
        var (store, outbox, _, received, all, host) = await StartAsync(Count, consecutive: false);
        using var disposing = host;

        for (var i = 0; i < Count; i++)
        {
            await PublishAsync(host, i);
        }

        await all.Task.WaitAsync(TestHost.Wait);
        received.Should().Equal(Enumerable.Range(0, Count));
        host.Services.GetRequiredService<OutboxHandoff>().Mark.Should().Be(0, "the handoff never opened: no commit took a ticket");
        outbox.Reads.Should().BeGreaterThan(1);
        await host.StopAsync();
    }

    /// <summary>A fake clock that signals when a timer of <paramref name="due"/> is created (the relay's settle wait).</summary>
    private sealed class TimerSignallingTime(TimeSpan due) : FakeTimeProvider
    {
        public TaskCompletionSource Created { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = base.CreateTimer(callback, state, dueTime, period);
            if (dueTime == due)
            {
                Created.TrySetResult();
            }

            return timer;
        }
    }

    /// <summary>A started relay's host, its store seen through the wrappers, and what its subscriber received.</summary>
    private sealed record Relay(InMemoryEventStorage Store, CountingOutbox Outbox, GatedUnits Units)
    {
        public ConcurrentQueue<int> Received { get; } = new();

        public TaskCompletionSource All { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public IHost Host { get; set; } = null!;

        public void Deconstruct(out InMemoryEventStorage store, out CountingOutbox outbox, out GatedUnits units, out ConcurrentQueue<int> received, out TaskCompletionSource all, out IHost host) =>
            (store, outbox, units, received, all, host) = (Store, Outbox, Units, Received, All, Host);
    }

    /// <summary>The store's outbox, counting reads and recording removals.</summary>
    private sealed class CountingOutbox(InMemoryEventStorage store) : IOutboxStore
    {
        private readonly ConcurrentDictionary<long, TaskCompletionSource> _removals = new();
        private long _removedThrough;
        private int _reads;

        public TaskCompletionSource FirstRead { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Reads => Volatile.Read(ref _reads);

        public Task RemovedThrough(long sequence)
        {
            var signal = _removals.GetOrAdd(sequence, static _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
            if (Interlocked.Read(ref _removedThrough) >= sequence)
            {
                signal.TrySetResult();
            }

            return signal.Task;
        }

        public async ValueTask<IReadOnlyList<StoredOutboxMessage>> ReadOutboxAsync(long afterSequence, int maxCount, CancellationToken cancellationToken = default)
        {
            var batch = await store.ReadOutboxAsync(afterSequence, maxCount, cancellationToken);
            Interlocked.Increment(ref _reads);
            FirstRead.TrySetResult();
            return batch;
        }

        public ValueTask<long> DeleteOutboxAsync(long throughSequence, Lease? fence = null, CancellationToken cancellationToken = default) =>
            DeleteOutboxRangeAsync(0, throughSequence, fence, cancellationToken);

        public async ValueTask<long> DeleteOutboxRangeAsync(long afterSequence, long throughSequence, Lease? fence = null, CancellationToken cancellationToken = default)
        {
            var removed = await ((IOutboxStore)store).DeleteOutboxRangeAsync(afterSequence, throughSequence, fence, cancellationToken);
            long seen;
            while ((seen = Interlocked.Read(ref _removedThrough)) < throughSequence && Interlocked.CompareExchange(ref _removedThrough, throughSequence, seen) != seen)
            {
            }

            foreach (var (sequence, signal) in _removals)
            {
                if (sequence <= throughSequence)
                {
                    signal.TrySetResult();
                }
            }

            return removed;
        }

        public ValueTask WaitForOutboxAsync(long afterSequence, CancellationToken cancellationToken) => store.WaitForOutboxAsync(afterSequence, cancellationToken);
    }

    /// <summary>Units of work that commit in the store, then may hold their caller (until released) or fail it.</summary>
    private sealed class GatedUnits(InMemoryEventStorage store, bool consecutive) : IUnitOfWorkStorage
    {
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private TaskCompletionSource? _gate;
        private bool _fail;

        public TaskCompletionSource Held { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void HoldNext() => _gate = _release;

        public void Release() => _release.TrySetResult();

        public void FailNextAfterCommit() => _fail = true;

        public bool NumbersOutboxConsecutively => consecutive;

        public async ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default)
        {
            var gate = Interlocked.Exchange(ref _gate, null);
            var result = await store.CommitAsync(work, cancellationToken);
            if (gate is not null)
            {
                Held.TrySetResult();
                await gate.Task;
            }

            if (_fail)
            {
                _fail = false;
                throw new IOException("The connection broke after the commit.");
            }

            return result;
        }
    }
}
