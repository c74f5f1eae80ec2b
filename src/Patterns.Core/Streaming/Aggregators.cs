using System.Numerics;

namespace Patterns.Streaming;

/// <summary>
/// A window aggregation folded one element at a time. Implemented by structs so the window operator is compiled
/// for each one and the fold inlines (no delegate call for a count).
/// </summary>
internal interface IWindowAggregator<in T, TAcc, out TResult>
{
    bool CanMerge { get; }

    TAcc Init(T item);

    TAcc Add(TAcc accumulator, T item);

    TAcc Merge(TAcc left, TAcc right);

    TResult Result(TAcc accumulator);
}

internal readonly struct CountAggregator<T> : IWindowAggregator<T, long, long>
{
    public bool CanMerge => true;

    public long Init(T item) => 1;

    public long Add(long accumulator, T item) => accumulator + 1;

    public long Merge(long left, long right) => left + right;

    public long Result(long accumulator) => accumulator;
}

internal readonly struct SumAggregator<T, TValue>(Func<T, TValue> selector) : IWindowAggregator<T, TValue, TValue>
    where TValue : INumber<TValue>
{
    public bool CanMerge => true;

    public TValue Init(T item) => selector(item);

    public TValue Add(TValue accumulator, T item) => accumulator + selector(item);

    public TValue Merge(TValue left, TValue right) => left + right;

    public TValue Result(TValue accumulator) => accumulator;
}

internal readonly struct MinAggregator<T, TValue>(Func<T, TValue> selector) : IWindowAggregator<T, TValue, TValue>
{
    public bool CanMerge => true;

    public TValue Init(T item) => selector(item);

    public TValue Add(TValue accumulator, T item) => Merge(accumulator, selector(item));

    public TValue Merge(TValue left, TValue right) => Comparer<TValue>.Default.Compare(right, left) < 0 ? right : left;

    public TValue Result(TValue accumulator) => accumulator;
}

internal readonly struct MaxAggregator<T, TValue>(Func<T, TValue> selector) : IWindowAggregator<T, TValue, TValue>
{
    public bool CanMerge => true;

    public TValue Init(T item) => selector(item);

    public TValue Add(TValue accumulator, T item) => Merge(accumulator, selector(item));

    public TValue Merge(TValue left, TValue right) => Comparer<TValue>.Default.Compare(right, left) > 0 ? right : left;

    public TValue Result(TValue accumulator) => accumulator;
}

internal readonly struct FoldAggregator<T, TAcc>(TAcc seed, Func<TAcc, T, TAcc> fold, Func<TAcc, TAcc, TAcc>? merge) : IWindowAggregator<T, TAcc, TAcc>
{
    public bool CanMerge => merge is not null;

    public TAcc Init(T item) => fold(seed, item);

    public TAcc Add(TAcc accumulator, T item) => fold(accumulator, item);

    public TAcc Merge(TAcc left, TAcc right) => merge!(left, right);

    public TAcc Result(TAcc accumulator) => accumulator;
}
