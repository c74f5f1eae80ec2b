using System.Globalization;
using Patterns.Serialization;

namespace Patterns.Streaming;

/// <summary>How a window stage was configured.</summary>
internal sealed record WindowSettings<T, TKey>(
    Func<T, TKey> KeySelector,
    Func<T, DateTimeOffset>? Timestamp,
    TimeSpan MaxOutOfOrderness,
    WindowSpec Spec,
    TimeSpan AllowedLateness,
    Func<LateEvent<T>, CancellationToken, ValueTask>? OnLate,
    FailurePolicy? OnError,
    int Depth,
    string? Name);

/// <summary>
/// What every window stage shares: event or processing time, the watermark (the largest timestamp seen minus the
/// bounded out-of-orderness), late events, the timers of processing-time windows, failure handling and snapshots.
/// Subclasses keep the windows; all times are UTC ticks.
/// </summary>
internal abstract class WindowOperatorBase<T, TKey, TAcc, TResult, TAgg> : Stage<T>
    where TKey : notnull
    where TAgg : struct, IWindowAggregator<T, TAcc, TResult>
{
    protected const int Late = 1;
    protected const int Updated = 2;

    private readonly Func<T, TKey> _keySelector;
    private readonly Func<T, DateTimeOffset>? _timestamp;
    private readonly Func<LateEvent<T>, CancellationToken, ValueTask>? _onLate;
    private readonly StageGuard _guard;
    private readonly RunContext _run;
    private readonly Driver _driver;
    private readonly string _id;
    private readonly string _kind;
    private ITimer? _timer;
    private long _timerDue = long.MaxValue;
    private long _maxTimestamp = long.MinValue;
    private TAgg _aggregator;

    protected WindowOperatorBase(Stage<WindowResult<TKey, TResult>> next, TAgg aggregator, WindowSettings<T, TKey> settings, ChainContext context, string kind)
    {
        Next = next;
        _aggregator = aggregator;
        _keySelector = settings.KeySelector;
        _timestamp = settings.Timestamp;
        _onLate = settings.OnLate;
        OutOfOrder = settings.MaxOutOfOrderness.Ticks;
        Lateness = settings.AllowedLateness.Ticks;
        _run = context.Run;
        _driver = context.Driver;
        _kind = kind;
        _id = context.StageId(StageNames.Of(settings.Name, kind, settings.Depth));
        _guard = new StageGuard(context, _id, settings.OnError);
        if (_timestamp is null)
        {
            _driver.UseTimers();
        }
    }

    protected Stage<WindowResult<TKey, TResult>> Next { get; }

    protected long OutOfOrder { get; }

    protected long Lateness { get; }

    /// <summary>Gets or sets the watermark: windows ending at or before it have fired. <see cref="long.MinValue"/> before the first element.</summary>
    protected long Watermark { get; set; } = long.MinValue;

    /// <summary>Gets or sets the earliest time at which a window fires or is purged; the watermark passing it triggers <see cref="AdvanceAsync"/>.</summary>
    protected long NextDue { get; set; } = long.MaxValue;

    /// <summary>Gets results to emit at once: windows changed by a late (but allowed) element.</summary>
    protected List<WindowResult<TKey, TResult>> Updates { get; } = [];

    private bool ProcessingTime => _timestamp is null;

    public sealed override ValueTask OnNextAsync(T item)
    {
        long timestamp;
        TKey key;
        try
        {
            timestamp = _timestamp is null ? Now() : _timestamp(item).UtcTicks;
            key = _keySelector(item);
        }
        catch (Exception ex)
        {
            return RecoverPrepareAsync(item, ex);
        }

        return Accept(item, timestamp, key);
    }

    public sealed override async ValueTask OnCompletedAsync(bool final)
    {
        DisposeTimer();
        if (final)
        {
            Watermark = long.MaxValue;
            await FireAllAsync().ConfigureAwait(false);
            _run.RemoveState(_id);
        }
        else
        {
            SaveState();
        }

        await Next.OnCompletedAsync(final).ConfigureAwait(false);
    }

    public sealed override ValueTask OnCheckpointAsync()
    {
        SaveState();
        return Next.OnCheckpointAsync();
    }

    private void SaveState()
    {
        var watermark = Watermark == long.MinValue ? (DateTimeOffset?)null : ToTime(Watermark);
        _run.SaveState(_id, new WindowOperatorState<TKey, TAcc>(_kind, watermark, SaveWindows()));
    }

    public sealed override async ValueTask OnTickAsync()
    {
        if (ProcessingTime)
        {
            _timerDue = long.MaxValue;
            var now = Now();
            if (now > Watermark)
            {
                Watermark = now;
                _maxTimestamp = Math.Max(_maxTimestamp, now);
            }

            if (Watermark >= NextDue)
            {
                await AdvanceAsync().ConfigureAwait(false);
            }

            ArmTimer();
        }

        await Next.OnTickAsync().ConfigureAwait(false);
    }

    protected static DateTimeOffset ToTime(long ticks) => new(ticks, TimeSpan.Zero);

    private static string TypeName(Type type) =>
        type.IsGenericType ? $"{type.Name[..type.Name.IndexOf('`', StringComparison.Ordinal)]}<{string.Join(", ", type.GetGenericArguments().Select(TypeName))}>" : type.Name;

    protected static long PositiveMod(long value, long divisor)
    {
        var rest = value % divisor;
        return rest < 0 ? rest + divisor : rest;
    }

    protected WindowResult<TKey, TResult> Result(TKey key, long start, long end, TAcc accumulator, bool isUpdate) =>
        new(key, ToTime(start), ToTime(end), _aggregator.Result(accumulator), isUpdate);

    protected TAcc Init(T item) => _aggregator.Init(item);

    protected TAcc Add(TAcc accumulator, T item) => _aggregator.Add(accumulator, item);

    protected TAcc Merge(TAcc left, TAcc right) => _aggregator.Merge(left, right);

    /// <summary>Restores windows from a snapshot, before the first element.</summary>
    protected void Restore()
    {
        if (_run.Restore(_id, _kind) is not { } saved)
        {
            return;
        }

        if (saved is SerializedStageState serialized)
        {
            // A durable snapshot holds bytes: only this stage knows the type they were written from.
            try
            {
                saved = serialized.Deserialize(typeof(WindowOperatorState<TKey, TAcc>));
            }
            catch (Exception ex) when (ex is MessageDeserializationException or NotSupportedException or InvalidOperationException)
            {
                throw new StreamSnapshotMismatchException(
                    _run.Name,
                    _id,
                    $"Stream '{_run.Name}' cannot resume from its snapshot: the state saved for stage '{_id}' is not a {TypeName(typeof(WindowOperatorState<TKey, TAcc>))} ({ex.Message}). Was the stage's key or aggregation changed? Delete the snapshot to start empty.");
            }
        }

        if (saved is not WindowOperatorState<TKey, TAcc> state)
        {
            throw new StreamSnapshotMismatchException(
                _run.Name,
                _id,
                $"Stream '{_run.Name}' cannot resume from its snapshot: it holds a {TypeName(saved.GetType())} for stage '{_id}', which keeps a {TypeName(typeof(WindowOperatorState<TKey, TAcc>))}. Was the stage's key or aggregation changed? Delete the snapshot to start empty.");
        }

        if (!string.Equals(state.Kind, _kind, StringComparison.Ordinal))
        {
            throw new StreamSnapshotMismatchException(
                _run.Name,
                _id,
                $"Stream '{_run.Name}' cannot resume from its snapshot: stage '{_id}' is a {_kind} window, but the snapshot holds the state of a {state.Kind} window under that name. Give the new window another name, or delete the snapshot to start empty.");
        }

        if (state.Watermark is { } watermark)
        {
            Watermark = watermark.UtcTicks;
            _maxTimestamp = ProcessingTime ? Watermark : Watermark + OutOfOrder;
        }

        foreach (var window in state.Windows)
        {
            RestoreWindow(window);
        }

        RecomputeNextDue();
    }

    /// <summary>Folds one element into its windows. Returns <see cref="Late"/> when a window it belongs to has closed for good and <see cref="Updated"/> when <see cref="Updates"/> has results to emit.</summary>
    protected abstract int AddCore(T item, long timestamp, TKey key);

    /// <summary>Fires the windows whose end the watermark has passed, in end order, and purges those past their allowed lateness.</summary>
    protected abstract ValueTask AdvanceAsync();

    /// <summary>The input is exhausted: fires every window that has not fired.</summary>
    protected abstract ValueTask FireAllAsync();

    protected abstract IReadOnlyList<WindowState<TKey, TAcc>> SaveWindows();

    protected abstract void RestoreWindow(WindowState<TKey, TAcc> window);

    protected abstract void RecomputeNextDue();

    private ValueTask Accept(T item, long timestamp, TKey key)
    {
        if (timestamp > _maxTimestamp)
        {
            _maxTimestamp = timestamp;
            var watermark = ProcessingTime ? timestamp : timestamp - OutOfOrder;
            if (watermark > Watermark)
            {
                Watermark = watermark;
                if (watermark >= NextDue)
                {
                    return AdvanceThenAddAsync(item, timestamp, key);
                }
            }
        }

        return Add(item, timestamp, key);
    }

    private ValueTask Add(T item, long timestamp, TKey key)
    {
        int outcome;
        try
        {
            outcome = AddCore(item, timestamp, key);
        }
        catch (Exception ex)
        {
            return RecoverAddAsync(item, timestamp, key, ex);
        }

        if (ProcessingTime)
        {
            ArmTimer();
        }

        return outcome == 0 ? default : FinishAsync(item, timestamp, outcome);
    }

    private async ValueTask AdvanceThenAddAsync(T item, long timestamp, TKey key)
    {
        await AdvanceAsync().ConfigureAwait(false);
        await Add(item, timestamp, key).ConfigureAwait(false);
    }

    private async ValueTask FinishAsync(T item, long timestamp, int outcome)
    {
        if ((outcome & Updated) != 0)
        {
            foreach (var update in Updates)
            {
                await Next.OnNextAsync(update).ConfigureAwait(false);
            }

            Updates.Clear();
        }

        if ((outcome & Late) != 0)
        {
            await LateAsync(item, timestamp).ConfigureAwait(false);
        }
    }

    private async ValueTask LateAsync(T item, long timestamp)
    {
        StreamingTelemetry.LateEvents.Add(1, _run.Tags);
        StreamingLog.LateEvent(_run.Logger, _run.Name, _id, ToTime(timestamp), ToTime(Watermark));
        if (_onLate is null)
        {
            var lateness = TimeSpan.FromTicks(Lateness).ToString("c", CultureInfo.InvariantCulture);
            await _run.DeadLetterAsync(_id, item, new LateEventException(
                $"An event at {ToTime(timestamp):O} arrived after its window closed for good: the watermark is {ToTime(Watermark):O} and the allowed lateness {lateness}.")).ConfigureAwait(false);
            return;
        }

        try
        {
            await _onLate(new LateEvent<T>(item, ToTime(timestamp), ToTime(Watermark)), _run.AbortToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !_run.AbortToken.IsCancellationRequested)
        {
            await _run.DeadLetterAsync(_id + ":late", item, ex).ConfigureAwait(false);
        }
    }

    private async ValueTask RecoverPrepareAsync(T item, Exception failure)
    {
        var (ok, prepared) = await _guard.RecoverAsync(
            item,
            failure,
            (x, _) => new ValueTask<(long, TKey)>((_timestamp is null ? Now() : _timestamp(x).UtcTicks, _keySelector(x)))).ConfigureAwait(false);
        if (ok)
        {
            await Accept(item, prepared.Item1, prepared.Item2).ConfigureAwait(false);
        }
    }

    private async ValueTask RecoverAddAsync(T item, long timestamp, TKey key, Exception failure)
    {
        var (ok, outcome) = await _guard.RecoverAsync(item, failure, (x, _) => new ValueTask<int>(AddCore(x, timestamp, key))).ConfigureAwait(false);
        if (ok && outcome != 0)
        {
            await FinishAsync(item, timestamp, outcome).ConfigureAwait(false);
        }
    }

    private long Now() => _run.Time.GetUtcNow().UtcTicks;

    private void ArmTimer()
    {
        var due = NextDue;
        if (due == long.MaxValue || due >= _timerDue)
        {
            return;
        }

        _timerDue = due;
        var dueIn = TimeSpan.FromTicks(Math.Max(1, due - Now()));
        if (_timer is null)
        {
            _timer = _run.Time.CreateTimer(static s => ((Driver)s!).RequestTick(), _driver, dueIn, Timeout.InfiniteTimeSpan);
        }
        else
        {
            _timer.Change(dueIn, Timeout.InfiniteTimeSpan);
        }
    }

    private void DisposeTimer()
    {
        _timer?.Dispose();
        _timer = null;
        _timerDue = long.MaxValue;
    }
}
