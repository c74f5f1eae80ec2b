using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text.Json.Serialization.Metadata;
using Patterns.Streaming;

namespace Patterns.Etl;

/// <summary>
/// What a holding stage keeps in memory for one pass: keys (a dedupe) or groups (an aggregate), measured against the
/// byte budget. Every row carries its ordinal (its place in the stage's input), and every output its first row's.
/// </summary>
internal abstract class EtlHoldingState<TRow, TKey, TOut>
{
    /// <summary>Gets a value indicating whether what is held has passed the budget: from then on no key is added.</summary>
    public abstract bool Over { get; }

    /// <summary>Gets the bytes held, as measured against the budget.</summary>
    public abstract long Held { get; }

    /// <summary>Gets the number of keys (or groups) held.</summary>
    public abstract int Count { get; }

    /// <summary>
    /// Takes a row whose key is held, or adds its key when <paramref name="mayAdd"/>; puts what it emits at once in
    /// <paramref name="output"/>. Returns <see langword="false"/> for a row it did not take (a new key, adding not allowed).
    /// </summary>
    public abstract bool Offer(long ordinal, TKey key, TRow row, bool mayAdd, List<(long Ordinal, TOut Value)> output);

    /// <summary>What is left to emit at the end of the pass, by ordinal; the state is cleared as it goes.</summary>
    public abstract IEnumerable<(long Ordinal, TOut Value)> Drain();
}

/// <summary>Which spill partition a key goes to: the same for equal keys, with a different spread at each depth of splitting.</summary>
/// <remarks>
/// Spill files live only as long as the stage that writes them, in one process, so a key's hash need not be the same
/// in another process; it must only be equal for equal keys and spread distinct keys over all 64 bits.
/// </remarks>
internal static class EtlSpillHash
{
    /// <summary>
    /// How many times a hashing stage (<c>DistinctBy</c>, <c>Aggregate</c>, the join) splits a partition at the most:
    /// the top pass and up to seven more depths, each with its own hash. Past it, or where a split leaves every row in
    /// one part (the keys' hashes collide), what is left is finished in slices of the budget.
    /// </summary>
    public const int MaxDepth = 8;

    private static readonly ConcurrentDictionary<Type, FieldInfo[]?> RecordFields = new();
    private static readonly ConcurrentDictionary<Type, bool> SystemTuples = new();

    public static int Partition<TKey>(TKey key, IEqualityComparer<TKey> comparer, int depth, int partitions) =>
        (int)(Mix(Hash(key, comparer), depth) % (uint)partitions);

    /// <summary>The 64-bit hash of a key: its own bits, its components' hashes combined, or its 32-bit hash code.</summary>
    internal static ulong Hash<TKey>(TKey key, IEqualityComparer<TKey> comparer)
    {
        if (key is null)
        {
            return 0;
        }

        if (!ReferenceEquals(comparer, EqualityComparer<TKey>.Default))
        {
            // A caller's comparer decides equality: only its hash code is sure to agree with it.
            return (uint)comparer.GetHashCode(key);
        }

        if (WholeBits(key, out var bits))
        {
            return bits;
        }

        return typeof(TKey).IsPrimitive || typeof(TKey) == typeof(string) ? (uint)key.GetHashCode() : Bits(key);
    }

    /// <summary>
    /// The 64 bits of a key whose own hash code folds its two halves together with XOR (<c>long</c>, <c>ulong</c>,
    /// <c>DateTime</c>, <c>TimeSpan</c>, <c>DateTimeOffset</c>, and each of them nullable): every such key with equal halves hashes to 0, so they
    /// would all go to one partition at every depth. Only under the default comparer, where equal keys have equal bits.
    /// </summary>
    private static bool WholeBits<TKey>(TKey key, out ulong bits)
    {
        bits = 0;
        if (!typeof(TKey).IsValueType)
        {
            return false;
        }

        // Each test is a constant for a value type: the JIT keeps only the one that matches, without boxing.
        if (typeof(TKey) == typeof(long))
        {
            bits = (ulong)(long)(object)key!;
        }
        else if (typeof(TKey) == typeof(ulong))
        {
            bits = (ulong)(object)key!;
        }
        else if (typeof(TKey) == typeof(DateTime))
        {
            // DateTime equality compares ticks only (not the kind).
            bits = (ulong)((DateTime)(object)key!).Ticks;
        }
        else if (typeof(TKey) == typeof(TimeSpan))
        {
            bits = (ulong)((TimeSpan)(object)key!).Ticks;
        }
        else if (typeof(TKey) == typeof(DateTimeOffset))
        {
            // DateTimeOffset equality compares the instant (UTC ticks), not the offset.
            bits = (ulong)((DateTimeOffset)(object)key!).UtcTicks;
        }
        else if (Nullable.GetUnderlyingType(typeof(TKey)) is not null)
        {
            // A Nullable<T> key: the caller handles null, so it holds a value, and it boxes as that value.
            bits = Bits(key);
        }
        else
        {
            return false;
        }

        return true;
    }

    /// <summary>
    /// The 64-bit hash of a value under default equality: the whole bits of the types <see cref="WholeBits"/> names; for
    /// a tuple of the runtime's (<see cref="ValueTuple"/>, <see cref="Tuple"/>), a record or an anonymous type (whose equality the compiler wrote: each field by its
    /// type's default comparer), its components' 64-bit hashes combined; else its hash code.
    /// </summary>
    private static ulong Bits(object? value)
    {
        switch (value)
        {
            case null:
                return 0;
            case long v:
                return (ulong)v;
            case ulong v:
                return v;
            case DateTime v:
                return (ulong)v.Ticks;
            case TimeSpan v:
                return (ulong)v.Ticks;
            case DateTimeOffset v:
                return (ulong)v.UtcTicks;
            case string or int or uint or short or ushort or byte or sbyte or char or bool or double or float or decimal or Guid:
                return (uint)value.GetHashCode();
            case ITuple tuple when SystemTuples.GetOrAdd(value.GetType(), IsSystemTuple):
                var hash = (ulong)tuple.Length;
                for (var i = 0; i < tuple.Length; i++)
                {
                    hash = Mix(hash ^ Bits(tuple[i]), 0);
                }

                return hash;
        }

        if (RecordFields.GetOrAdd(value.GetType(), FieldsOf) is { } fields)
        {
            var hash = (ulong)fields.Length;
            foreach (var field in fields)
            {
                hash = Mix(hash ^ Bits(field.GetValue(value)), 0);
            }

            return hash;
        }

        return (uint)value.GetHashCode();
    }

    /// <summary>
    /// Whether <paramref name="type"/> is one of the runtime's tuples (<see cref="ValueTuple"/> or <see cref="Tuple"/>),
    /// whose equality compares each item by its default comparer. Another type can implement <see cref="ITuple"/> and
    /// compare something else.
    /// </summary>
    private static bool IsSystemTuple(Type type) =>
        type.Assembly == typeof(object).Assembly && type.IsGenericType && type.Namespace == "System"
        && (type.Name.StartsWith("ValueTuple`", StringComparison.Ordinal) || type.Name.StartsWith("Tuple`", StringComparison.Ordinal));

    /// <summary>
    /// The instance fields a type's equality compares, when the compiler wrote that equality: a record (class or struct,
    /// with each record it derives from) whose <c>Equals</c> is not the programmer's, or an anonymous type. Otherwise
    /// <see langword="null"/>: the type's own hash code is the only one sure to agree with its equality.
    /// </summary>
    [UnconditionalSuppressMessage("Trimming", "IL2070", Justification = "Fields are read only to hash a key. Where trimming removed the metadata of some, the hash covers those left, still equal for equal keys; where it removed Equals or every field, the key's own hash code is used.")]
    [UnconditionalSuppressMessage("Trimming", "IL2075", Justification = "As above: the base types of a record are read the same way.")]
    private static FieldInfo[]? FieldsOf(Type type)
    {
        const BindingFlags Declared = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly;
        // C#'s anonymous types compare every field; another compiler's (Visual Basic's compare only their Key fields) may not.
        if (type.IsDefined(typeof(CompilerGeneratedAttribute), inherit: false) && type.Name.StartsWith("<>f__AnonymousType", StringComparison.Ordinal))
        {
            return NoneIsNull(type.GetFields(Declared));
        }

        // F# marks the equality it writes as compiler-generated too, but compares arrays and collections item by item.
        if (type.CustomAttributes.Any(a => a.AttributeType.FullName == "Microsoft.FSharp.Core.CompilationMappingAttribute"))
        {
            return null;
        }

        var fields = new List<FieldInfo>();
        for (var t = type; t is not null && t != typeof(object) && t != typeof(ValueType); t = t.BaseType)
        {
            var equals = t.GetMethod(nameof(Equals), Declared, [t]);
            if (equals is null || !equals.IsDefined(typeof(CompilerGeneratedAttribute), inherit: false))
            {
                return null;
            }

            fields.AddRange(t.GetFields(Declared));
        }

        return NoneIsNull([.. fields]);

        static FieldInfo[]? NoneIsNull(FieldInfo[] fields) => fields.Length == 0 ? null : fields;
    }

    /// <summary>Spreads every bit of <paramref name="hash"/> over the result, differently at each depth (a SplitMix64 step).</summary>
    private static ulong Mix(ulong hash, int depth)
    {
        var x = hash + (0x9E3779B97F4A7C15UL * (ulong)(depth + 1));
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        return x ^ (x >> 31);
    }
}

/// <summary>
/// Hybrid hash spilling for the holding stages. One pass keeps what fits in its budget; once the state is over it,
/// rows of keys already held still go to it, and rows of other keys are written to one of a few partition files by a
/// hash of the key. At the end the pass emits what it holds, then finishes each partition in a pass of its own, which
/// splits it again with the hash of the next depth if it is still too large (up to <see cref="EtlSpillHash.MaxDepth"/>
/// splits, as the join). A partition no hash splits (a pass past the first sent all its overflow to one part: its keys'
/// hashes collide), or one still too large after the last split, is finished in slices: a pass holds what fits, writes
/// the rest to one file, emits, and the next slice reads that file; each slice finishes at least one key, so slicing
/// ends, within the budget, at the cost of reading what is left once a slice. Each partition's output is written to a
/// file in ordinal order, and those files are merged by ordinal. Every key held in memory was first seen before the
/// pass went over its budget, and every spilled key after, so outputs leave in the same order as without spilling: by
/// the ordinal of their first row.
/// </summary>
internal sealed class EtlHashSpill<TRow, TKey, TOut>
{
    private readonly EtlSpillSession _session;
    private readonly Func<TRow, TKey> _key;
    private readonly IEqualityComparer<TKey> _comparer;
    private readonly Func<EtlHoldingState<TRow, TKey, TOut>> _newState;
    private readonly Lazy<JsonTypeInfo<TRow>> _rowType;
    private readonly Lazy<JsonTypeInfo<TOut>> _outType;

    public EtlHashSpill(EtlSpillSession session, Func<TRow, TKey> key, IEqualityComparer<TKey> comparer, Func<EtlHoldingState<TRow, TKey, TOut>> newState)
    {
        _session = session;
        _key = key;
        _comparer = comparer;
        _newState = newState;
        _rowType = new(session.TypeInfo<TRow>);
        _outType = new(session.TypeInfo<TOut>);
    }

    public Pass Open() => new(this, 0, _session.Partitions);

    /// <summary>Finishes one partition file with a pass at <paramref name="depth"/>: split again by that depth's hash, or, past the last split, in slices.</summary>
    private IEnumerable<(long Ordinal, TOut Value)> Finish(string file, int depth, CancellationToken cancellationToken)
    {
        if (depth >= EtlSpillHash.MaxDepth)
        {
            foreach (var output in Slices(file, depth, cancellationToken))
            {
                yield return output;
            }

            yield break;
        }

        var pass = new Pass(this, depth, _session.Partitions);
        foreach (var output in pass.Read(file, cancellationToken))
        {
            yield return output;
        }

        foreach (var output in pass.Complete(cancellationToken))
        {
            yield return output;
        }
    }

    /// <summary>
    /// Finishes a partition in slices: each pass holds what fits and writes the rest, in order, to one file that the next
    /// pass reads. A slice's keys were all first seen before the keys it left, so the slices' outputs leave in order.
    /// </summary>
    private IEnumerable<(long Ordinal, TOut Value)> Slices(string file, int depth, CancellationToken cancellationToken)
    {
        _session.Observe("slices", depth, 0, 0);
        for (string? rest = file; rest is not null;)
        {
            var slice = new Pass(this, depth, 1);
            foreach (var output in slice.Read(rest, cancellationToken))
            {
                yield return output;
            }

            foreach (var output in slice.Drain())
            {
                yield return output;
            }

            // The first row of a slice always starts a group, so each slice leaves fewer keys than it read: slicing ends.
            var left = slice.Close();
            rest = left.Count == 0 ? null : left[0];
        }
    }

    /// <summary>One pass over rows: the top one over the stage's input, one over a partition file, or one slice of it.</summary>
    internal sealed class Pass(EtlHashSpill<TRow, TKey, TOut> owner, int depth, int partitions)
    {
        private readonly EtlHoldingState<TRow, TKey, TOut> _state = owner._newState();
        private EtlSpillWriter<TRow>?[]? _partitions;

        /// <summary>Gets a value indicating whether this pass has started writing rows to partition files.</summary>
        public bool Spilling => _partitions is not null;

        public void Add(long ordinal, TRow row, List<(long Ordinal, TOut Value)> output)
        {
            var k = owner._key(row);
            if (TryHold(ordinal, k, row, output))
            {
                return;
            }

            var index = partitions == 1 ? 0 : EtlSpillHash.Partition(k, owner._comparer, depth, partitions);
            var writer = _partitions![index] ??= owner._session.Create(owner._rowType.Value);
            writer.Write(ordinal, row);
        }

        /// <summary>What this pass holds, then the outputs of its partitions, by ordinal; stops at the next row read back once <paramref name="cancellationToken"/> is cancelled.</summary>
        public IEnumerable<(long Ordinal, TOut Value)> Complete(CancellationToken cancellationToken)
        {
            foreach (var output in Drain())
            {
                yield return output;
            }

            var files = Close();
            if (files.Count == 0)
            {
                yield break;
            }

            if (files.Count == 1)
            {
                // One partition has every spilled key. At the top that may be chance (few keys spilled); past it, the
                // hash of this depth did not split a partition that the previous one made: the keys' hashes collide.
                var rest = depth == 0 ? owner.Finish(files[0], depth + 1, cancellationToken) : owner.Slices(files[0], depth + 1, cancellationToken);
                foreach (var output in rest)
                {
                    yield return output;
                }

                yield break;
            }

            owner._session.Observe("split", depth, files.Count, 0);
            var results = new List<string>(files.Count);
            foreach (var file in files)
            {
                using var writer = owner._session.Create(owner._outType.Value);
                foreach (var (o, value) in owner.Finish(file, depth + 1, cancellationToken))
                {
                    writer.Write(o, value);
                }

                results.Add(writer.Path);
            }

            foreach (var output in owner._session.Merge(results, owner._outType.Value, cancellationToken))
            {
                yield return output;
            }
        }

        /// <summary>Adds the rows of a partition file (deleted once read), handing on what the state emits at once.</summary>
        internal IEnumerable<(long Ordinal, TOut Value)> Read(string file, CancellationToken cancellationToken)
        {
            var emitted = new List<(long Ordinal, TOut Value)>();
            foreach (var (ordinal, row) in owner._session.Read(file, owner._rowType.Value, cancellationToken: cancellationToken))
            {
                Add(ordinal, row, emitted);
                foreach (var output in emitted)
                {
                    yield return output;
                }

                emitted.Clear();
            }
        }

        /// <summary>What the state holds, by ordinal; the state is cleared as it goes.</summary>
        internal IEnumerable<(long Ordinal, TOut Value)> Drain()
        {
            owner._session.Observe("table", depth, _state.Count, _state.Held);
            return _state.Drain();
        }

        /// <summary>Closes the partition files this pass wrote and returns them.</summary>
        internal List<string> Close()
        {
            var files = new List<string>();
            if (_partitions is null)
            {
                return files;
            }

            foreach (var writer in _partitions)
            {
                if (writer is not null)
                {
                    writer.Dispose();
                    files.Add(writer.Path);
                }
            }

            _partitions = null;
            return files;
        }

        private bool TryHold(long ordinal, TKey k, TRow row, List<(long Ordinal, TOut Value)> output)
        {
            if (_state.Offer(ordinal, k, row, _partitions is null, output))
            {
                if (_partitions is null && _state.Over)
                {
                    _partitions = new EtlSpillWriter<TRow>?[partitions];
                }

                return true;
            }

            return false;
        }
    }
}

/// <summary>A dedupe's pass: the keys seen; a row of a new key is emitted at once.</summary>
internal sealed class EtlDistinctState<T, TKey>(IEqualityComparer<TKey>? comparer, Func<TKey, long> size, long budget) : EtlHoldingState<T, TKey, T>
{
    private HashSet<TKey> _seen = new(comparer);
    private long _held;

    public override bool Over => _held > budget;

    public override long Held => _held;

    public override int Count => _seen.Count;

    public override bool Offer(long ordinal, TKey key, T row, bool mayAdd, List<(long Ordinal, T Value)> output)
    {
        if (_seen.Contains(key))
        {
            return true;
        }

        if (!mayAdd)
        {
            return false;
        }

        _seen.Add(key);
        _held += EtlMemory.EntryOverhead + size(key);
        output.Add((ordinal, row));
        return true;
    }

    public override IEnumerable<(long Ordinal, T Value)> Drain()
    {
        _seen = new HashSet<TKey>(comparer);
        _held = 0;
        return [];
    }
}

/// <summary>An aggregate's pass: one accumulator per key, with its first row's ordinal; the results leave at the end.</summary>
internal sealed class EtlAggregateState<T, TKey, TAcc, TOut>(
    Func<TKey, TAcc> seed,
    Func<TAcc, T, TAcc> add,
    Func<TKey, TAcc, TOut> result,
    Func<TKey, long> keySize,
    Func<TAcc, long> accumulatorSize,
    long budget,
    Func<long, long, Exception> exceeded) : EtlHoldingState<T, TKey, TOut>
    where TKey : notnull
{
    private Dictionary<TKey, Group> _groups = [];
    private long _held;

    public override bool Over => _held > budget;

    public override long Held => _held;

    public override int Count => _groups.Count;

    public override bool Offer(long ordinal, TKey key, T row, bool mayAdd, List<(long Ordinal, TOut Value)> output)
    {
        if (_groups.TryGetValue(key, out var group))
        {
            group.Accumulator = add(group.Accumulator, row);

            // An accumulator that add changes in place is the same object before and after: only the stored size shows how much it grew.
            var size = accumulatorSize(group.Accumulator);
            _held += size - group.Size;
            var grew = size > group.Size;
            group.Size = size;
            if (!mayAdd && grew && _held > budget)
            {
                // Past the budget only new keys can go to disk: a held accumulator cannot be split, so one that keeps
                // growing would take memory without bound.
                throw exceeded(_held, _groups.Count);
            }

            return true;
        }

        if (!mayAdd)
        {
            return false;
        }

        group = new Group(ordinal, add(seed(key), row));
        group.Size = accumulatorSize(group.Accumulator);
        _held += EtlMemory.EntryOverhead + keySize(key) + group.Size;
        _groups.Add(key, group);
        return true;
    }

    public override IEnumerable<(long Ordinal, TOut Value)> Drain()
    {
        // Insertion order is first-row order: a dictionary nothing was removed from enumerates in insertion order.
        var groups = _groups;
        _groups = [];
        _held = 0;
        foreach (var (key, group) in groups)
        {
            yield return (group.First, result(key, group.Accumulator));
        }
    }

    private sealed class Group(long first, TAcc accumulator)
    {
        public long First { get; } = first;

        public TAcc Accumulator { get; set; } = accumulator;

        public long Size { get; set; }
    }
}

/// <summary>
/// <c>DistinctBy</c> with a byte budget that spills: rows of new keys pass at once until the keys pass the budget; then
/// rows of new keys go to partition files and leave, de-duplicated and in source order, when the source ends.
/// </summary>
internal sealed class SpillingDistinctStage<T, TKey> : EtlSpillingStage<T, T>
{
    private readonly EtlRun _run;
    private readonly EtlHashSpill<T, TKey, T>.Pass _pass;
    private readonly List<(long Ordinal, T Value)> _output = new(1);
    private readonly long _budget;
    private EtlDistinctState<T, TKey>? _top;
    private long _ordinal;
    private bool _spilling;

    public SpillingDistinctStage(Stage<T> next, EtlRun run, Func<T, TKey> key, IEqualityComparer<TKey>? comparer, Func<TKey, long> size, long budget, EtlSpill spill, CancellationToken cancellationToken)
        : base(next, new EtlSpillSession(run, "DistinctBy", "maxBytes", spill), cancellationToken)
    {
        _run = run;
        _budget = budget;
        var engine = new EtlHashSpill<T, TKey, T>(Session, key, comparer ?? EqualityComparer<TKey>.Default, () =>
        {
            var state = new EtlDistinctState<T, TKey>(comparer, size, budget);
            _top ??= state;
            return state;
        });
        _pass = engine.Open();
    }

    public override ValueTask OnNextAsync(T item)
    {
        _pass.Add(_ordinal++, item, _output);
        if (!_spilling && _pass.Spilling)
        {
            _spilling = true;
            if (_run.Acknowledgements is not null)
            {
                // A queue's messages are acknowledged with the batch that loads their rows: a spilled row's would be acknowledged before it is loaded.
                throw EtlFlow<T>.DistinctExceeded(_run, _budget, _top!.Held, _top.Count);
            }

            // Rows of new keys now leave after the source ends: from here on, bookmarks are taken only at the end of the run.
            _run.PositionsTrackRows = false;
        }

        if (_output.Count == 0)
        {
            return default;
        }

        var row = _output[0].Value;
        _output.Clear();
        return Next.OnNextAsync(row);
    }

    protected override async Task FinishAsync(CancellationToken cancellationToken)
    {
        foreach (var (_, row) in _pass.Complete(cancellationToken))
        {
            await Next.OnNextAsync(row).ConfigureAwait(false);

            // The source has ended, so each spilled row stands alone: a batch that filled (in rows or bytes) on it is sealed now.
            _run.SourceRowDone?.Invoke();
        }
    }
}

/// <summary>
/// A stage that may spill: when its input ends for good it finishes what it spilled, and whatever happens it deletes its
/// spill folder before it passes the completion on. A cancellation while finishing is a graceful stop: what left is
/// loaded, the rest is not, and the run ends Stopped (its bookmark stays where the last commit before the spill left it).
/// </summary>
internal abstract class EtlSpillingStage<TIn, TOut>(Stage<TOut> next, EtlSpillSession session, CancellationToken cancellationToken) : ForwardingStage<TIn, TOut>(next), IDisposable
{
    private bool _completed;

    protected EtlSpillSession Session { get; } = session;

    public sealed override async ValueTask OnCompletedAsync(bool final)
    {
        try
        {
            if (final && !_completed)
            {
                _completed = true;
                try
                {
                    await FinishAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    final = false;
                }
            }
        }
        finally
        {
            Dispose();
        }

        await Next.OnCompletedAsync(final).ConfigureAwait(false);
    }

    public void Dispose() => Session.Dispose();

    /// <summary>Emits what the stage held back or spilled; stops with <see cref="OperationCanceledException"/> once <paramref name="cancellationToken"/> is cancelled.</summary>
    protected abstract Task FinishAsync(CancellationToken cancellationToken);
}
