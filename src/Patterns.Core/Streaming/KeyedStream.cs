using System.Numerics;

namespace Patterns.Streaming;

/// <summary>A stream grouped by key, ready to be windowed.</summary>
/// <typeparam name="T">The element type.</typeparam>
/// <typeparam name="TKey">The key type.</typeparam>
public sealed class KeyedStream<T, TKey>
    where TKey : notnull
{
    internal KeyedStream(DataStream<T> upstream, Func<T, TKey> keySelector)
    {
        Upstream = upstream;
        KeySelector = keySelector;
    }

    internal DataStream<T> Upstream { get; }

    internal Func<T, TKey> KeySelector { get; }

    /// <summary>
    /// Windows the stream. On event time (after <see cref="DataStream{T}.WithEventTime"/>), a window fires when the
    /// watermark passes its end; it then stays open for <paramref name="allowedLateness"/>, and each late element that
    /// still falls in it emits an updated result (<see cref="WindowResult{TKey, TValue}.IsUpdate"/>). Elements later
    /// than that go to <paramref name="onLate"/> (or, without it, to the pipeline's dead-letter output): never dropped silently.
    /// Without event time, windows use the pipeline's clock (processing time) and fire on its timers.
    /// </summary>
    /// <param name="window">Tumbling, hopping or session windows.</param>
    /// <param name="allowedLateness">How long after firing a window still takes late elements (event time only).</param>
    /// <param name="onLate">The late output (event time only).</param>
    /// <param name="onError">What to do when the key selector, the timestamp function or the aggregation throws.</param>
    /// <param name="name">
    /// The window stage's name, under which its state is saved in snapshots (and which names it in dead letters and logs);
    /// unique in the pipeline. Without it, the name is the window's kind and position (for example <c>Tumbling@3</c>), so
    /// adding or removing an operator in front of the window changes it and a snapshot taken before no longer restores.
    /// </param>
    /// <returns>The windowed stream; choose an aggregation.</returns>
    public WindowedStream<T, TKey> Window(
        WindowSpec window,
        TimeSpan? allowedLateness = null,
        Func<LateEvent<T>, CancellationToken, ValueTask>? onLate = null,
        FailurePolicy? onError = null,
        string? name = null)
    {
        StageNames.Validate(name);
        ArgumentNullException.ThrowIfNull(window);
        var lateness = allowedLateness ?? TimeSpan.Zero;
        ArgumentOutOfRangeException.ThrowIfLessThan(lateness, TimeSpan.Zero, nameof(allowedLateness));
        var eventTime = Upstream.EventTime;
        if (eventTime is null && (lateness > TimeSpan.Zero || onLate is not null))
        {
            throw new ArgumentException(
                "Allowed lateness and a late output apply to event-time windows only; call WithEventTime(...) before KeyBy(...).", nameof(allowedLateness));
        }

        return new WindowedStream<T, TKey>(
            Upstream,
            new WindowSettings<T, TKey>(KeySelector, eventTime?.Timestamp, eventTime?.MaxOutOfOrderness ?? TimeSpan.Zero, window, lateness, onLate, onError, Upstream.Depth + 1, name));
    }
}

/// <summary>A keyed, windowed stream: choose the aggregation computed per key and window.</summary>
/// <typeparam name="T">The element type.</typeparam>
/// <typeparam name="TKey">The key type.</typeparam>
/// <remarks>Each aggregation is folded as elements arrive (one dictionary lookup and one fold per element and window); elements are not kept.</remarks>
public sealed class WindowedStream<T, TKey>
    where TKey : notnull
{
    private readonly DataStream<T> _upstream;
    private readonly WindowSettings<T, TKey> _settings;

    internal WindowedStream(DataStream<T> upstream, WindowSettings<T, TKey> settings)
    {
        _upstream = upstream;
        _settings = settings;
    }

    /// <summary>Counts the elements per key and window.</summary>
    /// <returns>A stream of counts.</returns>
    public DataStream<WindowResult<TKey, long>> Count() => Create<long, long, CountAggregator<T>>(default);

    /// <summary>Sums a value per key and window.</summary>
    /// <typeparam name="TValue">A numeric type.</typeparam>
    /// <param name="selector">Gets an element's value.</param>
    /// <returns>A stream of sums.</returns>
    public DataStream<WindowResult<TKey, TValue>> Sum<TValue>(Func<T, TValue> selector)
        where TValue : INumber<TValue>
    {
        ArgumentNullException.ThrowIfNull(selector);
        return Create<TValue, TValue, SumAggregator<T, TValue>>(new(selector));
    }

    /// <summary>The smallest value per key and window (by <see cref="Comparer{T}.Default"/>).</summary>
    /// <typeparam name="TValue">The value type.</typeparam>
    /// <param name="selector">Gets an element's value.</param>
    /// <returns>A stream of minimums.</returns>
    public DataStream<WindowResult<TKey, TValue>> Min<TValue>(Func<T, TValue> selector)
    {
        ArgumentNullException.ThrowIfNull(selector);
        return Create<TValue, TValue, MinAggregator<T, TValue>>(new(selector));
    }

    /// <summary>The largest value per key and window (by <see cref="Comparer{T}.Default"/>).</summary>
    /// <typeparam name="TValue">The value type.</typeparam>
    /// <param name="selector">Gets an element's value.</param>
    /// <returns>A stream of maximums.</returns>
    public DataStream<WindowResult<TKey, TValue>> Max<TValue>(Func<T, TValue> selector)
    {
        ArgumentNullException.ThrowIfNull(selector);
        return Create<TValue, TValue, MaxAggregator<T, TValue>>(new(selector));
    }

    /// <summary>Folds the elements per key and window, starting from <paramref name="seed"/> for each.</summary>
    /// <typeparam name="TAccumulate">The accumulator type; treat it as immutable (return a new value from <paramref name="fold"/>), since the seed is shared.</typeparam>
    /// <param name="seed">The initial accumulator of every key and window.</param>
    /// <param name="fold">Adds one element to an accumulator.</param>
    /// <param name="merge">Combines two accumulators; required for session windows, which merge.</param>
    /// <returns>A stream of accumulators.</returns>
    /// <exception cref="ArgumentException">Session windows without <paramref name="merge"/>.</exception>
    public DataStream<WindowResult<TKey, TAccumulate>> Aggregate<TAccumulate>(TAccumulate seed, Func<TAccumulate, T, TAccumulate> fold, Func<TAccumulate, TAccumulate, TAccumulate>? merge = null)
    {
        ArgumentNullException.ThrowIfNull(fold);
        if (_settings.Spec.Kind == WindowKind.Session && merge is null)
        {
            throw new ArgumentException("Session windows merge when they come to overlap, so Aggregate needs a merge function for them.", nameof(merge));
        }

        return Create<TAccumulate, TAccumulate, FoldAggregator<T, TAccumulate>>(new(seed, fold, merge));
    }

    private DataStream<WindowResult<TKey, TResult>> Create<TAcc, TResult, TAgg>(TAgg aggregator)
        where TAgg : struct, IWindowAggregator<T, TAcc, TResult>
    {
        var settings = _settings;
        var kind = settings.Spec.Kind;
        return new OperatorStream<T, WindowResult<TKey, TResult>>(
            _upstream,
            null,
            null,
            (next, context, _) => kind == WindowKind.Session
                ? new SessionWindowOperator<T, TKey, TAcc, TResult, TAgg>(next, aggregator, settings, context)
                : new TimeWindowOperator<T, TKey, TAcc, TResult, TAgg>(next, aggregator, settings, context),
            null);
    }
}
