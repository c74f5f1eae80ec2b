using Patterns.Streaming;

namespace Patterns.Core.Tests.Streaming;

/// <summary>Windowed aggregates over random out-of-order input, checked against a straightforward LINQ computation of the same input.</summary>
public sealed class RandomizedWindowTests
{
    private const long Second = TimeSpan.TicksPerSecond;

    [Theory]
    [InlineData(1, 0, 0)]
    [InlineData(2, 0, 0)]
    [InlineData(3, 2, 0)]
    [InlineData(4, 2, 3)]
    [InlineData(5, 1, 10)]
    public async Task Tumbling_CountAndSum_MatchLinq(int seed, int outOfOrderSeconds, int latenessSeconds)
    {
        const long size = 10 * Second;
        var events = Generate(seed, count: 20_000, keys: 37, stepTicks: Second / 50, jitterTicks: 5 * Second);
        var ooo = outOfOrderSeconds * Second;
        var lateness = latenessSeconds * Second;

        // The reference: replay the watermark to find the late events, then group the rest with LINQ.
        var late = new List<Event>();
        var onTime = new List<Event>();
        long maxTs = long.MinValue, watermark = long.MinValue;
        foreach (var e in events)
        {
            if (e.Ticks > maxTs)
            {
                maxTs = e.Ticks;
                watermark = Math.Max(watermark, e.Ticks - ooo);
            }

            var end = Floor(e.Ticks, size) + size;
            (end + lateness <= watermark ? late : onTime).Add(e);
        }

        var expected = onTime.GroupBy(e => (e.Key, Start: Floor(e.Ticks, size)))
            .ToDictionary(g => g.Key, g => (Count: (long)g.Count(), Sum: g.Sum(e => (long)e.Value)));

        var counts = new Dictionary<(int, long), long>();
        var sums = new Dictionary<(int, long), long>();
        var lateSeen = new List<Event>();
        var windowed = DataStream.From(events)
            .WithEventTime(e => new DateTimeOffset(e.Ticks, TimeSpan.Zero), TimeSpan.FromTicks(ooo))
            .KeyBy(e => e.Key)
            .Window(WindowSpec.Tumbling(TimeSpan.FromTicks(size)), TimeSpan.FromTicks(lateness), (l, _) =>
            {
                lateSeen.Add(l.Item);
                return default;
            });
        await windowed.Count().To(r => counts[(r.Key, r.Start.UtcTicks)] = r.Value).RunAsync().WaitAsync(TestHost.Wait);
        await DataStream.From(events)
            .WithEventTime(e => new DateTimeOffset(e.Ticks, TimeSpan.Zero), TimeSpan.FromTicks(ooo))
            .KeyBy(e => e.Key)
            .Window(WindowSpec.Tumbling(TimeSpan.FromTicks(size)), TimeSpan.FromTicks(lateness), (_, _) => default)
            .Sum(e => (long)e.Value)
            .To(r => sums[(r.Key, r.Start.UtcTicks)] = r.Value)
            .RunAsync().WaitAsync(TestHost.Wait);

        // Updates replace earlier results, so the last value of each window is compared.
        counts.Should().BeEquivalentTo(expected.ToDictionary(x => x.Key, x => x.Value.Count));
        sums.Should().BeEquivalentTo(expected.ToDictionary(x => x.Key, x => x.Value.Sum));
        lateSeen.Should().Equal(late);
        (counts.Values.Sum() + late.Count).Should().Be(events.Length, "every event is counted or reported late");
    }

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    [InlineData(13)]
    public async Task Hopping_Max_MatchesLinq(int seed)
    {
        const long size = 12 * Second;
        const long slide = 4 * Second;
        var events = Generate(seed, count: 10_000, keys: 13, stepTicks: Second / 20, jitterTicks: 3 * Second);
        var expected = events
            .SelectMany(e => Starts(e.Ticks, size, slide).Select(start => (e.Key, Start: start, e.Value)))
            .GroupBy(x => (x.Key, x.Start))
            .ToDictionary(g => g.Key, g => g.Max(x => x.Value));

        var actual = new Dictionary<(int, long), int>();
        await DataStream.From(events)
            .WithEventTime(e => new DateTimeOffset(e.Ticks, TimeSpan.Zero), TimeSpan.FromSeconds(3))
            .KeyBy(e => e.Key)
            .Window(WindowSpec.Hopping(TimeSpan.FromTicks(size), TimeSpan.FromTicks(slide)))
            .Max(e => e.Value)
            .To(r => actual.Add((r.Key, r.Start.UtcTicks), r.Value))
            .RunAsync().WaitAsync(TestHost.Wait);

        actual.Should().BeEquivalentTo(expected);
    }

    [Theory]
    [InlineData(21)]
    [InlineData(22)]
    [InlineData(23)]
    public async Task Session_SumAndFold_MatchLinq(int seed)
    {
        const long gap = 2 * Second;
        var random = new Random(seed);
        // Bursts separated by pauses, so sessions form and, out of order, merge.
        var ticks = 0L;
        var list = new List<Event>();
        for (var i = 0; i < 8_000; i++)
        {
            ticks += random.Next(10) == 0 ? random.NextInt64(3 * Second) : random.NextInt64(Second / 2);
            list.Add(new Event(random.Next(9), ticks + random.NextInt64(4 * Second), random.Next(-100, 100)));
        }

        var events = list.ToArray();
        var expected = new Dictionary<(int, long, long), (long Sum, int Count)>();
        foreach (var group in events.GroupBy(e => e.Key))
        {
            long start = 0, end = long.MinValue, sum = 0;
            var count = 0;
            foreach (var e in group.OrderBy(e => e.Ticks))
            {
                if (e.Ticks >= end)
                {
                    if (count > 0)
                    {
                        expected.Add((group.Key, start, end), (sum, count));
                    }

                    (start, end, sum, count) = (e.Ticks, e.Ticks + gap, 0, 0);
                }

                end = Math.Max(end, e.Ticks + gap);
                sum += e.Value;
                count++;
            }

            expected.Add((group.Key, start, end), (sum, count));
        }

        var sums = new Dictionary<(int, long, long), long>();
        var folds = new Dictionary<(int, long, long), (long Sum, int Count)>();
        DataStream<Event> Source() => DataStream.From(events).WithEventTime(e => new DateTimeOffset(e.Ticks, TimeSpan.Zero), TimeSpan.FromSeconds(4));
        await Source().KeyBy(e => e.Key).Window(WindowSpec.Session(TimeSpan.FromTicks(gap))).Sum(e => (long)e.Value)
            .To(r => sums.Add((r.Key, r.Start.UtcTicks, r.End.UtcTicks), r.Value)).RunAsync().WaitAsync(TestHost.Wait);
        await Source().KeyBy(e => e.Key).Window(WindowSpec.Session(TimeSpan.FromTicks(gap)))
            .Aggregate((Sum: 0L, Count: 0), (acc, e) => (acc.Sum + e.Value, acc.Count + 1), (a, b) => (a.Sum + b.Sum, a.Count + b.Count))
            .To(r => folds.Add((r.Key, r.Start.UtcTicks, r.End.UtcTicks), r.Value)).RunAsync().WaitAsync(TestHost.Wait);

        sums.Should().BeEquivalentTo(expected.ToDictionary(x => x.Key, x => x.Value.Sum));
        folds.Should().BeEquivalentTo(expected);
    }

    private static Event[] Generate(int seed, int count, int keys, long stepTicks, long jitterTicks)
    {
        var random = new Random(seed);
        var origin = new DateTimeOffset(2024, 1, 1, 0, 0, 0, TimeSpan.Zero).UtcTicks;
        return Enumerable.Range(0, count)
            .Select(i => new Event(random.Next(keys), origin + (i * stepTicks) + random.NextInt64(jitterTicks), random.Next(1000)))
            .ToArray();
    }

    private static long Floor(long ticks, long size) => ticks - (((ticks % size) + size) % size);

    private static IEnumerable<long> Starts(long ticks, long size, long slide)
    {
        for (var start = Floor(ticks, slide); start > ticks - size; start -= slide)
        {
            yield return start;
        }
    }

    public sealed record Event(int Key, long Ticks, int Value);
}
