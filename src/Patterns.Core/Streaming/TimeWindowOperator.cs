using System.Runtime.InteropServices;

namespace Patterns.Streaming;

/// <summary>
/// Tumbling and hopping windows. Each open window is a dictionary from key to accumulator, so an element costs a
/// key lookup and a fold per window it belongs to, with no allocation; the last window used is cached, so elements of
/// tumbling windows that fall in the same window as the element before them skip the window lookup and the division. Window dictionaries are reused after they are purged.
/// </summary>
internal sealed class TimeWindowOperator<T, TKey, TAcc, TResult, TAgg> : WindowOperatorBase<T, TKey, TAcc, TResult, TAgg>
    where TKey : notnull
    where TAgg : struct, IWindowAggregator<T, TAcc, TResult>
{
    private readonly long _size;
    private readonly long _slide;
    private readonly Dictionary<long, Bucket> _windows = [];
    private readonly Stack<Bucket> _pool = new();
    private readonly List<Bucket> _scratch = [];
    private Bucket? _last;

    public TimeWindowOperator(Stage<WindowResult<TKey, TResult>> next, TAgg aggregator, WindowSettings<T, TKey> settings, ChainContext context)
        : base(next, aggregator, settings, context, settings.Spec.Kind == WindowKind.Tumbling ? "Tumbling" : "Hopping")
    {
        _size = settings.Spec.Size.Ticks;
        _slide = settings.Spec.Slide.Ticks;
        Restore();
    }

    protected override int AddCore(T item, long timestamp, TKey key)
    {
        if (_slide == _size)
        {
            // Most elements fall in the window of the element before them: test that window's range first, which
            // spares the 64-bit division (the window size is not a constant the JIT could turn into a multiply).
            var bucket = _last;
            long start;
            if (bucket is not null && (ulong)(timestamp - bucket.Start) < (ulong)_size)
            {
                start = bucket.Start;
            }
            else
            {
                start = timestamp - PositiveMod(timestamp, _size);
                bucket = null;
            }

            if (start + _size + Lateness <= Watermark)
            {
                return Late;
            }

            return Fold(bucket ?? GetBucket(start), item, key);
        }

        var outcome = 0;
        for (var start = timestamp - PositiveMod(timestamp, _slide); start > timestamp - _size; start -= _slide)
        {
            if (start + _size + Lateness <= Watermark)
            {
                // Earlier windows end earlier still: closed too.
                outcome |= Late;
                break;
            }

            outcome |= Fold(GetBucket(start), item, key);
        }

        return outcome;
    }

    protected override async ValueTask AdvanceAsync()
    {
        var watermark = Watermark;
        _scratch.Clear();
        foreach (var bucket in _windows.Values)
        {
            if (!bucket.Fired && bucket.End <= watermark)
            {
                _scratch.Add(bucket);
            }
        }

        if (_scratch.Count > 1)
        {
            _scratch.Sort(static (a, b) => a.End != b.End ? a.End.CompareTo(b.End) : a.Start.CompareTo(b.Start));
        }

        foreach (var bucket in _scratch)
        {
            bucket.Fired = true;
            foreach (var (key, accumulator) in bucket.State)
            {
                await Next.OnNextAsync(Result(key, bucket.Start, bucket.End, accumulator, isUpdate: false)).ConfigureAwait(false);
            }
        }

        _scratch.Clear();
        foreach (var bucket in _windows.Values)
        {
            if (bucket.Fired && bucket.End + Lateness <= watermark)
            {
                _scratch.Add(bucket);
            }
        }

        foreach (var bucket in _scratch)
        {
            Recycle(bucket);
        }

        _scratch.Clear();
        RecomputeNextDue();
    }

    protected override async ValueTask FireAllAsync()
    {
        _scratch.Clear();
        _scratch.AddRange(_windows.Values);
        _scratch.Sort(static (a, b) => a.End != b.End ? a.End.CompareTo(b.End) : a.Start.CompareTo(b.Start));
        foreach (var bucket in _scratch)
        {
            if (!bucket.Fired)
            {
                bucket.Fired = true;
                foreach (var (key, accumulator) in bucket.State)
                {
                    await Next.OnNextAsync(Result(key, bucket.Start, bucket.End, accumulator, isUpdate: false)).ConfigureAwait(false);
                }
            }

            Recycle(bucket);
        }

        _scratch.Clear();
        NextDue = long.MaxValue;
    }

    protected override IReadOnlyList<WindowState<TKey, TAcc>> SaveWindows()
    {
        var windows = new List<WindowState<TKey, TAcc>>();
        foreach (var bucket in _windows.Values)
        {
            foreach (var (key, accumulator) in bucket.State)
            {
                windows.Add(new WindowState<TKey, TAcc>(key, ToTime(bucket.Start), ToTime(bucket.End), accumulator, bucket.Fired));
            }
        }

        return windows;
    }

    protected override void RestoreWindow(WindowState<TKey, TAcc> window)
    {
        var bucket = GetBucket(window.Start.UtcTicks);
        bucket.State[window.Key] = window.Accumulator;
        bucket.Fired |= window.Fired;
    }

    protected override void RecomputeNextDue()
    {
        var next = long.MaxValue;
        foreach (var bucket in _windows.Values)
        {
            next = Math.Min(next, bucket.Fired ? bucket.End + Lateness : bucket.End);
        }

        NextDue = next;
    }

    private int Fold(Bucket bucket, T item, TKey key)
    {
        ref var accumulator = ref CollectionsMarshal.GetValueRefOrAddDefault(bucket.State, key, out var exists);
        if (exists)
        {
            accumulator = Add(accumulator!, item);
        }
        else
        {
            try
            {
                accumulator = Init(item);
            }
            catch
            {
                bucket.State.Remove(key);
                throw;
            }
        }

        if (bucket.End > Watermark)
        {
            return 0;
        }

        // The window has fired (or ends behind the watermark and was only now opened by a late, allowed element):
        // emit its new value for this key at once.
        Updates.Add(Result(key, bucket.Start, bucket.End, accumulator, isUpdate: bucket.Fired));
        if (!bucket.Fired)
        {
            bucket.Fired = true;
            NextDue = Math.Min(NextDue, bucket.End + Lateness);
        }

        return Updated;
    }

    private Bucket GetBucket(long start)
    {
        if (!_windows.TryGetValue(start, out var bucket))
        {
            bucket = _pool.Count > 0 ? _pool.Pop() : new Bucket();
            bucket.Start = start;
            bucket.End = start + _size;
            _windows.Add(start, bucket);
            NextDue = Math.Min(NextDue, bucket.End);
        }

        _last = bucket;
        return bucket;
    }

    private void Recycle(Bucket bucket)
    {
        _windows.Remove(bucket.Start);
        if (ReferenceEquals(_last, bucket))
        {
            _last = null;
        }

        bucket.State.Clear();
        bucket.Fired = false;
        _pool.Push(bucket);
    }

    private sealed class Bucket
    {
        public long Start { get; set; }

        public long End { get; set; }

        public bool Fired { get; set; }

        public Dictionary<TKey, TAcc> State { get; } = [];
    }
}
