using System.Reactive.Linq;
using System.Reactive.Subjects;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Patterns.Streaming;

namespace Patterns.Benchmarks;

/// <summary>An event of the streaming benchmark: a key and an event time.</summary>
public readonly record struct KeyedEvent(int Key, DateTimeOffset At);

/// <summary>
/// An event-time tumbling-window count per key over 1,000 keys: 1-second windows, events 20 µs apart with up to
/// 100 ms of disorder, watermark = largest event time − 100 ms, so no event is late. One operation is one event
/// counted; every implementation emits one count per key and window, and the counts add up to the number of events.
/// </summary>
[Config(typeof(BenchmarkConfig))]
public class StreamingBenchmarks
{
    /// <summary>Events per invocation.</summary>
    public const int Events = 200_000;

    /// <summary>Distinct keys.</summary>
    public const int Keys = 1_000;

    private static readonly long WindowTicks = TimeSpan.FromSeconds(1).Ticks;
    private static readonly long OutOfOrderTicks = TimeSpan.FromMilliseconds(100).Ticks;

    private KeyedEvent[] _events = [];
    private StreamPipeline? _pipeline;
    private long _sink;

    /// <summary>Gets the total of the counts emitted by the last invocation (it must equal <see cref="Events"/>).</summary>
    public long Sink => _sink;

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(42);
        var origin = new DateTimeOffset(2024, 1, 1, 0, 0, 0, TimeSpan.Zero).UtcTicks;
        var step = TimeSpan.FromMicroseconds(20).Ticks;
        _events = new KeyedEvent[Events];
        for (var i = 0; i < Events; i++)
        {
            _events[i] = new KeyedEvent(random.Next(Keys), new DateTimeOffset(origin + (i * step) + random.NextInt64(OutOfOrderTicks), TimeSpan.Zero));
        }

        _pipeline = DataStream.From(_events)
            .WithEventTime(e => e.At, TimeSpan.FromTicks(OutOfOrderTicks))
            .KeyBy(e => e.Key)
            .Window(WindowSpec.Tumbling(TimeSpan.FromTicks(WindowTicks)))
            .Count()
            .To(r => _sink += r.Value);

        // Every implementation must count every event once.
        foreach (var (name, run) in new (string, Func<Task>)[] { ("HandWritten", () => { HandWritten(); return Task.CompletedTask; }), ("RxGroupBy", () => { RxGroupBy(); return Task.CompletedTask; }), ("Patterns", Patterns) })
        {
            run().GetAwaiter().GetResult();
            if (_sink != Events)
            {
                throw new InvalidOperationException($"{name} counted {_sink} events, not {Events}.");
            }
        }
    }

    /// <summary>The floor: one loop, one dictionary keyed by (key, window start), the watermark tracked inline.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Events)]
    public void HandWritten()
    {
        var counts = new Dictionary<(int Key, long Start), long>();
        var expired = new List<(int Key, long Start)>();
        long maxTimestamp = long.MinValue, nextEnd = long.MaxValue, sink = 0;
        foreach (var e in _events)
        {
            var ts = e.At.UtcTicks;
            if (ts > maxTimestamp)
            {
                maxTimestamp = ts;
                var watermark = ts - OutOfOrderTicks;
                if (watermark >= nextEnd)
                {
                    nextEnd = long.MaxValue;
                    foreach (var (key, count) in counts)
                    {
                        if (key.Start + WindowTicks <= watermark)
                        {
                            sink += count;
                            expired.Add(key);
                        }
                        else
                        {
                            nextEnd = Math.Min(nextEnd, key.Start + WindowTicks);
                        }
                    }

                    foreach (var key in expired)
                    {
                        counts.Remove(key);
                    }

                    expired.Clear();
                }
            }

            var start = ts - (ts % WindowTicks);
            CollectionsMarshal.GetValueRefOrAddDefault(counts, (e.Key, start), out _)++;
            nextEnd = Math.Min(nextEnd, start + WindowTicks);
        }

        foreach (var count in counts.Values)
        {
            sink += count;
        }

        _sink = sink;
    }

    /// <summary>
    /// System.Reactive 6.0.1, the idiomatic query: <c>GroupBy</c> on (key, window start), each group counted with
    /// <c>Count</c>. The window is part of the group key; Rx has no event-time watermark, so the groups (windows) emit
    /// when the source completes. This is the cheapest correct Rx formulation over a finite stream (it never closes a
    /// window early, so nothing is lost to disorder).
    /// </summary>
    [Benchmark(OperationsPerInvoke = Events)]
    public void RxGroupBy()
    {
        long sink = 0;
        using var input = new Subject<KeyedEvent>();
        using var counting = input
            .GroupBy(e => (e.Key, Start: e.At.UtcTicks - (e.At.UtcTicks % WindowTicks)))
            .SelectMany(window => window.Count())
            .Subscribe(count => sink += count);
        foreach (var e in _events)
        {
            input.OnNext(e);
        }

        input.OnCompleted();
        _sink = sink;
    }

    /// <summary>Patterns: <c>DataStream.From(events).WithEventTime(...).KeyBy(...).Window(Tumbling(1 s)).Count()</c> into a delegate sink.</summary>
    [Benchmark(OperationsPerInvoke = Events)]
    public async Task Patterns()
    {
        _sink = 0;
        await _pipeline!.RunAsync();
    }
}
