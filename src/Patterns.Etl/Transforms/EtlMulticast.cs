namespace Patterns.Etl;

/// <summary>
/// One branch of a multicast: a sink, with the rows it takes (a filter) and how they are shaped for it (a map or a split).
/// Made in <see cref="EtlFlow{T}.Multicast"/> with an <see cref="EtlBranchBuilder{T, TRow}"/>.
/// </summary>
/// <typeparam name="T">The type of the rows multicast.</typeparam>
public abstract class EtlBranch<T>
{
    private protected EtlBranch(string name) => Name = name;

    /// <summary>Gets the branch's name: in errors, and with the job's name the key of its bookmark (<c>job/branch</c>).</summary>
    public string Name { get; }

    internal abstract ValueTask<BranchWriter> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken);

    /// <summary>An open branch: maps a batch into its own buffer and writes it to its sink writer.</summary>
    internal abstract class BranchWriter(string name) : IAsyncDisposable
    {
        public string Name => name;

        public abstract bool StoresBookmarks { get; }

        public abstract bool StoresQuarantine { get; }

        public abstract bool CommitsEachBatch { get; }

        /// <summary>Gets a value indicating whether the branch's sink records the ids of the messages it loaded (with the job's name and the branch's, <c>job/branch</c>).</summary>
        public abstract bool StoresConsumed { get; }

        /// <summary>Gets the rows handed to the branch's sink in the last <see cref="WriteAsync"/> (after its filter and map).</summary>
        public int LastWritten { get; protected set; }

        /// <summary>Gets the index, in the batch of the last <see cref="Map"/>, of the row the branch's filter or map threw on, or null.</summary>
        public int? FailedRow { get; protected set; }

        /// <summary>
        /// Filters and maps a batch into the branch's buffer, for the next <see cref="WriteAsync"/>, leaving out the rows
        /// whose message (its source position in <paramref name="origins"/>) is in <paramref name="skip"/>; on a throw the
        /// buffer is emptied and <see cref="FailedRow"/> names the row.
        /// </summary>
        public abstract void Map(ReadOnlySpan<T> rows, ReadOnlySpan<long> origins, HashSet<long>? skip);

        /// <summary>Returns which of <paramref name="messageIds"/> the branch's sink recorded as loaded.</summary>
        public abstract ValueTask<IReadOnlySet<string>> ReadConsumedAsync(IReadOnlyList<string> messageIds, CancellationToken cancellationToken);

        /// <summary>Empties the buffer <see cref="Map"/> filled, when another branch's map failed and the batch is written nowhere.</summary>
        public abstract void Discard();

        public abstract ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken);

        public abstract ValueTask ResetAsync(CancellationToken cancellationToken);

        /// <summary>Writes the rows the last <see cref="Map"/> put in the buffer, with <paramref name="commit"/>.</summary>
        public abstract ValueTask<EtlLoadCounts> WriteAsync(EtlCommit commit, CancellationToken cancellationToken);

        public abstract ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken);

        public abstract ValueTask DisposeAsync();
    }
}

/// <summary>
/// Describes one branch of a multicast: the rows it takes and how they are shaped, then its sink. Each call returns a new
/// builder; the stages are composed once per run and called one row at a time, with nothing buffered but the branch's
/// batch.
/// </summary>
/// <typeparam name="T">The type of the rows multicast.</typeparam>
/// <typeparam name="TRow">The type of the rows at this point of the branch.</typeparam>
public sealed class EtlBranchBuilder<T, TRow>
{
    private readonly Func<Action<TRow>, Action<T>> _compose;

    internal EtlBranchBuilder(Func<Action<TRow>, Action<T>> compose) => _compose = compose;

    /// <summary>Keeps the rows that satisfy <paramref name="predicate"/>.</summary>
    /// <param name="predicate">The test.</param>
    /// <returns>The builder.</returns>
    public EtlBranchBuilder<T, TRow> Where(Func<TRow, bool> predicate)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        var compose = _compose;
        return new(next => compose(row =>
        {
            if (predicate(row))
            {
                next(row);
            }
        }));
    }

    /// <summary>Maps each row.</summary>
    /// <typeparam name="TOut">The result type.</typeparam>
    /// <param name="selector">The map.</param>
    /// <returns>The builder.</returns>
    public EtlBranchBuilder<T, TOut> Select<TOut>(Func<TRow, TOut> selector)
    {
        ArgumentNullException.ThrowIfNull(selector);
        var compose = _compose;
        return new(next => compose(row => next(selector(row))));
    }

    /// <summary>Maps each row to any number of rows.</summary>
    /// <typeparam name="TOut">The result type.</typeparam>
    /// <param name="selector">The split.</param>
    /// <returns>The builder.</returns>
    public EtlBranchBuilder<T, TOut> SelectMany<TOut>(Func<TRow, IEnumerable<TOut>> selector)
    {
        ArgumentNullException.ThrowIfNull(selector);
        var compose = _compose;
        return new(next => compose(row =>
        {
            foreach (var item in selector(row))
            {
                next(item);
            }
        }));
    }

    /// <summary>Ends the branch in a sink.</summary>
    /// <param name="name">The branch's name: in errors, and with the job's name the key of its bookmark (<c>job/branch</c>).</param>
    /// <param name="sink">The sink.</param>
    /// <returns>The branch.</returns>
    public EtlBranch<T> To(string name, EtlSink<TRow> sink)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(sink);
        return new Branch(name, sink, _compose);
    }

    private sealed class Branch(string name, EtlSink<TRow> sink, Func<Action<TRow>, Action<T>> compose) : EtlBranch<T>(name)
    {
        internal override async ValueTask<BranchWriter> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken)
        {
            var writer = await sink.OpenAsync(context with { Job = context.Job + "/" + Name }, cancellationToken).ConfigureAwait(false);
            return new Writer(Name, writer, compose);
        }

        private sealed class Writer : BranchWriter
        {
            private readonly EtlSinkWriter<TRow> _writer;
            private readonly RowBuffer<TRow> _rows = new();
            private readonly Action<T> _take;

            public Writer(string name, EtlSinkWriter<TRow> writer, Func<Action<TRow>, Action<T>> compose)
                : base(name)
            {
                _writer = writer;
                _take = compose(_rows.Add);
            }

            public override bool StoresBookmarks => _writer.StoresBookmarks;

            public override bool StoresQuarantine => _writer.StoresQuarantine;

            public override bool CommitsEachBatch => _writer.CommitsEachBatch;

            public override bool StoresConsumed => _writer.StoresConsumed;

            public override ValueTask<IReadOnlySet<string>> ReadConsumedAsync(IReadOnlyList<string> messageIds, CancellationToken cancellationToken) =>
                _writer.ReadConsumedAsync(messageIds, cancellationToken);

            public override ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken) => _writer.ReadBookmarkAsync(cancellationToken);

            public override ValueTask ResetAsync(CancellationToken cancellationToken) => _writer.ResetAsync(cancellationToken);

            public override void Map(ReadOnlySpan<T> rows, ReadOnlySpan<long> origins, HashSet<long>? skip)
            {
                FailedRow = null;
                _rows.Clear();
                try
                {
                    Take(rows, origins, skip);
                }
                catch
                {
                    _rows.Clear();
                    throw;
                }
            }

            public override void Discard() => _rows.Clear();

            public override async ValueTask<EtlLoadCounts> WriteAsync(EtlCommit commit, CancellationToken cancellationToken)
            {
                LastWritten = _rows.Rows.Length;
                try
                {
                    return await _writer.WriteAsync(_rows.Rows, commit, cancellationToken).ConfigureAwait(false);
                }
                finally
                {
                    _rows.Clear();
                }
            }

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => _writer.CompleteAsync(commit, cancellationToken);

            public override ValueTask DisposeAsync() => _writer.DisposeAsync();

            private void Take(ReadOnlySpan<T> rows, ReadOnlySpan<long> origins, HashSet<long>? skip)
            {
                var i = 0;
                try
                {
                    for (; i < rows.Length; i++)
                    {
                        if (skip is not null && i < origins.Length && skip.Contains(origins[i]))
                        {
                            // The branch committed this row's message before (a run that failed in another branch, or a
                            // kill before the acknowledgement): its rows are there already.
                            continue;
                        }

                        _take(rows[i]);
                    }
                }
                catch
                {
                    // The batch's row the filter or map threw on: a queue source blames only the message it came from.
                    FailedRow = i;
                    throw;
                }
            }
        }
    }
}

/// <summary>A branch's rows for one batch, in an array reused from batch to batch.</summary>
internal sealed class RowBuffer<T>
{
    private T[] _items = [];
    private int _count;

    public ReadOnlyMemory<T> Rows => _items.AsMemory(0, _count);

    public void Add(T item)
    {
        if (_count == _items.Length)
        {
            Array.Resize(ref _items, Math.Max(16, _items.Length * 2));
        }

        _items[_count++] = item;
    }

    public void Clear()
    {
        Array.Clear(_items, 0, _count);
        _count = 0;
    }
}

/// <summary>A branch of a multicast failed; the run stopped (batches committed before, on every branch, stay committed).</summary>
public sealed class EtlBranchException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="EtlBranchException"/> class.</summary>
    public EtlBranchException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="EtlBranchException"/> class.</summary>
    /// <param name="message">What happened.</param>
    public EtlBranchException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="EtlBranchException"/> class.</summary>
    /// <param name="message">What happened.</param>
    /// <param name="innerException">The branch's error.</param>
    public EtlBranchException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Gets the failed branch's name.</summary>
    public string? Branch { get; init; }

    /// <summary>Gets the index, in the batch, of the row the branch's filter or map threw on; null when its sink failed.</summary>
    internal int? Row { get; init; }
}

/// <summary>
/// The sink of a multicast: hands each batch to every branch at once and waits for all of them, so each branch holds at
/// most one batch and the slowest holds back the source. Each branch's sink commits the same bookmark with its part of
/// the batch; after a failure the branches may stand at different batches, and each one skips the batches it already has.
/// </summary>
internal sealed class MulticastSink<T>(string name, IReadOnlyList<EtlBranch<T>> branches) : EtlSink<T>
{
    public override string Name => name;

    public override async ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken)
    {
        var writers = new List<EtlBranch<T>.BranchWriter>(branches.Count);
        try
        {
            foreach (var branch in branches)
            {
                writers.Add(await branch.OpenAsync(context, cancellationToken).ConfigureAwait(false));
            }
        }
        catch
        {
            foreach (var opened in writers)
            {
                await opened.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }

        return new Writer(context.Job, writers);
    }

    private sealed class Writer(string job, List<EtlBranch<T>.BranchWriter> branches) : EtlSinkWriter<T>, IEtlBranchCounts
    {
        private readonly BranchState[] _states = [.. branches.Select(b => new BranchState(b))];

        // The rows quarantined before a batch commit with the first branch that stores quarantine, once.
        private readonly int _quarantineBranch = branches.FindIndex(b => b.StoresQuarantine);

        // Messages a queue source delivered that some branches, not all, recorded as loaded: which branches have them. Found
        // by the source's check (its task), used by the write of the batch that holds them (the loader's).
        private readonly Dictionary<string, bool[]> _partly = new(StringComparer.Ordinal);
        private readonly Lock _gate = new();

        public override bool StoresBookmarks => branches.TrueForAll(b => b.StoresBookmarks);

        public override bool StoresQuarantine => _quarantineBranch >= 0;

        public override bool CommitsEachBatch => branches.TrueForAll(b => b.CommitsEachBatch);

        /// <summary>
        /// Gets a value indicating whether a branch records the messages it loaded: each such branch records, in the
        /// transaction of its write, the ids of the messages the batch covers, under <c>job/branch</c>. A message every
        /// branch recorded is skipped by the source; one only some recorded is loaded into the others alone.
        /// </summary>
        public override bool StoresConsumed => branches.Exists(b => b.StoresConsumed);

        public override async ValueTask<IReadOnlySet<string>> ReadConsumedAsync(IReadOnlyList<string> messageIds, CancellationToken cancellationToken)
        {
            var found = new IReadOnlySet<string>?[_states.Length];
            for (var i = 0; i < _states.Length; i++)
            {
                var writer = _states[i].Writer;
                found[i] = writer.StoresConsumed ? await writer.ReadConsumedAsync(messageIds, cancellationToken).ConfigureAwait(false) : null;
            }

            var everywhere = new HashSet<string>(StringComparer.Ordinal);
            lock (_gate)
            {
                foreach (var id in messageIds)
                {
                    bool[]? had = null;
                    var all = true;
                    for (var i = 0; i < found.Length; i++)
                    {
                        if (found[i]?.Contains(id) == true)
                        {
                            (had ??= new bool[found.Length])[i] = true;
                        }
                        else
                        {
                            all = false;
                        }
                    }

                    if (all)
                    {
                        everywhere.Add(id);
                    }
                    else if (had is not null)
                    {
                        _partly[id] = had;
                    }
                }
            }

            return everywhere;
        }

        public IReadOnlyList<EtlBranchResult> Branches =>
            [.. _states.Select(s => new EtlBranchResult(s.Writer.Name, s.Loaded, s.Counts.Inserted, s.Counts.Updated, s.Counts.Deleted))];

        public override async ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken)
        {
            EtlBookmark? resume = null;
            var missing = false;
            foreach (var state in _states)
            {
                state.Committed = await state.Writer.ReadBookmarkAsync(cancellationToken).ConfigureAwait(false);
                if (state.Committed is not { } committed)
                {
                    missing = true;
                }
                else if (resume is null || committed.Offset < resume.Offset || (committed.Offset == resume.Offset && !committed.Completed))
                {
                    resume = committed;
                }
            }

            // The source resumes at the branch that is furthest behind; the others skip the batches they have.
            resume = missing ? null : resume;
            foreach (var state in _states)
            {
                state.Previous = resume?.Offset ?? 0;
            }

            return resume;
        }

        public override async ValueTask ResetAsync(CancellationToken cancellationToken)
        {
            foreach (var state in _states)
            {
                if (state.Committed is null)
                {
                    await state.Writer.ResetAsync(cancellationToken).ConfigureAwait(false);
                }
            }
        }

        public override async ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> rows, EtlCommit commit, CancellationToken cancellationToken)
        {
            // Every branch filters and maps its part of the batch before any branch's sink writes: a branch whose Where,
            // Select or SelectMany throws fails the batch before it is committed anywhere, so that a queue source's
            // messages, handed back, are not loaded again into the branches that would have committed it.
            var skips = Committed(commit);
            var maps = new Task[_states.Length];
            for (var i = 0; i < _states.Length; i++)
            {
                maps[i] = Skips(_states[i], commit.Bookmark) ? Task.CompletedTask : MapAsync(_states[i].Writer, rows, commit.RowOrigins, skips?[i].Positions);
            }

            try
            {
                await AllAsync(maps).ConfigureAwait(false);
            }
            catch
            {
                foreach (var state in _states)
                {
                    state.Writer.Discard();
                }

                throw;
            }

            var writes = new Task<EtlLoadCounts>[_states.Length];
            for (var i = 0; i < _states.Length; i++)
            {
                var own = For(i, commit);
                if (skips?[i].Ids is { Count: > 0 } had)
                {
                    // The branch recorded these messages already: it records only the others.
                    own = own with { Consumed = [.. own.Consumed.Where(id => !had.Contains(id))] };
                }

                writes[i] = WriteAsync(_states[i], own, cancellationToken);
            }

            return await AllAsync(writes).ConfigureAwait(false);
        }

        /// <summary>
        /// For each branch, the messages of <paramref name="commit"/> it recorded before (their ids and source positions),
        /// or null when no branch has any; they are no longer looked for.
        /// </summary>
        private (HashSet<string>? Ids, HashSet<long>? Positions)[]? Committed(EtlCommit commit)
        {
            (HashSet<string>? Ids, HashSet<long>? Positions)[]? skips = null;
            lock (_gate)
            {
                if (_partly.Count == 0)
                {
                    return null;
                }

                for (var j = 0; j < commit.Consumed.Count; j++)
                {
                    var id = commit.Consumed[j];
                    if (!_partly.Remove(id, out var had))
                    {
                        continue;
                    }

                    skips ??= new (HashSet<string>?, HashSet<long>?)[_states.Length];
                    for (var i = 0; i < had.Length; i++)
                    {
                        if (had[i])
                        {
                            (skips[i].Ids ??= new HashSet<string>(StringComparer.Ordinal)).Add(id);
                            (skips[i].Positions ??= []).Add(commit.ConsumedAt[j]);
                        }
                    }
                }
            }

            return skips;
        }

        public override async ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken)
        {
            var completions = new Task<EtlLoadCounts>[_states.Length];
            for (var i = 0; i < _states.Length; i++)
            {
                completions[i] = CompleteAsync(_states[i], For(i, commit), cancellationToken);
            }

            return await AllAsync(completions).ConfigureAwait(false);
        }

        public override async ValueTask DisposeAsync()
        {
            foreach (var branch in branches)
            {
                await branch.DisposeAsync().ConfigureAwait(false);
            }

            await base.DisposeAsync().ConfigureAwait(false);
        }

        private EtlCommit For(int branch, EtlCommit commit) =>
            branch == _quarantineBranch || commit.Quarantined.Count == 0 ? commit : commit with { Quarantined = [] };

        /// <summary>Waits for every branch (a failed one does not stop the others' writes), then reports the first failure by branch name.</summary>
        private async Task<EtlLoadCounts> AllAsync(Task<EtlLoadCounts>[] tasks)
        {
            await AllAsync((Task[])tasks).ConfigureAwait(false);
            var total = default(EtlLoadCounts);
            foreach (var task in tasks)
            {
                total += await task.ConfigureAwait(false);
            }

            return total;
        }

        private async Task AllAsync(Task[] tasks)
        {
            try
            {
                await Task.WhenAll(tasks).ConfigureAwait(false);
            }
            catch
            {
                for (var i = 0; i < tasks.Length; i++)
                {
                    if (tasks[i].Exception?.InnerException is { } error)
                    {
                        throw new EtlBranchException($"ETL job '{job}': multicast branch '{_states[i].Writer.Name}' failed: {error.Message}", error) { Branch = _states[i].Writer.Name, Row = _states[i].Writer.FailedRow };
                    }
                }

                throw;
            }
        }

        /// <summary>Whether the branch committed the batch that ends at <paramref name="bookmark"/> before the failure that the run resumes from.</summary>
        private static bool Skips(BranchState state, EtlBookmark? bookmark) =>
            bookmark is not null && state.Committed is { } committed && bookmark.Offset <= committed.Offset;

        private static async Task MapAsync(EtlBranch<T>.BranchWriter writer, ReadOnlyMemory<T> rows, ReadOnlyMemory<long> origins, HashSet<long>? skip)
        {
            await Task.Yield();
            writer.Map(rows.Span, skip is null ? default : origins.Span, skip);
        }

        private static async Task<EtlLoadCounts> WriteAsync(BranchState state, EtlCommit commit, CancellationToken cancellationToken)
        {
            await Task.Yield();
            var bookmark = commit.Bookmark;
            if (Skips(state, bookmark))
            {
                // The branch committed this batch before the failure that the run resumes from.
                state.Previous = bookmark!.Offset;
                return default;
            }

            if (bookmark is not null && state.Committed is { } committed)
            {
                if (state.Previous < committed.Offset)
                {
                    throw new InvalidOperationException(
                        $"The branch committed up to source offset {committed.Offset}, inside this batch (offsets {state.Previous} to {bookmark.Offset}): resume with the batch size of the run that failed, so that the batches line up.");
                }
            }

            var counts = await state.Writer.WriteAsync(commit, cancellationToken).ConfigureAwait(false);
            if (bookmark is not null)
            {
                state.Previous = bookmark.Offset;
            }

            state.Loaded += state.Writer.LastWritten;
            state.Counts += counts;
            return counts;
        }

        private static async Task<EtlLoadCounts> CompleteAsync(BranchState state, EtlCommit commit, CancellationToken cancellationToken)
        {
            await Task.Yield();
            var counts = state.Committed is { Completed: true } ? default : await state.Writer.CompleteAsync(commit, cancellationToken).ConfigureAwait(false);
            state.Counts += counts;
            return counts;
        }
    }

    private sealed class BranchState(EtlBranch<T>.BranchWriter writer)
    {
        public EtlBranch<T>.BranchWriter Writer => writer;

        public EtlBookmark? Committed { get; set; }

        public long Previous { get; set; }

        /// <summary>Gets or sets the rows this run handed to the branch's sink.</summary>
        public long Loaded { get; set; }

        /// <summary>Gets or sets the rows this run changed through the branch's sink.</summary>
        public EtlLoadCounts Counts { get; set; }
    }
}

/// <summary>A sink writer with branches (a multicast) reports each branch's counts for the run's result.</summary>
internal interface IEtlBranchCounts
{
    IReadOnlyList<EtlBranchResult> Branches { get; }
}

/// <summary>What one branch of a multicast did in a run.</summary>
/// <param name="Name">The branch's name.</param>
/// <param name="RowsLoaded">Rows handed to the branch's sink (after its filter, map or split; batches it had already committed before a restart are not counted).</param>
/// <param name="RowsInserted">Rows inserted by the branch's sink.</param>
/// <param name="RowsUpdated">Rows updated by the branch's sink.</param>
/// <param name="RowsDeleted">Rows deleted by the branch's sink.</param>
public sealed record EtlBranchResult(string Name, long RowsLoaded, long RowsInserted, long RowsUpdated, long RowsDeleted);
