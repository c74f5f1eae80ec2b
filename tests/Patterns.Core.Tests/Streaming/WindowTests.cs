using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Time.Testing;
using Patterns.Streaming;
using Patterns.Testing;
using static Patterns.Core.Tests.Streaming.T;

namespace Patterns.Core.Tests.Streaming;

public sealed class WindowTests
{
    private readonly ConcurrentQueue<StreamDeadLetter> _deadLetters = new();

    [Fact]
    public async Task Tumbling_OutOfOrderWithinBound_FiresWhenTheWatermarkPassesTheEnd()
    {
        // Window [0, 10): events at 1, 8, 3 (out of order by 5 s), then 12 and 16. Max out-of-orderness 5 s:
        // the watermark passes 10 at the event at 16 (16 - 5 = 11), the fifth input.
        Click[] input = [C("a", 1), C("a", 8), C("a", 3), C("b", 12), C("a", 16), C("b", 14)];
        var processed = 0;
        var emitted = new List<(int AfterInput, (string, double, double, long) Row)>();

        await DataStream.From(input)
            .Select(c =>
            {
                processed++;
                return c;
            })
            .WithEventTime(c => c.At, maxOutOfOrderness: TimeSpan.FromSeconds(5))
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)))
            .Count()
            .To(r => emitted.Add((processed, Row(r))))
            .RunAsync().WaitAsync(TestHost.Wait);

        // Within a window, keys are emitted in the order they first arrived (b at 12 before a at 16).
        emitted.Should().Equal(
            (5, ("a", 0, 10, 3)),
            (6, ("b", 10, 20, 2)), // the rest fires when the input is exhausted
            (6, ("a", 10, 20, 1)));
    }

    [Fact]
    public async Task Tumbling_EventsJumpingBetweenAdjacentWindowsAtTheirEdges_EachCountsInItsOwnWindow()
    {
        // The stage remembers the last element's window to skip the division: an element one tick before a window's end,
        // at its start, and back in an earlier window must still land in the window that contains it.
        Click[] input = [C("a", 9.9999999), C("a", 10), C("a", 0), C("a", 19.9999999), C("a", 20), C("a", 5), C("a", 15)];
        var results = new List<(string, double, double, long)>();

        await DataStream.From(input)
            .WithEventTime(c => c.At, maxOutOfOrderness: TimeSpan.FromSeconds(30))
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)))
            .Count()
            .To(r => results.Add(Row(r)))
            .RunAsync().WaitAsync(TestHost.Wait);

        results.Should().Equal(("a", 0, 10, 3), ("a", 10, 20, 3), ("a", 20, 30, 1));
    }

    [Fact]
    public async Task Tumbling_LateEvents_GoToTheLateOutputAndAreNotCounted()
    {
        Click[] input = [C("a", 1), C("a", 25), C("a", 4), C("a", 9), C("a", 21)];
        var results = new List<(string, double, double, long)>();
        var late = new List<LateEvent<Click>>();

        await DataStream.From(input)
            .WithEventTime(c => c.At, TimeSpan.FromSeconds(2))
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), onLate: (e, _) =>
            {
                late.Add(e);
                return default;
            })
            .Count()
            .To(r => results.Add(Row(r)))
            .RunAsync().WaitAsync(TestHost.Wait);

        // 25 moves the watermark to 23: [0,10) fires with the event at 1; 4 and 9 are late; 21 is still on time.
        results.Should().Equal(("a", 0, 10, 1), ("a", 20, 30, 2));
        late.Select(e => (e.Timestamp - Zero).TotalSeconds).Should().Equal(4, 9);
        late.Should().OnlyContain(e => e.Watermark == S(23));
    }

    [Fact]
    public async Task Tumbling_LateEventsWithoutLateOutput_AreDeadLettered()
    {
        Click[] input = [C("a", 1), C("a", 30), C("a", 2)];
        var results = new List<(string, double, double, long)>();

        await DataStream.From(input, Options())
            .WithEventTime(c => c.At, TimeSpan.Zero)
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)))
            .Count()
            .To(r => results.Add(Row(r)))
            .RunAsync().WaitAsync(TestHost.Wait);

        results.Should().Equal(("a", 0, 10, 1), ("a", 30, 40, 1));
        var letter = _deadLetters.Should().ContainSingle().Subject;
        letter.Element.Should().Be(input[2]);
        letter.Stage.Should().Be("Tumbling@2");
        letter.Exception.Should().BeOfType<LateEventException>().Which.Message.Should().Contain("watermark is 2024-01-01T00:00:30");
    }

    [Fact]
    public async Task Tumbling_AllowedLateness_LateElementsUpdateTheFiredWindow()
    {
        Click[] input = [C("a", 1), C("a", 12), C("a", 5), C("a", 31), C("a", 6)];
        var results = new List<WindowResult<string, long>>();
        var late = new List<Click>();

        await DataStream.From(input)
            .WithEventTime(c => c.At, TimeSpan.Zero)
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), allowedLateness: TimeSpan.FromSeconds(15), onLate: (e, _) =>
            {
                late.Add(e.Item);
                return default;
            })
            .Count()
            .To(results.Add)
            .RunAsync().WaitAsync(TestHost.Wait);

        // 12 fires [0,10) = 1; 5 is late but within 15 s: update to 2. 31 fires [10,20) and purges [0,10) (10 + 15 <= 31), so 6 is late for good.
        results.Select(r => (Row(r), r.IsUpdate)).Should().Equal(
            (("a", 0, 10, 1), false),
            (("a", 0, 10, 2), true),
            (("a", 10, 20, 1), false),
            (("a", 30, 40, 1), false));
        late.Should().Equal(input[4]);
    }

    [Fact]
    public async Task Hopping_EachElementCountsInEveryWindowItFallsIn()
    {
        Click[] input = [C("a", 1), C("a", 6), C("a", 11)];
        var results = new List<(string, double, double, long)>();

        await DataStream.From(input)
            .WithEventTime(c => c.At, TimeSpan.Zero)
            .KeyBy(c => c.User)
            .Window(WindowSpec.Hopping(TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(5)))
            .Count()
            .To(r => results.Add(Row(r)))
            .RunAsync().WaitAsync(TestHost.Wait);

        results.Should().Equal(("a", -5, 5, 1), ("a", 0, 10, 2), ("a", 5, 15, 2), ("a", 10, 20, 1));
    }

    [Fact]
    public async Task Session_OverlappingSessionsMerge()
    {
        // Gap 5 s: 0 opens [0,5), 8 opens [8,13); 4 (out of order) spans [4,9), which overlaps both: one session [0,13).
        Click[] input = [C("a", 0, 1), C("a", 8, 10), C("b", 1, 5), C("a", 4, 100), C("a", 30, 7)];
        var sums = new List<(string Key, double Start, double End, int Sum)>();

        await DataStream.From(input)
            .WithEventTime(c => c.At, TimeSpan.FromSeconds(10))
            .KeyBy(c => c.User)
            .Window(WindowSpec.Session(TimeSpan.FromSeconds(5)))
            .Sum(c => c.Value)
            .To(r => sums.Add((r.Key, (r.Start - Zero).TotalSeconds, (r.End - Zero).TotalSeconds, r.Value)))
            .RunAsync().WaitAsync(TestHost.Wait);

        sums.Should().Equal(("b", 1, 6, 5), ("a", 0, 13, 111), ("a", 30, 35, 7));
    }

    [Fact]
    public async Task Session_AggregateWithoutMerge_IsRejected()
    {
        var act = () => DataStream.From(new[] { C("a", 0) }).WithEventTime(c => c.At, TimeSpan.Zero).KeyBy(c => c.User)
            .Window(WindowSpec.Session(TimeSpan.FromSeconds(1))).Aggregate(0, (acc, c) => acc + c.Value);

        act.Should().Throw<ArgumentException>().WithMessage("Session windows merge*merge function*");
        await Task.CompletedTask;
    }

    [Fact]
    public async Task Aggregations_SumMinMaxAndFold()
    {
        Click[] input = [C("a", 1, 4), C("a", 2, -3), C("a", 3, 9), C("b", 4, 2)];

        async Task<List<(string, TValue)>> RunAsync<TValue>(Func<WindowedStream<Click, string>, DataStream<WindowResult<string, TValue>>> aggregate)
        {
            var results = new List<(string, TValue)>();
            await aggregate(DataStream.From(input).WithEventTime(c => c.At, TimeSpan.Zero).KeyBy(c => c.User).Window(WindowSpec.Tumbling(TimeSpan.FromMinutes(1))))
                .To(r => results.Add((r.Key, r.Value)))
                .RunAsync().WaitAsync(TestHost.Wait);
            return results;
        }

        (await RunAsync(w => w.Sum(c => c.Value))).Should().Equal(("a", 10), ("b", 2));
        (await RunAsync(w => w.Min(c => c.Value))).Should().Equal(("a", -3), ("b", 2));
        (await RunAsync(w => w.Max(c => c.At))).Should().Equal(("a", S(3)), ("b", S(4)));
        (await RunAsync(w => w.Aggregate("", (acc, c) => acc + c.Value + ";"))).Should().Equal(("a", "4;-3;9;"), ("b", "2;"));
    }

    [Fact]
    public async Task Window_FoldThrowsWithResume_ElementDeadLetteredAndWindowUnchanged()
    {
        Click[] input = [C("a", 1, 1), C("a", 2, 0), C("a", 3, 2)];
        var results = new List<(string, int)>();

        await DataStream.From(input, Options())
            .WithEventTime(c => c.At, TimeSpan.Zero)
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromMinutes(1)), onError: FailurePolicy.Resume)
            .Aggregate(0, (acc, c) => acc + (10 / c.Value))
            .To(r => results.Add((r.Key, r.Value)))
            .RunAsync().WaitAsync(TestHost.Wait);

        results.Should().Equal(("a", 15));
        _deadLetters.Should().ContainSingle().Which.Exception.Should().BeOfType<DivideByZeroException>();
    }

    [Fact]
    public async Task ProcessingTime_Tumbling_FiresOnTheTimerWithoutNewElements()
    {
        var fake = new FakeTimeProvider(S(0));
        var time = new TimerTracker(fake);
        var input = Channel.CreateUnbounded<Click>();
        var results = Channel.CreateUnbounded<(string, double, double, long)>();
        var options = Options(time);

        var seen = 0;
        var run = DataStream.From(input.Reader, options)
            .Select(c =>
            {
                Interlocked.Increment(ref seen);
                return c;
            })
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)))
            .Count()
            .To((r, ct) => results.Writer.WriteAsync(Row(r), ct))
            .RunAsync();
        await input.Writer.WriteAsync(C("a", 0));
        await input.Writer.WriteAsync(C("a", 0));
        await input.Writer.WriteAsync(C("b", 0));
        await Eventually.HoldsAsync(() => Volatile.Read(ref seen) == 3);
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);

        fake.Advance(TimeSpan.FromSeconds(9));
        results.Reader.TryRead(out _).Should().BeFalse("the window ends at 10 s on the pipeline's clock");
        fake.Advance(TimeSpan.FromSeconds(1));
        var fired = new[] { await results.Reader.ReadAsync().AsTask().WaitAsync(TestHost.Wait), await results.Reader.ReadAsync().AsTask().WaitAsync(TestHost.Wait) };

        fired.Should().BeEquivalentTo([("a", 0.0, 10.0, 2L), ("b", 0.0, 10.0, 1L)]);
        input.Writer.Complete();
        await run.WaitAsync(TestHost.Wait);
    }

    [Fact]
    public async Task Snapshot_StopThenRestart_ResumesOpenWindowsAndWatermark()
    {
        var store = new InMemoryStreamSnapshotStore();
        var results = new ConcurrentQueue<(string, double, double, long)>();
        var input = Channel.CreateUnbounded<Click>();
        var seen = 0;
        StreamPipeline Build() => DataStream.From(input.Reader, new StreamOptions { Name = "clicks", SnapshotStore = store })
            .Select(c =>
            {
                Interlocked.Increment(ref seen);
                return c;
            })
            .WithEventTime(c => c.At, TimeSpan.FromSeconds(1))
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)))
            .Count()
            .To(r => results.Enqueue(Row(r)));

        using (var stop = new CancellationTokenSource())
        {
            var first = Build().RunAsync(stop.Token);
            foreach (var click in new[] { C("a", 1), C("a", 2), C("b", 3), C("a", 12), C("a", 13) })
            {
                await input.Writer.WriteAsync(click);
            }

            await Eventually.HoldsAsync(() => Volatile.Read(ref seen) == 5);
            await stop.CancelAsync();
            await first.WaitAsync(TestHost.Wait);
        }

        results.Should().Equal(("a", 0, 10, 2), ("b", 0, 10, 1));
        var snapshot = await store.LoadAsync("clicks");
        var state = snapshot!.Operators.Should().ContainSingle().Which.Value.Should().BeOfType<WindowOperatorState<string, long>>().Subject;
        state.Watermark.Should().Be(S(12));
        state.Windows.Should().ContainSingle().Which.Should().Be(new WindowState<string, long>("a", S(10), S(20), 2, false));

        foreach (var click in new[] { C("a", 11), C("a", 4), C("b", 15) })
        {
            await input.Writer.WriteAsync(click);
        }

        input.Writer.Complete();
        await Build().RunAsync().WaitAsync(TestHost.Wait);

        // 4 is late against the restored watermark (12), so it is not counted; [10,20) continues from 2.
        results.Should().Equal(("a", 0, 10, 2), ("b", 0, 10, 1), ("a", 10, 20, 3), ("b", 10, 20, 1));
        (await store.LoadAsync("clicks")).Should().BeNull("a pipeline whose input is exhausted deletes its snapshot");
    }

    [Fact]
    public async Task Snapshot_RestoredIntoAPipelineWhoseWindowMoved_FailsNamingTheStage()
    {
        var store = new InMemoryStreamSnapshotStore();
        await StopWithOpenWindowsAsync(store);

        // An operator inserted in front of the window moves it from position 2 to 3.
        var restart = () => RestartAsync(store, stream => stream.Where(_ => true), WindowSpec.Tumbling(TimeSpan.FromSeconds(10)));

        var mismatch = (await restart.Should().ThrowAsync<InvalidOperationException>()).Which;
        mismatch.Message.Should().Contain("'Tumbling@2'").And.Contain("'Tumbling@3'");
        mismatch.Should().BeOfType<StreamSnapshotMismatchException>().Which.Stage.Should().Be("Tumbling@2");
        (await store.LoadAsync("clicks")).Should().NotBeNull("a failed restore keeps the snapshot");
    }

    [Fact]
    public async Task Snapshot_RestoredIntoAWindowOfAnotherKind_FailsNamingTheStage()
    {
        var store = new InMemoryStreamSnapshotStore();
        await StopWithOpenWindowsAsync(store);

        var restart = () => RestartAsync(store, stream => stream, WindowSpec.Session(TimeSpan.FromSeconds(10)));

        var mismatch = (await restart.Should().ThrowAsync<InvalidOperationException>()).Which;
        mismatch.Message.Should().Contain("'Tumbling@2'").And.Contain("'Session@2'");
        mismatch.Should().BeOfType<StreamSnapshotMismatchException>().Which.Stage.Should().Be("Tumbling@2");
    }

    [Fact]
    public async Task Snapshot_NamedWindow_ResumesAfterAnOperatorIsInsertedInFrontOfIt()
    {
        var store = new InMemoryStreamSnapshotStore();
        await StopWithOpenWindowsAsync(store, windowName: "clicks-per-user");
        (await store.LoadAsync("clicks"))!.Operators.Keys.Should().Equal("clicks-per-user");
        var results = new List<(string, double, double, long)>();

        await RestartAsync(store, stream => stream.Where(_ => true), WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), "clicks-per-user", results);

        // [10, 20) for a continues from the click at 12 saved in the snapshot.
        results.Should().Equal(("a", 10, 20, 2), ("b", 10, 20, 1));
    }

    [Fact]
    public async Task Snapshot_NamedWindowOfAnotherKind_FailsNamingTheStageAndBothKinds()
    {
        var store = new InMemoryStreamSnapshotStore();
        await StopWithOpenWindowsAsync(store, windowName: "clicks-per-user");

        var restart = () => RestartAsync(store, stream => stream, WindowSpec.Session(TimeSpan.FromSeconds(10)), "clicks-per-user");

        var mismatch = (await restart.Should().ThrowAsync<StreamSnapshotMismatchException>()).Which;
        mismatch.Stage.Should().Be("clicks-per-user");
        mismatch.Pipeline.Should().Be("clicks");
        mismatch.Message.Should().Contain("'clicks-per-user' is a Session window").And.Contain("a Tumbling window");
        (await store.LoadAsync("clicks")).Should().NotBeNull("a failed restore keeps the snapshot");
    }

    [Fact]
    public async Task Snapshot_PartitionedNamedWindow_IsSavedPerPartitionUnderItsName()
    {
        var store = new InMemoryStreamSnapshotStore();

        await StopWithOpenWindowsAsync(store, windowName: "per-user", partitions: 2);

        (await store.LoadAsync("clicks"))!.Operators.Keys.Should().BeEquivalentTo("per-user#p0", "per-user#p1");

        // Another partition count gives other stage names: partition 2 has nothing to resume from.
        var restart = () => RestartAsync(store, stream => stream.PartitionBy(c => c.User, partitions: 3), WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), "per-user");
        (await restart.Should().ThrowAsync<StreamSnapshotMismatchException>()).Which.Stage.Should().Be("per-user#p2");
    }

    [Fact]
    public async Task PartitionBy_WindowsPerPartition_SameResultsAsOnePartition()
    {
        var random = new Random(7);
        var input = Enumerable.Range(0, 5_000).Select(i => C($"u{random.Next(50)}", (i * 0.1) + random.NextDouble())).ToArray();

        async Task<List<(string, double, double, long)>> RunAsync(int partitions)
        {
            var results = new ConcurrentQueue<(string, double, double, long)>();
            var stream = DataStream.From(input).WithEventTime(c => c.At, TimeSpan.FromSeconds(1));
            if (partitions > 1)
            {
                stream = stream.PartitionBy(c => c.User, partitions);
            }

            await stream.KeyBy(c => c.User).Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(30))).Count()
                .To(r => results.Enqueue(Row(r))).RunAsync().WaitAsync(TestHost.Wait);
            return [.. results];
        }

        var single = await RunAsync(1);
        var partitioned = await RunAsync(4);

        partitioned.Should().BeEquivalentTo(single);
        single.Sum(r => r.Item4).Should().Be(input.Length);
    }

    /// <summary>Runs a pipeline with a tumbling count window over clicks until a graceful stop, leaving window [10, 20) open in the snapshot.</summary>
    private static async Task StopWithOpenWindowsAsync(IStreamSnapshotStore store, string? windowName = null, int partitions = 1)
    {
        var input = Channel.CreateUnbounded<Click>();
        var seen = 0;
        using var stop = new CancellationTokenSource();
        var source = DataStream.From(input.Reader, new StreamOptions { Name = "clicks", SnapshotStore = store });
        var run = (partitions > 1 ? source.PartitionBy(c => c.User, partitions) : source)
            .WithEventTime(
                c =>
                {
                    Interlocked.Increment(ref seen);
                    return c.At;
                },
                TimeSpan.FromSeconds(1))
            .KeyBy(c => c.User)
            .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), name: windowName)
            .Count()
            .To(_ => { })
            .RunAsync(stop.Token);
        foreach (var click in new[] { C("a", 1), C("a", 12) })
        {
            await input.Writer.WriteAsync(click);
        }

        await Eventually.HoldsAsync(() => Volatile.Read(ref seen) == 2);
        await stop.CancelAsync();
        await run.WaitAsync(TestHost.Wait);
        (await store.LoadAsync("clicks")).Should().NotBeNull();
    }

    /// <summary>Runs the pipeline named "clicks" again, over clicks of a at 14 s and b at 15 s, with a count window after <paramref name="before"/>.</summary>
    private static Task RestartAsync(
        IStreamSnapshotStore store,
        Func<DataStream<Click>, DataStream<Click>> before,
        WindowSpec window,
        string? windowName = null,
        List<(string, double, double, long)>? results = null) =>
        before(DataStream.From([C("a", 14), C("b", 15)], new StreamOptions { Name = "clicks", SnapshotStore = store }))
            .WithEventTime(c => c.At, TimeSpan.FromSeconds(1))
            .KeyBy(c => c.User)
            .Window(window, name: windowName)
            .Count()
            .To(r => results?.Add(Row(r)))
            .RunAsync().WaitAsync(TestHost.Wait);

    private StreamOptions Options(TimeProvider? time = null) => new()
    {
        Name = "windows",
        TimeProvider = time,
        OnDeadLetter = (letter, _) =>
        {
            _deadLetters.Enqueue(letter);
            return default;
        },
    };
}
