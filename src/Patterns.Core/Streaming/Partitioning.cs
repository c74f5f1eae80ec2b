using System.Threading.Channels;
using Patterns.Messaging;

namespace Patterns.Streaming;

/// <summary>
/// Splits the stream by key into partitions that run in parallel, each on its own driver with its own copy of the
/// downstream stages: one key always goes to the same partition, so per-key order holds. Each partition's input is a
/// bounded channel, so a slow partition makes the router wait.
/// </summary>
internal sealed class PartitionRouter<T, TKey> : Stage<T>
{
    private readonly Func<T, TKey> _keySelector;
    private readonly StageGuard _guard;
    private readonly Channel<T>[] _lanes;
    private readonly LaneDriver[] _laneDrivers;
    private readonly Task[] _drivers;
    private readonly CancellationToken _abort;
    private readonly Func<T, CancellationToken, ValueTask<int>> _attempt;
    private bool _stopping;

    public PartitionRouter(ChainContext context, Func<T, TKey> keySelector, int partitions, Func<ChainContext, Stage<T>> downstream, StageGuard guard)
    {
        _keySelector = keySelector;
        _guard = guard;
        _lanes = new Channel<T>[partitions];
        _drivers = new Task[partitions];
        _laneDrivers = new LaneDriver[partitions];
        _attempt = (item, _) => new ValueTask<int>(LaneOf(keySelector(item)));
        var run = context.Run;
        _abort = run.AbortToken;
        for (var i = 0; i < partitions; i++)
        {
            var lane = _lanes[i] = Channel.CreateBounded<T>(new BoundedChannelOptions(run.Options.BufferCapacity)
            {
                SingleReader = true,
                SingleWriter = true,
                FullMode = BoundedChannelFullMode.Wait,
            });
            var driver = _laneDrivers[i] = new LaneDriver(run, lane.Reader, this);
            if (run.Store is not null)
            {
                // An idle partition wakes up for a snapshot barrier.
                driver.UseTimers();
            }

            driver.Head = downstream(new ChainContext(run, i, partitions, driver));
            _drivers[i] = run.StartAuxiliary(driver.RunAsync);
        }
    }

    public override ValueTask OnNextAsync(T item)
    {
        int lane;
        try
        {
            lane = LaneOf(_keySelector(item));
        }
        catch (Exception ex)
        {
            return RecoverAsync(item, ex);
        }

        return Write(lane, item);
    }

    public override async ValueTask OnCompletedAsync(bool final)
    {
        _stopping = !final;
        foreach (var lane in _lanes)
        {
            lane.Writer.TryComplete();
        }

        await Task.WhenAll(_drivers).ConfigureAwait(false);
    }

    public override ValueTask OnTickAsync() => default;

    /// <summary>
    /// A snapshot between two elements of the source: each partition saves its state once it has handled everything
    /// routed to it so far (the source waits meanwhile), and the last one to do so flushes the merge in front of the
    /// sink (see <see cref="MergeHub{T}"/>), so the snapshot holds the state of every element taken and every result
    /// produced from them.
    /// </summary>
    public override async ValueTask OnCheckpointAsync()
    {
        var barriers = new Task[_laneDrivers.Length];
        for (var i = 0; i < barriers.Length; i++)
        {
            barriers[i] = _laneDrivers[i].BarrierAsync();
        }

        await Task.WhenAll(barriers).WaitAsync(_abort).ConfigureAwait(false);
    }

    /// <summary>A stable hash, the same in every process: a restarted pipeline sees each key in the partition whose window state it saved.</summary>
    private int LaneOf(TKey key) => PartitionHash.Partition(key, _lanes.Length);

    private ValueTask Write(int lane, T item)
    {
        var writer = _lanes[lane].Writer;
        return writer.TryWrite(item) ? default : writer.WriteAsync(item, _guard.Token);
    }

    private async ValueTask RecoverAsync(T item, Exception failure)
    {
        var (ok, lane) = await _guard.RecoverAsync(item, failure, _attempt).ConfigureAwait(false);
        if (ok)
        {
            await Write(lane, item).ConfigureAwait(false);
        }
    }

    private sealed class LaneDriver(RunContext run, ChannelReader<T> reader, PartitionRouter<T, TKey> router)
        : ChannelDriver<T>(run, reader, honorStop: false)
    {
        protected override bool EndedByStop => router._stopping;
    }
}

/// <summary>The single sink behind a partitioned stream: partitions write into one bounded channel that one driver drains into the sink.</summary>
internal sealed class MergeHub<T>
{
    private readonly Channel<T> _channel;
    private readonly MergeDriver _driver;
    private readonly Task _running;
    private readonly int _partitions;
    private int _remaining;
    private int _arrived;
    private volatile bool _stopping;

    public MergeHub(RunContext run, int partitions, Func<ChainContext, Stage<T>> sink)
    {
        _remaining = partitions;
        _partitions = partitions;
        _channel = Channel.CreateBounded<T>(new BoundedChannelOptions(run.Options.BufferCapacity)
        {
            SingleReader = true,
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _driver = new MergeDriver(run, _channel.Reader, this);
        if (run.Store is not null)
        {
            // An idle merge wakes up for a snapshot barrier.
            _driver.UseTimers();
        }

        _driver.Head = sink(new ChainContext(run, -1, 0, _driver));
        _running = run.StartAuxiliary(_driver.RunAsync);
        Input = new MergeInput(this, run.AbortToken);
    }

    public Stage<T> Input { get; }

    private sealed class MergeDriver(RunContext run, ChannelReader<T> reader, MergeHub<T> hub)
        : ChannelDriver<T>(run, reader, honorStop: false)
    {
        protected override bool EndedByStop => hub._stopping;
    }

    private sealed class MergeInput(MergeHub<T> hub, CancellationToken abort) : Stage<T>
    {
        public override ValueTask OnNextAsync(T item)
        {
            var writer = hub._channel.Writer;
            return writer.TryWrite(item) ? default : writer.WriteAsync(item, abort);
        }

        public override ValueTask OnCompletedAsync(bool final)
        {
            if (!final)
            {
                hub._stopping = true;
            }

            if (Interlocked.Decrement(ref hub._remaining) == 0)
            {
                hub._channel.Writer.TryComplete();
                return new ValueTask(hub._running);
            }

            return default;
        }

        public override ValueTask OnTickAsync() => default;

        /// <summary>
        /// A partition reached a snapshot barrier, after writing every result it produced before it. When the last one
        /// arrives, the merge pushes what it holds into the sink, and the sink hands over its results for the snapshot.
        /// </summary>
        public override ValueTask OnCheckpointAsync()
        {
            if (Interlocked.Increment(ref hub._arrived) < hub._partitions)
            {
                return default;
            }

            Volatile.Write(ref hub._arrived, 0);
            return new ValueTask(hub._driver.BarrierAsync().WaitAsync(abort));
        }
    }
}
