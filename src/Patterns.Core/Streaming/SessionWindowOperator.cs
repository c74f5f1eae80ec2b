using System.Runtime.InteropServices;

namespace Patterns.Streaming;

/// <summary>
/// Session windows: per key, an element at t opens (or extends) a session [t, t + gap); sessions that come to
/// overlap merge, combining their accumulators. A session fires when the watermark passes its end. One queue,
/// ordered by the time each session next needs attention, finds what to fire or purge; entries are checked when
/// they come up, so extending a session costs nothing in the queue.
/// </summary>
internal sealed class SessionWindowOperator<T, TKey, TAcc, TResult, TAgg> : WindowOperatorBase<T, TKey, TAcc, TResult, TAgg>
    where TKey : notnull
    where TAgg : struct, IWindowAggregator<T, TAcc, TResult>
{
    private readonly long _gap;
    private readonly Dictionary<TKey, List<Session>> _byKey = [];
    private readonly PriorityQueue<Session, long> _due = new();
    private readonly List<Session> _overlapping = [];

    public SessionWindowOperator(Stage<WindowResult<TKey, TResult>> next, TAgg aggregator, WindowSettings<T, TKey> settings, ChainContext context)
        : base(next, aggregator, settings, context, "Session")
    {
        _gap = settings.Spec.Gap.Ticks;
        Restore();
    }

    protected override int AddCore(T item, long timestamp, TKey key)
    {
        var end = timestamp + _gap;
        if (end + Lateness <= Watermark)
        {
            return Late;
        }

        ref var sessions = ref CollectionsMarshal.GetValueRefOrAddDefault(_byKey, key, out _);
        sessions ??= new List<Session>(2);
        _overlapping.Clear();
        foreach (var session in sessions)
        {
            if (session.Start < end && timestamp < session.End)
            {
                _overlapping.Add(session);
            }
        }

        Session target;
        if (_overlapping.Count == 0)
        {
            target = new Session(key, timestamp, end, Init(item));
            Insert(sessions, target);
            Enqueue(target, end);
        }
        else
        {
            // Compute first, then commit, so a failing fold or merge leaves the sessions as they were.
            target = _overlapping[0];
            var accumulator = Add(target.Accumulator, item);
            long start = Math.Min(target.Start, timestamp), last = Math.Max(target.End, end);
            var emitted = target.Emitted;
            for (var i = 1; i < _overlapping.Count; i++)
            {
                var other = _overlapping[i];
                accumulator = Merge(accumulator, other.Accumulator);
                start = Math.Min(start, other.Start);
                last = Math.Max(last, other.End);
                emitted |= other.Emitted;
            }

            for (var i = 1; i < _overlapping.Count; i++)
            {
                _overlapping[i].Dead = true;
                sessions.Remove(_overlapping[i]);
            }

            target.Accumulator = accumulator;
            target.Start = start;
            target.End = last;
            target.Emitted = emitted;
        }

        if (target.End > Watermark)
        {
            // Open (again, if a late element extended a fired session past the watermark): it fires when the watermark passes its end.
            target.Fired = false;
            return 0;
        }

        Updates.Add(Result(key, target.Start, target.End, target.Accumulator, isUpdate: target.Emitted));
        target.Fired = true;
        target.Emitted = true;
        Enqueue(target, target.End + Lateness);
        return Updated;
    }

    protected override async ValueTask AdvanceAsync()
    {
        var watermark = Watermark;
        while (_due.TryPeek(out var session, out var due) && due <= watermark)
        {
            _due.Dequeue();
            if (session.Dead)
            {
                continue;
            }

            var wanted = session.Fired ? session.End + Lateness : session.End;
            if (wanted > due)
            {
                // Extended since it was queued.
                _due.Enqueue(session, wanted);
                continue;
            }

            if (!session.Fired)
            {
                var isUpdate = session.Emitted;
                session.Fired = true;
                session.Emitted = true;
                _due.Enqueue(session, session.End + Lateness);
                await Next.OnNextAsync(Result(session.Key, session.Start, session.End, session.Accumulator, isUpdate)).ConfigureAwait(false);
                continue;
            }

            session.Dead = true;
            var sessions = _byKey[session.Key];
            sessions.Remove(session);
            if (sessions.Count == 0)
            {
                _byKey.Remove(session.Key);
            }
        }

        RecomputeNextDue();
    }

    protected override async ValueTask FireAllAsync()
    {
        var open = new List<Session>();
        foreach (var sessions in _byKey.Values)
        {
            open.AddRange(sessions.Where(s => !s.Fired));
        }

        open.Sort(static (a, b) => a.End != b.End ? a.End.CompareTo(b.End) : a.Start.CompareTo(b.Start));
        foreach (var session in open)
        {
            session.Fired = true;
            await Next.OnNextAsync(Result(session.Key, session.Start, session.End, session.Accumulator, isUpdate: session.Emitted)).ConfigureAwait(false);
        }

        _byKey.Clear();
        _due.Clear();
        NextDue = long.MaxValue;
    }

    protected override IReadOnlyList<WindowState<TKey, TAcc>> SaveWindows() =>
        [.. _byKey.Values.SelectMany(s => s).Select(s => new WindowState<TKey, TAcc>(s.Key, ToTime(s.Start), ToTime(s.End), s.Accumulator, s.Fired))];

    protected override void RestoreWindow(WindowState<TKey, TAcc> window)
    {
        ref var sessions = ref CollectionsMarshal.GetValueRefOrAddDefault(_byKey, window.Key, out _);
        sessions ??= new List<Session>(2);
        var session = new Session(window.Key, window.Start.UtcTicks, window.End.UtcTicks, window.Accumulator) { Fired = window.Fired, Emitted = window.Fired };
        Insert(sessions, session);
        _due.Enqueue(session, session.Fired ? session.End + Lateness : session.End);
    }

    protected override void RecomputeNextDue() => NextDue = _due.TryPeek(out _, out var due) ? due : long.MaxValue;

    private static void Insert(List<Session> sessions, Session session)
    {
        var i = sessions.Count;
        while (i > 0 && sessions[i - 1].Start > session.Start)
        {
            i--;
        }

        sessions.Insert(i, session);
    }

    private void Enqueue(Session session, long due)
    {
        _due.Enqueue(session, due);
        NextDue = Math.Min(NextDue, due);
    }

    private sealed class Session(TKey key, long start, long end, TAcc accumulator)
    {
        public TKey Key { get; } = key;

        public long Start { get; set; } = start;

        public long End { get; set; } = end;

        public TAcc Accumulator { get; set; } = accumulator;

        /// <summary>Gets or sets a value indicating whether the current value has been emitted (the session now waits to be purged).</summary>
        public bool Fired { get; set; }

        /// <summary>Gets or sets a value indicating whether any value of the session was emitted, so the next one is an update.</summary>
        public bool Emitted { get; set; }

        public bool Dead { get; set; }
    }
}
