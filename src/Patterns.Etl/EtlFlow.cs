using System.Globalization;
using System.Runtime.CompilerServices;
using Patterns.Streaming;

namespace Patterns.Etl;

/// <summary>Starts ETL pipelines.</summary>
public static class Etl
{
    /// <summary>Starts a pipeline at a source.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="source">The source (<see cref="Csv.Read{T}(string, CsvReadOptions?)"/>, a SQL query, a log...).</param>
    /// <returns>The flow, to transform and end in a sink.</returns>
    public static EtlFlow<T> From<T>(EtlSource<T> source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new EtlFlow<T>(source.Name, (run, options) =>
        {
            run.Source = new EtlSourceContext(run, run.Resume, source.Name);
            run.MaxUnacknowledged = source.MaxUnacknowledged;
            return DataStream.From(CountedAsync(source, run), options);
        }, source.CanResume, source.Incremental);
    }

    /// <summary>Starts a pipeline at any async sequence (not resumable: a run always reads it from its start).</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="source">The rows.</param>
    /// <param name="name">The source's name, for quarantine entries and logs.</param>
    /// <returns>The flow.</returns>
    public static EtlFlow<T> From<T>(IAsyncEnumerable<T> source, string name = "async-enumerable")
    {
        ArgumentNullException.ThrowIfNull(source);
        return From(new AsyncEnumerableSource<T>(source, name));
    }

    /// <summary>Starts a pipeline at an in-memory sequence (not resumable).</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="source">The rows.</param>
    /// <param name="name">The source's name.</param>
    /// <returns>The flow.</returns>
    public static EtlFlow<T> From<T>(IEnumerable<T> source, string name = "enumerable")
    {
        ArgumentNullException.ThrowIfNull(source);
        return From(new AsyncEnumerableSource<T>(ToAsync(source), name));
    }

    private static async IAsyncEnumerable<T> CountedAsync<T>(EtlSource<T> source, EtlRun run, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var tags = run.Tags;
        long reported = 0;
        await foreach (var row in source.ReadAsync(run.Source, cancellationToken).ConfigureAwait(false))
        {
            run.RowsRead++;
            if ((run.RowsRead & 4095) == 0)
            {
                EtlTelemetry.RowsRead.Add(run.RowsRead - reported, tags);
                reported = run.RowsRead;
            }

            run.RowInStages = true;
            yield return row;

            // Back here, every row the stages made of this one has reached the loader.
            run.RowInStages = false;
            run.SourceRowDone?.Invoke();
        }

        EtlTelemetry.RowsRead.Add(run.RowsRead - reported, tags);
    }

#pragma warning disable CS1998 // An iterator over a synchronous sequence.
    private static async IAsyncEnumerable<T> ToAsync<T>(IEnumerable<T> source)
#pragma warning restore CS1998
    {
        foreach (var item in source)
        {
            yield return item;
        }
    }
}

/// <summary>
/// A typed ETL flow: a source and the transforms applied to it, run on Patterns' stream pipeline (every transform is
/// a stream stage, called one row at a time on the pipeline's task). Immutable: each call returns a new flow. End it
/// with <see cref="To"/>.
/// </summary>
/// <typeparam name="T">The record type.</typeparam>
/// <remarks>
/// Between the source and the sink nothing buffers except the stages that must (dedupe keys, lookup caches, the
/// build side of a join, an aggregate's groups, a sort's in-memory run), so the source position of the row being
/// handled is known at every stage: that is what lets the sink commit an exact bookmark with each batch. After
/// <see cref="OrderBy{TKey}"/> or <see cref="Aggregate{TKey, TAcc, TOut}"/>, rows leave in another order, so the
/// bookmark is committed only at the end of the run.
/// </remarks>
public sealed class EtlFlow<T>
{
    internal EtlFlow(string sourceName, Func<EtlRun, StreamOptions, DataStream<T>> build, bool resumable, bool incremental, string[]? stageLabels = null)
    {
        SourceName = sourceName;
        Build = build;
        Resumable = resumable;
        Incremental = incremental;
        StageLabels = stageLabels ?? [];
    }

    /// <summary>Gets how many stages the flow has after its source: the next stage is number <c>Stages + 1</c> in errors.</summary>
    internal int Stages => StageLabels.Length;

    /// <summary>Gets the label of each stage after the source, in order (<c>stage 2 (Select)</c>): stage <c>n</c> is at index <c>n - 1</c>.</summary>
    internal string[] StageLabels { get; }

    internal bool Incremental { get; }

    internal string SourceName { get; }

    internal Func<EtlRun, StreamOptions, DataStream<T>> Build { get; }

    internal bool Resumable { get; }

    /// <summary>Keeps the rows that satisfy <paramref name="predicate"/>.</summary>
    /// <param name="predicate">The test.</param>
    /// <returns>The flow.</returns>
    public EtlFlow<T> Where(Func<T, bool> predicate)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        return Then("Where", (run, stream) => stream.Where(predicate));
    }

    /// <summary>Maps each row.</summary>
    /// <typeparam name="TOut">The result type.</typeparam>
    /// <param name="selector">The map.</param>
    /// <returns>The flow.</returns>
    public EtlFlow<TOut> Select<TOut>(Func<T, TOut> selector)
    {
        ArgumentNullException.ThrowIfNull(selector);
        return Then("Select", (run, stream) => stream.Select(selector));
    }

    /// <summary>Maps each row to any number of rows (a split of one row into several).</summary>
    /// <typeparam name="TOut">The result type.</typeparam>
    /// <param name="selector">The map.</param>
    /// <returns>The flow.</returns>
    public EtlFlow<TOut> SelectMany<TOut>(Func<T, IEnumerable<TOut>> selector)
    {
        ArgumentNullException.ThrowIfNull(selector);
        return Then("SelectMany", (run, stream) => stream.SelectMany(selector));
    }

    /// <summary>
    /// Checks each row against a rule: a row that fails it is quarantined (with the stage's name, its source line, the
    /// column and the error) and counted against the error budget; the rest go on.
    /// </summary>
    /// <param name="rule">Returns <see langword="null"/> for a valid row, or what is wrong with it.</param>
    /// <param name="column">The column the rule checks, recorded with each rejected row.</param>
    /// <param name="name">The stage's name in quarantine entries.</param>
    /// <param name="raw">Formats a rejected row for its quarantine entry; without it, its <see cref="object.ToString"/>.</param>
    /// <returns>The flow.</returns>
    public EtlFlow<T> Validate(Func<T, string?> rule, string? column = null, string name = "validate", Func<T, string>? raw = null)
    {
        ArgumentNullException.ThrowIfNull(rule);
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var index = Stages + 1;
        return Then($"Validate '{name}'", (run, stream) => stream.Where(row =>
        {
            if (rule(row) is not { } error)
            {
                return true;
            }

            var source = run.Source;
            run.Quarantine(new QuarantinedRow(run.RunId, run.Job, name, run.SourceName, source.Line, source.Offset, raw is null ? row?.ToString() : raw(row), column, error), index);
            return false;
        }));
    }

    /// <summary>
    /// Keeps the first row of each key and drops later ones, in source order. Holds every key seen in memory: with
    /// <paramref name="maxBytes"/>, once the keys pass it, rows of new keys are spilled to temporary files (partitioned
    /// by a hash of the key) and de-duplicated after the source ends, so they leave last but still in source order; with
    /// <see cref="EtlSpill.Off"/>, the run fails with <see cref="EtlMemoryBudgetExceededException"/> instead.
    /// </summary>
    /// <typeparam name="TKey">The key type.</typeparam>
    /// <param name="key">Gets a row's key.</param>
    /// <param name="comparer">Compares keys.</param>
    /// <param name="maxBytes">The most bytes the keys may take (each key's size plus 32 bytes of hash-table entry), or <see langword="null"/> for no bound.</param>
    /// <param name="keySize">Measures a key; strings and types without references are measured without it.</param>
    /// <param name="spill">Where and how rows spill past <paramref name="maxBytes"/> (rows are written as JSON), or <see cref="EtlSpill.Off"/>; <see cref="EtlSpill.Default"/> when <see langword="null"/>.</param>
    /// <returns>The flow.</returns>
    /// <exception cref="ArgumentException">A budget is set, and the key type cannot be measured without <paramref name="keySize"/>.</exception>
    /// <remarks>
    /// Once the stage spills, source positions no longer match the rows at the sink, so the bookmark of the rest of the run
    /// is committed only at its end (as after <see cref="OrderBy{TKey}"/>); a queue source cannot spill, its run fails as
    /// at the budget without spilling.
    /// </remarks>
    public EtlFlow<T> DistinctBy<TKey>(Func<T, TKey> key, IEqualityComparer<TKey>? comparer = null, long? maxBytes = null, Func<TKey, long>? keySize = null, EtlSpill? spill = null)
    {
        ArgumentNullException.ThrowIfNull(key);
        EtlMemory.CheckBudget(maxBytes, "DistinctBy", nameof(maxBytes));
        EtlSpill.RequireBudget(spill, maxBytes, "DistinctBy");
        spill ??= EtlSpill.Default;
        spill.Validate(nameof(spill));
        var size = maxBytes is null ? null : EtlMemory.SizeOf(keySize, "DistinctBy", "keySize: k => ...");
        var budget = maxBytes ?? long.MaxValue;
        if (size is not null && spill.Enabled)
        {
            return Then("DistinctBy", (run, stream) => new OperatorStream<T, T>(stream, "DistinctBy", null, (next, context, _) => new SpillingDistinctStage<T, TKey>(next, run, key, comparer, size, budget, spill, context.Run.StopToken), null));
        }

        return Then("DistinctBy", (run, stream) =>
        {
            var seen = new HashSet<TKey>(comparer);
            long held = 0;
            return stream.Where(row =>
            {
                var k = key(row);
                if (!seen.Add(k))
                {
                    return false;
                }

                if (size is not null && (held += EtlMemory.EntryOverhead + size(k)) > budget)
                {
                    throw DistinctExceeded(run, budget, held, seen.Count);
                }

                return true;
            });
        });
    }

    /// <summary>Looks each row's key up in a dimension and maps the row with what was found.</summary>
    /// <remarks>
    /// From a queue or subscription, a failure reading the dimension blames no message (the messages are handed back
    /// uncounted, and those before it committed): any failure of a <see cref="EtlLookup.Full{TKey, TValue}"/> load, and a
    /// failure of an LRU or uncached <c>find</c> that is an outage (a timeout, a socket or I/O error, an HTTP error
    /// without a status or with 408, 429 or 5xx, a transient database error, SQLite busy, locked or unable to open). A
    /// throwing <paramref name="key"/> or <paramref name="result"/>, or any other failure of <c>find</c>, blames the row's message.
    /// </remarks>
    /// <typeparam name="TKey">The dimension's key type.</typeparam>
    /// <typeparam name="TValue">The dimension's value type.</typeparam>
    /// <typeparam name="TOut">The result type.</typeparam>
    /// <param name="lookup">The dimension, with its cache (<see cref="EtlLookup.Full{TKey, TValue}"/>, <see cref="EtlLookup.Lru{TKey, TValue}"/>, <see cref="EtlLookup.Uncached{TKey, TValue}"/>).</param>
    /// <param name="key">Gets a row's key.</param>
    /// <param name="result">Maps the row and the value found (<see langword="default"/> when the dimension has no such key).</param>
    /// <returns>The flow.</returns>
    public EtlFlow<TOut> Lookup<TKey, TValue, TOut>(EtlLookup<TKey, TValue> lookup, Func<T, TKey> key, Func<T, TValue?, TOut> result)
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(lookup);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(result);
        return Then("Lookup", (run, stream) =>
        {
            var session = lookup.Open();
            return stream.SelectAsync((row, ct) =>
            {
                // The key and result selectors are the row's: a throw there blames its message. A failure reading the
                // dimension that is an outage (see EtlLookup) blames no message: a queue source hands the messages back
                // uncounted and commits those before the one it surfaced on.
                var k = key(row);
                ValueTask<TValue?> found;
                try
                {
                    found = session.FindAsync(k, ct);
                }
                catch (Exception ex) when (session.Unreachable(run, ex))
                {
                    throw;
                }

                return found.IsCompletedSuccessfully ? new ValueTask<TOut>(result(row, found.Result)) : AwaitAsync(run, session, row, found, result);
            });
        });

        static async ValueTask<TOut> AwaitAsync(EtlRun run, EtlLookup<TKey, TValue>.LookupSession session, T row, ValueTask<TValue?> found, Func<T, TValue?, TOut> result)
        {
            TValue? value;
            try
            {
                value = await found.ConfigureAwait(false);
            }
            catch (Exception ex) when (session.Unreachable(run, ex))
            {
                throw;
            }

            return result(row, value);
        }
    }

    /// <summary>
    /// An inner hash join with a second source: the right source is read first into a hash table (at most
    /// <paramref name="maxBuildRows"/> rows), then each row of this flow is matched with the right rows of its key: one
    /// output per pair of a left and a right row with equal keys (duplicate keys on both sides give every pair); a row
    /// with no match on the other side gives nothing, and a row whose key is <see langword="null"/> matches nothing.
    /// </summary>
    /// <typeparam name="TRight">The right source's record type.</typeparam>
    /// <typeparam name="TKey">The join key type.</typeparam>
    /// <typeparam name="TOut">The result type.</typeparam>
    /// <param name="right">The right (build) source: the smaller one.</param>
    /// <param name="leftKey">Gets a left row's key.</param>
    /// <param name="rightKey">Gets a right row's key.</param>
    /// <param name="result">Joins a left row with one matching right row.</param>
    /// <param name="maxBuildRows">The most right rows held; more fails the run with a clear error, or, with <paramref name="maxBuildBytes"/> and spilling on, spills.</param>
    /// <param name="maxBuildBytes">The most bytes the right rows may take in memory (each row's size plus 32 bytes), or <see langword="null"/> for no bound. Past it the join spills (a grace hash join): both sides are written to partition files by a hash of the key and joined partition by partition after this flow's source ends, so joined rows leave in another order (and the bookmark is committed only at the end of the run). With <see cref="EtlSpill.Off"/>, passing it fails the run with <see cref="EtlMemoryBudgetExceededException"/>.</param>
    /// <param name="rightSize">Measures a right row (for records, <c>r =&gt; Record.Schema.EstimateSize(r)</c>); strings and types without references are measured without it.</param>
    /// <param name="spill">Where and how both sides spill past <paramref name="maxBuildBytes"/> (left and right rows are written as JSON), or <see cref="EtlSpill.Off"/>; <see cref="EtlSpill.Default"/> when <see langword="null"/>.</param>
    /// <returns>The flow.</returns>
    /// <exception cref="ArgumentException">A byte budget is set, and the right rows cannot be measured without <paramref name="rightSize"/>; or <paramref name="spill"/> is given without <paramref name="maxBuildBytes"/>.</exception>
    public EtlFlow<TOut> Join<TRight, TKey, TOut>(EtlSource<TRight> right, Func<T, TKey> leftKey, Func<TRight, TKey> rightKey, Func<T, TRight, TOut> result, int maxBuildRows = 1_000_000, long? maxBuildBytes = null, Func<TRight, long>? rightSize = null, EtlSpill? spill = null)
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(right);
        ArgumentNullException.ThrowIfNull(leftKey);
        ArgumentNullException.ThrowIfNull(rightKey);
        ArgumentNullException.ThrowIfNull(result);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBuildRows, 1);
        EtlMemory.CheckBudget(maxBuildBytes, "Join", nameof(maxBuildBytes));
        var size = maxBuildBytes is null ? null : EtlMemory.SizeOf(rightSize, "Join", "rightSize: r => ...");
        if (spill is not null && maxBuildBytes is null)
        {
            throw new ArgumentException("Join was given spill: but no maxBuildBytes: the join spills only past its byte budget, and without one it holds the whole build side in memory. Set maxBuildBytes, or leave spill unset.", nameof(spill));
        }

        spill ??= EtlSpill.Default;
        spill.Validate(nameof(spill));
        if (maxBuildBytes is { } budget && spill.Enabled)
        {
            return Then("Join", (run, stream) => new OperatorStream<T, TOut>(stream, "Join", null, (next, context, _) => new SpillingJoinStage<T, TRight, TKey, TOut>(next, run, right, leftKey, rightKey, result, maxBuildRows, budget, size!, spill, context.Run.StopToken), null));
        }

        return new EtlFlow<TOut>(
            SourceName,
            (run, options) =>
            {
                var table = new Lazy<Task<Dictionary<TKey, List<TRight>>>>(() => BuildAsync(run, right, rightKey, maxBuildRows, maxBuildBytes, size));
                return EtlStageTag<T>.Before(Build(run, options), run, StageLabel("Join"), Stages + 1).SelectAsync((row, ct) =>
                    {
                        var built = table.Value;
#pragma warning disable CA1849 // The task has completed.
                        return built.IsCompletedSuccessfully ? new ValueTask<(T, List<TRight>?)>(Match(row, built.Result, leftKey)) : MatchAsync(row, built, leftKey);
#pragma warning restore CA1849
                    })
                    .SelectMany(pair => JoinRows(pair, result));
            },
            Resumable,
            Incremental,
            [.. StageLabels, StageLabel("Join")]);

        static (T, List<TRight>?) Match(T row, Dictionary<TKey, List<TRight>> table, Func<T, TKey> leftKey) => (row, leftKey(row) is { } key && table.TryGetValue(key, out var matches) ? matches : null);

        static async ValueTask<(T, List<TRight>?)> MatchAsync(T row, Task<Dictionary<TKey, List<TRight>>> built, Func<T, TKey> leftKey) => Match(row, await built.ConfigureAwait(false), leftKey);

        // SelectAsync above hands on the row with its matches; this pairs them up.
        static IEnumerable<TOut> JoinRows((T Row, List<TRight>? Matches) pair, Func<T, TRight, TOut> result) => pair.Matches is null ? [] : pair.Matches.Select(m => result(pair.Row, m));
    }

    /// <summary>
    /// Aggregates rows by key as they stream past (one accumulator per key in memory) and emits one row per key when
    /// the source ends, in the order of each key's first row. The bookmark is then committed only at the end of the run.
    /// With <paramref name="maxBytes"/>, once the groups pass it, rows of keys not held are spilled to temporary files
    /// (partitioned by a hash of the key) and aggregated partition by partition after the source ends: a partition still
    /// too large splits again with another hash (up to 8 splits), and one no hash splits is aggregated in slices of the
    /// budget. The results are the same, in the same order. With <see cref="EtlSpill.Off"/>, the run fails with
    /// <see cref="EtlMemoryBudgetExceededException"/> instead.
    /// </summary>
    /// <typeparam name="TKey">The group key type.</typeparam>
    /// <typeparam name="TAcc">The accumulator type.</typeparam>
    /// <typeparam name="TOut">The result type.</typeparam>
    /// <param name="key">Gets a row's key.</param>
    /// <param name="seed">The accumulator of a new key.</param>
    /// <param name="add">Adds a row to its key's accumulator.</param>
    /// <param name="result">Makes the result of a key.</param>
    /// <param name="maxBytes">The most bytes the groups may take (each key and accumulator plus 32 bytes, measured again as the accumulator changes), or <see langword="null"/> for no bound. Past it, rows of keys not held spill; an accumulator held in memory that grows while the stage spills fails the run with <see cref="EtlMemoryBudgetExceededException"/> (an accumulator cannot be split), as does passing it at all with <see cref="EtlSpill.Off"/>.</param>
    /// <param name="keySize">Measures a key; strings and types without references are measured without it.</param>
    /// <param name="accumulatorSize">Measures an accumulator; strings and types without references (<c>decimal</c>, <c>(long, decimal)</c>) are measured without it.</param>
    /// <param name="spill">Where and how rows spill past <paramref name="maxBytes"/> (rows and results are written as JSON), or <see cref="EtlSpill.Off"/>; <see cref="EtlSpill.Default"/> when <see langword="null"/>.</param>
    /// <returns>The flow.</returns>
    /// <exception cref="ArgumentException">A budget is set, and a type cannot be measured without its measure.</exception>
    public EtlFlow<TOut> Aggregate<TKey, TAcc, TOut>(Func<T, TKey> key, Func<TKey, TAcc> seed, Func<TAcc, T, TAcc> add, Func<TKey, TAcc, TOut> result, long? maxBytes = null, Func<TKey, long>? keySize = null, Func<TAcc, long>? accumulatorSize = null, EtlSpill? spill = null)
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(seed);
        ArgumentNullException.ThrowIfNull(add);
        ArgumentNullException.ThrowIfNull(result);
        EtlMemory.CheckBudget(maxBytes, "Aggregate", nameof(maxBytes));
        var sizeOfKey = maxBytes is null ? null : EtlMemory.SizeOf(keySize, "Aggregate", "keySize: k => ...");
        var sizeOfAccumulator = maxBytes is null ? null : EtlMemory.SizeOf(accumulatorSize, "Aggregate", "accumulatorSize: a => ...");
        EtlSpill.RequireBudget(spill, maxBytes, "Aggregate");
        spill ??= EtlSpill.Default;
        spill.Validate(nameof(spill));
        if (maxBytes is { } limit && spill.Enabled)
        {
            return Blocking<TOut>("Aggregate", async (run, upstream, ct) =>
            {
                var session = new EtlSpillSession(run, "Aggregate", "maxBytes", spill);
                var engine = new EtlHashSpill<T, TKey, TOut>(session, key, EqualityComparer<TKey>.Default, () => new EtlAggregateState<T, TKey, TAcc, TOut>(seed, add, result, sizeOfKey!, sizeOfAccumulator!, limit, (held, groups) => Grew(run, limit, held, groups)));
                var pass = engine.Open();
                long ordinal = 0;
                List<(long, TOut)> none = [];
                await upstream.To(row => pass.Add(ordinal++, row, none)).RunAsync(ct).ConfigureAwait(false);
                return Spilled(pass.Complete(ct), session);
            });
        }

        return Blocking<TOut>("Aggregate", async (run, upstream, ct) =>
        {
            var groups = new Dictionary<TKey, TAcc>();

            // The size each accumulator had when last measured: an accumulator that add changes in place is the same
            // object before and after, so only the stored size shows how much it grew.
            var measured = maxBytes is null ? null : new Dictionary<TKey, long>();
            long held = 0;
            await upstream.To(row =>
            {
                var k = key(row);
                var found = groups.TryGetValue(k, out var acc);
                var next = add(found ? acc! : seed(k), row);
                groups[k] = next;
                if (maxBytes is { } budget)
                {
                    var size = sizeOfAccumulator!(next);
                    held += found ? size - measured![k] : EtlMemory.EntryOverhead + sizeOfKey!(k) + size;
                    measured![k] = size;
                    if (held > budget)
                    {
                        throw EtlMemory.Exceeded(run, "Aggregate", "maxBytes", budget, held, groups.Count, "groups", "Let it spill (leave spill unset), sort by the key first (OrderBy spills to disk) and aggregate in the target, or raise maxBytes.");
                    }
                }
            }).RunAsync(ct).ConfigureAwait(false);
            return groups.Select(g => result(g.Key, g.Value));
        });

        // A pass or slice of one group: that group alone needs more than the budget, and no split or slice can help.
        static EtlMemoryBudgetExceededException Grew(EtlRun run, long budget, long held, long groups) => groups == 1
            ? EtlMemory.Exceeded(run, "Aggregate", "maxBytes", budget, held, 1, "group", "One group alone outgrew the budget, and an accumulator cannot be split across spill files: keep accumulators fixed in size (a count, a sum), or raise maxBytes.")
            : EtlMemory.Exceeded(run, "Aggregate", "maxBytes", budget, held, groups, "groups", "A group held in memory grew while the stage was spilling, and an accumulator cannot be split across spill files: keep accumulators fixed in size (a count, a sum), or raise maxBytes.");
    }

    /// <summary>
    /// Sorts the rows by key, stably: rows with equal keys keep their input order. Up to <paramref name="memoryBudgetRows"/> rows (and <paramref name="memoryBudgetBytes"/>,
    /// when set) are sorted in memory; beyond that, sorted runs spill to CSV files (through <paramref name="schema"/>)
    /// in a folder of the run's own under <see cref="EtlSpill.TempDirectory"/>, and are merged as they are read back.
    /// The folder is deleted when the sorted rows have left, or when the run fails or is cancelled; one left by a process
    /// that died is deleted by the next spill under the same folder. The bookmark is committed only at the end of the run.
    /// </summary>
    /// <typeparam name="TKey">The sort key type.</typeparam>
    /// <param name="key">Gets a row's key.</param>
    /// <param name="schema">Writes spilled rows and reads them back (needs a create function).</param>
    /// <param name="memoryBudgetRows">The most rows held in memory.</param>
    /// <param name="comparer">Orders keys.</param>
    /// <param name="tempDirectory">Kept for earlier callers: the same as <c>spill: new EtlSpill { TempDirectory = ... }</c>, which it cannot be given with.</param>
    /// <param name="memoryBudgetBytes">The most bytes of rows held in memory (each measured by <see cref="EtlSchema{T}.EstimateSize"/>, plus 32 bytes), or <see langword="null"/> for a bound in rows only: the in-memory run spills when either budget is reached.</param>
    /// <param name="spill">Where sorted runs spill (<see cref="EtlSpill.TempDirectory"/>; rows are written through <paramref name="schema"/>, so <see cref="EtlSpill.SerializerOptions"/> and <see cref="EtlSpill.Partitions"/> do not apply), or <see cref="EtlSpill.Off"/> to fail the run with <see cref="EtlMemoryBudgetExceededException"/> at the budget; <see cref="EtlSpill.Default"/> when <see langword="null"/>.</param>
    /// <returns>The flow.</returns>
    /// <exception cref="ArgumentException">Both <paramref name="tempDirectory"/> and <paramref name="spill"/> are given.</exception>
    public EtlFlow<T> OrderBy<TKey>(Func<T, TKey> key, EtlSchema<T> schema, int memoryBudgetRows = 100_000, IComparer<TKey>? comparer = null, string? tempDirectory = null, long? memoryBudgetBytes = null, EtlSpill? spill = null)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(schema);
        ArgumentOutOfRangeException.ThrowIfLessThan(memoryBudgetRows, 1);
        EtlMemory.CheckBudget(memoryBudgetBytes, "OrderBy", nameof(memoryBudgetBytes));
        if (tempDirectory is not null && spill is not null)
        {
            throw new ArgumentException("OrderBy was given both tempDirectory: and spill:. Pass the folder as spill: new EtlSpill { TempDirectory = ... } alone.", nameof(tempDirectory));
        }

        spill ??= tempDirectory is null ? EtlSpill.Default : new EtlSpill { TempDirectory = tempDirectory };
        if (spill.Enabled)
        {
            schema.RequireCreate("OrderBy (to read spilled rows back)");
        }

        return Blocking<T>("OrderBy", async (run, upstream, ct) =>
        {
            var session = new EtlSpillSession(run, "OrderBy", memoryBudgetBytes is null ? "memoryBudgetRows" : "memoryBudgetRows, memoryBudgetBytes", spill);
            Func<int, long, Exception>? exceeded = spill.Enabled ? null : (rows, bytes) => SortExceeded(run, memoryBudgetRows, memoryBudgetBytes, rows, bytes);
            var sorter = new ExternalSorter<T, TKey>(key, comparer ?? Comparer<TKey>.Default, schema, memoryBudgetRows, memoryBudgetBytes, session, exceeded);
            try
            {
                await upstream.To(sorter.Add).RunAsync(ct).ConfigureAwait(false);
                return sorter.Sorted(ct);
            }
            catch
            {
                sorter.Dispose();
                throw;
            }
        });
    }

    /// <summary>Ends the flow in a sink.</summary>
    /// <param name="sink">The sink.</param>
    /// <param name="name">The job's name: with the partition, the key of its bookmark. Defaults to the sink's name.</param>
    /// <returns>The runnable pipeline.</returns>
    public EtlPipeline<T> To(EtlSink<T> sink, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(sink);
        if (name is not null)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(name);
        }

        return new EtlPipeline<T>(this, sink, name ?? sink.Name);
    }

    /// <summary>
    /// Ends the flow in several branches, each with its own filter or map and its own sink: every batch goes to all of
    /// them at once and the next batch waits for the slowest, so each branch holds at most one batch and back-pressure
    /// reaches the source. A branch that fails stops the run (<see cref="EtlBranchException"/> names it); batches
    /// committed before stay committed on every branch. When every branch's sink stores bookmarks, the next run resumes at
    /// the branch furthest behind and each branch skips the batches it already committed, so none is loaded twice.
    /// </summary>
    /// <param name="name">The job's name; each branch keeps its bookmark under <c>name/branch</c>.</param>
    /// <param name="branchBuilders">The branches, with distinct names: <c>b =&gt; b.Where(...).Select(...).To("name", sink)</c>.</param>
    /// <returns>The runnable pipeline.</returns>
    public EtlPipeline<T> Multicast(string name, params Func<EtlBranchBuilder<T, T>, EtlBranch<T>>[] branchBuilders)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(branchBuilders);
        var start = new EtlBranchBuilder<T, T>(static next => next);
        var branches = branchBuilders.Select(build => build?.Invoke(start)).ToArray();
        if (branches.Length == 0 || Array.Exists(branches, b => b is null))
        {
            throw new ArgumentException("A multicast needs at least one branch, and no null branch.", nameof(branchBuilders));
        }

        if (branches.GroupBy(b => b!.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } repeated)
        {
            throw new ArgumentException($"The multicast has two branches named '{repeated.Key}': each branch keeps its bookmark under its name.", nameof(branchBuilders));
        }

        return To(new MulticastSink<T>(name, branches!), name);
    }

    private static EtlMemoryBudgetExceededException SortExceeded(EtlRun run, int maxRows, long? maxBytes, int rows, long bytes) =>
        new(maxBytes is { } budget && bytes > budget
            ? string.Create(CultureInfo.InvariantCulture, $"ETL job '{run.Job}' stopped: the OrderBy stage would hold {rows:N0} rows in about {bytes:N0} bytes, more than its memory budget of {budget:N0} bytes (memoryBudgetBytes), and spilling is off (EtlSpill.Off). Let it spill (leave spill unset), or raise memoryBudgetBytes.")
            : string.Create(CultureInfo.InvariantCulture, $"ETL job '{run.Job}' stopped: the OrderBy stage would hold {rows:N0} rows, more than its memory budget of {maxRows:N0} rows (memoryBudgetRows), and spilling is off (EtlSpill.Off). Let it spill (leave spill unset), or raise memoryBudgetRows."))
        {
            Stage = "OrderBy",
            MaxBytes = maxBytes ?? 0,
        };

    internal static EtlMemoryBudgetExceededException DistinctExceeded(EtlRun run, long budget, long held, long keys) =>
        EtlMemory.Exceeded(run, "DistinctBy", "maxBytes", budget, held, keys, "keys", "De-duplicate in the target instead (a merge on the key keeps the last row), or raise maxBytes.");

    /// <summary>A spilling stage's outputs without their ordinals; its files go when the enumeration ends.</summary>
    private static IEnumerable<TOut> Spilled<TOut>(IEnumerable<(long Ordinal, TOut Value)> outputs, EtlSpillSession session)
    {
        try
        {
            foreach (var (_, value) in outputs)
            {
                yield return value;
            }
        }
        finally
        {
            session.Dispose();
        }
    }

    /// <summary>A stage of the flow, tagged with its kind and place for the dead-letter reasons of a transport source.</summary>
    private EtlFlow<TOut> Then<TOut>(string kind, Func<EtlRun, DataStream<T>, DataStream<TOut>> stage)
    {
        var label = StageLabel(kind);
        var index = Stages + 1;
        return new(SourceName, (run, options) => stage(run, EtlStageTag<T>.Before(Build(run, options), run, label, index)), Resumable, Incremental, [.. StageLabels, label]);
    }

    /// <summary>How errors name the next stage: its place after the source and its kind (<c>stage 2 (Select)</c>).</summary>
    private string StageLabel(string kind) => string.Create(CultureInfo.InvariantCulture, $"stage {Stages + 1} ({kind})");

    /// <summary>A stage that must see every row before it emits: the upstream runs as its own stream pipeline into it, then its output starts a new one.</summary>
    private EtlFlow<TOut> Blocking<TOut>(string kind, Func<EtlRun, DataStream<T>, CancellationToken, Task<IEnumerable<TOut>>> consume)
    {
        var label = StageLabel(kind);
        var index = Stages + 1;
        return new(
            SourceName,
            (run, options) =>
            {
                run.PositionsTrackRows = false;
                var upstream = EtlStageTag<T>.Counted(Build(run, options), run, index);
                return DataStream.From(EmitAsync(run, upstream, consume), options);
            },
            Resumable,
            Incremental,
            [.. StageLabels, label]);
    }

    private static async IAsyncEnumerable<TOut> EmitAsync<TOut>(EtlRun run, DataStream<T> upstream, Func<EtlRun, DataStream<T>, CancellationToken, Task<IEnumerable<TOut>>> consume, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var rows = await consume(run, upstream, cancellationToken).ConfigureAwait(false);
        try
        {
            foreach (var row in rows)
            {
                yield return row;
            }
        }
        finally
        {
            (rows as IDisposable)?.Dispose();
        }
    }

    /// <summary>Reads the join's build side into memory, at the first left row: a failure is the build side's, not that row's (a transport source blames no message for it).</summary>
    private static async Task<Dictionary<TKey, List<TRight>>> BuildAsync<TRight, TKey>(EtlRun run, EtlSource<TRight> right, Func<TRight, TKey> rightKey, int maxBuildRows, long? maxBuildBytes, Func<TRight, long>? size)
        where TKey : notnull
    {
        try
        {
            return await BuildTableAsync(run, right, rightKey, maxBuildRows, maxBuildBytes, size).ConfigureAwait(false);
        }
        catch (Exception ex) when (run.FailedWithoutRow(ex))
        {
            throw;
        }
    }

    private static async Task<Dictionary<TKey, List<TRight>>> BuildTableAsync<TRight, TKey>(EtlRun run, EtlSource<TRight> right, Func<TRight, TKey> rightKey, int maxBuildRows, long? maxBuildBytes, Func<TRight, long>? size)
        where TKey : notnull
    {
        var table = new Dictionary<TKey, List<TRight>>();
        var count = 0;
        long held = 0;
        var budget = maxBuildBytes ?? long.MaxValue;
        var context = new EtlSourceContext(run, EtlBookmark.Start, right.Name);
        await foreach (var row in right.ReadAsync(context, CancellationToken.None).ConfigureAwait(false))
        {
            var k = rightKey(row);
            if (k is null)
            {
                // A null key matches nothing: the row is not held, so it counts toward neither budget.
                continue;
            }

            if (++count > maxBuildRows)
            {
                throw new InvalidOperationException(
                    $"The join's build side '{right.Name}' has more than {maxBuildRows} rows (maxBuildRows): join with the smaller source as the right side, raise the limit, or sort both sides and merge.");
            }

            if (size is not null && (held += EtlMemory.EntryOverhead + size(row)) > budget)
            {
                throw EtlMemory.Exceeded(run, "Join", "maxBuildBytes", budget, held, count, $"rows of its build side '{right.Name}'", "Let it spill (leave spill unset), join with the smaller source as the right side, or raise maxBuildBytes.");
            }

            if (!table.TryGetValue(k, out var list))
            {
                table[k] = list = new List<TRight>(1);
            }

            list.Add(row);
        }

        return table;
    }
}
