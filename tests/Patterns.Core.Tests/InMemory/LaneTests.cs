using System.Threading.Channels;
using FluentAssertions;
using Patterns.InMemory;
using Patterns.Messaging;
using Xunit;

namespace Patterns.Core.Tests.InMemory;

public sealed class LaneTests
{
    [Fact]
    public void TryWrite_FullLane_ReturnsFalseAtCapacity()
    {
        var lane = new Lane(3, owner: null);

        Enumerable.Range(0, 3).Select(i => lane.TryWrite(Item(i))).ToArray().Should().AllBeEquivalentTo(true);

        lane.TryWrite(Item(3)).Should().BeFalse();
    }

    [Fact]
    public void TryTake_TakesEverythingInWriteOrder_AndCountsWhatIsNotHandedOutAgainstCapacity()
    {
        var lane = new Lane(4, owner: null);
        for (var i = 0; i < 4; i++)
        {
            lane.TryWrite(Item(i)).Should().BeTrue();
        }

        lane.TryTake(out var batch, out var count).Should().BeTrue();

        Bodies(batch, count).Should().Equal(0, 1, 2, 3);
        lane.TryWrite(Item(4)).Should().BeFalse("the four taken envelopes have not reached a handler yet");
        lane.MarkHandedOut(1);
        lane.TryWrite(Item(4)).Should().BeTrue();
        lane.TryWrite(Item(5)).Should().BeFalse();
    }

    [Fact]
    public void TryTake_ManyBatchesOfChangingSize_KeepsOrderAcrossBufferReuseAndGrowth()
    {
        var lane = new Lane(100, owner: null);
        var seen = new List<int>();
        var next = 0;
        foreach (var size in new[] { 1, 17, 100, 3, 64, 99, 2, 100, 40 })
        {
            for (var i = 0; i < size; i++)
            {
                lane.TryWrite(Item(next++)).Should().BeTrue();
            }

            lane.TryTake(out var batch, out var count).Should().BeTrue();
            seen.AddRange(Bodies(batch, count));
            lane.MarkHandedOut(count);
        }

        lane.TryTake(out _, out _).Should().BeFalse();
        seen.Should().Equal(Enumerable.Range(0, next));
    }

    [Fact]
    public async Task WriteAsync_FullLane_WaitsUntilTheWorkerHandsAnEnvelopeOut()
    {
        var lane = new Lane(2, owner: null);
        lane.TryWrite(Item(0));
        lane.TryWrite(Item(1));
        lane.TryTake(out _, out _).Should().BeTrue();

        var write = lane.WriteAsync(Item(2), CancellationToken.None).AsTask();
        write.IsCompleted.Should().BeFalse();

        lane.MarkHandedOut(1);
        await write.WaitAsync(TestHost.Wait);

        lane.TryWrite(Item(3)).Should().BeFalse("one taken envelope and the written one fill the lane");
    }

    [Fact]
    public async Task WriteAsync_ManyWritersWaiting_EachFreedPlaceWakesOneOfThem_FirstInLineFirst()
    {
        var lane = new Lane(2, owner: null);
        lane.TryWrite(Item(0));
        lane.TryWrite(Item(1));
        lane.TryTake(out _, out _).Should().BeTrue();
        var writes = Enumerable.Range(2, 6).Select(i => lane.WriteAsync(Item(i), CancellationToken.None).AsTask()).ToList();
        writes.Should().OnlyContain(w => !w.IsCompleted);

        lane.MarkHandedOut(1);
        await writes[0].WaitAsync(TestHost.Wait);
        lane.MarkHandedOut(2);
        await writes[1].WaitAsync(TestHost.Wait);

        lane.WritersWoken.Should().Be(2, "one place freed up each time: waking the other waiting senders would only send them back to wait");
        writes.Skip(2).Should().OnlyContain(w => !w.IsCompleted);
        lane.TryTake(out var batch, out var count).Should().BeTrue();
        Bodies(batch, count).Should().Equal(2, 3);
        lane.MarkHandedOut(2);
        await Task.WhenAll(writes.Skip(2).Take(2)).WaitAsync(TestHost.Wait);
        lane.TryTake(out batch, out count).Should().BeTrue();
        Bodies(batch, count).Should().BeEquivalentTo([4, 5], "the two first in line were woken for the two freed places (they append in either order)");
        lane.WritersWoken.Should().Be(4);
        writes.Skip(4).Should().OnlyContain(w => !w.IsCompleted);
    }

    [Fact]
    public async Task WriteAsync_AWaitingWriterGivesUp_TheNextOneTakesTheFreedPlace()
    {
        var lane = new Lane(1, owner: null);
        lane.TryWrite(Item(0));
        lane.TryTake(out _, out _).Should().BeTrue();
        using var cancel = new CancellationTokenSource();
        var gaveUp = lane.WriteAsync(Item(1), cancel.Token).AsTask();
        var next = lane.WriteAsync(Item(2), CancellationToken.None).AsTask();
        await cancel.CancelAsync();
        await gaveUp.Invoking(w => w.WaitAsync(TestHost.Wait)).Should().ThrowAsync<OperationCanceledException>();

        lane.MarkHandedOut(1);

        await next.WaitAsync(TestHost.Wait);
        lane.TryTake(out var batch, out var count).Should().BeTrue();
        Bodies(batch, count).Should().Equal(2);
    }

    [Fact]
    public async Task WriteAsync_Cancelled_ThrowsOperationCanceled()
    {
        var lane = new Lane(1, owner: null);
        lane.TryWrite(Item(0));
        using var cancel = new CancellationTokenSource();

        var write = lane.WriteAsync(Item(1), cancel.Token).AsTask();
        await cancel.CancelAsync();

        await write.Invoking(w => w.WaitAsync(TestHost.Wait)).Should().ThrowAsync<OperationCanceledException>();
    }

    [Fact]
    public async Task Complete_ReleasesWaitingWritersWithChannelClosed_AndKeepsBufferedEnvelopesReadable()
    {
        var lane = new Lane(1, owner: null);
        lane.TryWrite(Item(0));
        var write = lane.WriteAsync(Item(1), CancellationToken.None).AsTask();

        lane.Complete();

        await write.Invoking(w => w.WaitAsync(TestHost.Wait)).Should().ThrowAsync<ChannelClosedException>();
        lane.IsCompleted.Should().BeTrue();
        lane.TryWrite(Item(2)).Should().BeFalse();
        (await lane.WaitToReadAsync()).Should().BeTrue();
        lane.TryTake(out var batch, out var count).Should().BeTrue();
        Bodies(batch, count).Should().Equal(0);
        lane.MarkHandedOut(1);
        lane.TryTake(out _, out _).Should().BeFalse();
        (await lane.WaitToReadAsync()).Should().BeFalse();
    }

    [Fact]
    public async Task WaitToReadAsync_EmptyLane_CompletesWhenAnEnvelopeArrivesOrTheLaneCompletes()
    {
        var lane = new Lane(8, owner: null);
        var waiting = lane.WaitToReadAsync();
        waiting.IsCompleted.Should().BeFalse();

        lane.TryWrite(Item(0));
        (await waiting.AsTask().WaitAsync(TestHost.Wait)).Should().BeTrue();

        lane.TryTake(out _, out var count).Should().BeTrue();
        lane.MarkHandedOut(count);
        lane.TryTake(out _, out _).Should().BeFalse();
        var second = lane.WaitToReadAsync();
        second.IsCompleted.Should().BeFalse();
        lane.Complete();
        (await second.AsTask().WaitAsync(TestHost.Wait)).Should().BeFalse();
    }

    [Fact]
    public async Task Clear_DropsBufferedEnvelopes_ReturnsTheCountAndReleasesWriters()
    {
        var lane = new Lane(2, owner: null);
        lane.TryWrite(Item(0));
        lane.TryWrite(Item(1));
        var write = lane.WriteAsync(Item(2), CancellationToken.None).AsTask();

        lane.Clear().Should().Be(2);

        await write.WaitAsync(TestHost.Wait);
        lane.TryTake(out var batch, out var count).Should().BeTrue();
        Bodies(batch, count).Should().Equal(2);
    }

    [Fact]
    public async Task ConcurrentWriters_OneWorker_EveryEnvelopeTakenOnceAndEachWritersOrderKept()
    {
        const int writers = 4;
        const int perWriter = 20_000;
        var lane = new Lane(64, owner: null);
        var producers = Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < perWriter; i++)
            {
                await lane.WriteAsync(Item((w * perWriter) + i), CancellationToken.None);
            }
        })).ToArray();
        var all = Task.WhenAll(producers).ContinueWith(_ => lane.Complete(), TaskScheduler.Default);

        var lastPerWriter = Enumerable.Repeat(-1, writers).ToArray();
        var taken = 0;
        while (true)
        {
            if (!lane.TryTake(out var batch, out var count))
            {
                if (!await lane.WaitToReadAsync().AsTask().WaitAsync(TestHost.Wait))
                {
                    break;
                }

                continue;
            }

            for (var i = 0; i < count; i++)
            {
                var value = (int)batch[i].Body!;
                var writer = value / perWriter;
                value.Should().BeGreaterThan(lastPerWriter[writer]);
                lastPerWriter[writer] = value;
                taken++;
                lane.MarkHandedOut(i + 1);
            }
        }

        await all;
        taken.Should().Be(writers * perWriter);
        lastPerWriter.Should().OnlyContain(v => v % perWriter == perWriter - 1);
    }

    [Fact]
    public void Capacity_BelowOne_IsRefused()
    {
        var create = () => new Lane(0, owner: null);
        var shrink = () => new Lane(1, owner: null).SetCapacity(0);

        create.Should().Throw<ArgumentOutOfRangeException>();
        shrink.Should().Throw<ArgumentOutOfRangeException>();
    }

    [Fact]
    public async Task SetCapacity_Growing_LetsAWaitingWriterIn()
    {
        var lane = new Lane(1, owner: null);
        lane.TryWrite(Item(0)).Should().BeTrue();
        var write = lane.WriteAsync(Item(1), CancellationToken.None).AsTask();
        write.IsCompleted.Should().BeFalse("the lane is full");

        lane.SetCapacity(2);

        await write.WaitAsync(TestHost.Wait);
        lane.TryTake(out var batch, out var count).Should().BeTrue();
        Bodies(batch, count).Should().Equal(0, 1);
    }

    [Fact]
    public async Task WriteAsync_CancelledBeforeItStarts_ThrowsAndWritesNothing()
    {
        var lane = new Lane(4, owner: null);

        var write = async () => await lane.WriteAsync(Item(0), new CancellationToken(canceled: true));

        await write.Should().ThrowAsync<OperationCanceledException>();
        lane.TryTake(out _, out _).Should().BeFalse("a cancelled write adds nothing, although the lane had room");
    }

    private static Envelope Item(int value) => new() { MessageId = Guid.NewGuid(), Body = value };

    private static IEnumerable<int> Bodies(Envelope[] batch, int count) => batch.Take(count).Select(e => (int)e.Body!);
}
