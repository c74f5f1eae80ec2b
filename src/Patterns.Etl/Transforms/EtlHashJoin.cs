using System.Text.Json.Serialization.Metadata;
using Patterns.Streaming;

namespace Patterns.Etl;

/// <summary>
/// The join with a byte budget that spills (a grace hash join). The build side (the right source) is read into a hash
/// table at the first left row. If it fits its budget (rows and bytes), each left row is matched at once, as in memory.
/// If it does not, every right row (those held and the rest) is written to one of <see cref="EtlSpill.Partitions"/>
/// files by a hash of its key, and so is every left row as it comes (unless its partition has no right row); after the
/// left source ends, the partitions are joined one by one. A partition whose right rows fit the budget is read into a
/// table and its left rows matched against it, read once. One that does not fit is split again, both sides, with
/// another hash (up to <see cref="EtlSpillHash.MaxDepth"/> levels, as <c>DistinctBy</c> and <c>Aggregate</c>); a part
/// that no hash splits (its rows all of one key, or of keys whose hashes collide) is joined in slices: its right rows
/// read into a table as far as the budget allows, its left rows matched against it, and so on with the next slice (the
/// left file read once per slice). Each pair of a left and a right row of equal keys is joined exactly once; a row
/// whose key is <see langword="null"/> matches nothing.
/// </summary>
internal sealed class SpillingJoinStage<T, TRight, TKey, TOut> : EtlSpillingStage<T, TOut>
    where TKey : notnull
{
    private readonly EtlRun _run;
    private readonly EtlSource<TRight> _right;
    private readonly Func<T, TKey> _leftKey;
    private readonly Func<TRight, TKey> _rightKey;
    private readonly Func<T, TRight, TOut> _result;
    private readonly int _maxRows;
    private readonly long _budget;
    private readonly Func<TRight, long> _size;
    private readonly CancellationToken _cancellationToken;
    private readonly Lazy<JsonTypeInfo<T>> _leftType;
    private readonly Lazy<JsonTypeInfo<TRight>> _rightType;
    private Dictionary<TKey, List<TRight>>? _table;
    private EtlSpillWriter<T>?[]? _leftFiles;
    private EtlSpillWriter<TRight>?[]? _rightFiles;

    public SpillingJoinStage(Stage<TOut> next, EtlRun run, EtlSource<TRight> right, Func<T, TKey> leftKey, Func<TRight, TKey> rightKey, Func<T, TRight, TOut> result, int maxRows, long budget, Func<TRight, long> size, EtlSpill spill, CancellationToken cancellationToken)
        : base(next, new EtlSpillSession(run, "Join", "maxBuildBytes", spill), cancellationToken)
    {
        _run = run;
        _right = right;
        _leftKey = leftKey;
        _rightKey = rightKey;
        _result = result;
        _maxRows = maxRows;
        _budget = budget;
        _size = size;
        _cancellationToken = cancellationToken;
        _leftType = new(Session.TypeInfo<T>);
        _rightType = new(Session.TypeInfo<TRight>);
    }

    /// <summary>Gets a value indicating whether the build side passed its budget, so both sides go to partition files.</summary>
    public bool Spilling => _leftFiles is not null;

    public override ValueTask OnNextAsync(T item)
    {
        if (_table is null && _leftFiles is null)
        {
            return BuildThenJoinAsync(item);
        }

        return JoinAsync(item);
    }

    protected override Task FinishAsync(CancellationToken cancellationToken) => _leftFiles is null ? Task.CompletedTask : JoinPartitionsAsync();

    private async ValueTask BuildThenJoinAsync(T item)
    {
        try
        {
            await BuildAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (_run.FailedWithoutRow(ex))
        {
            // The build side's failure, at the first left row: not that row's (a transport source blames no message for it).
            throw;
        }

        await JoinAsync(item).ConfigureAwait(false);
    }

    private ValueTask JoinAsync(T item)
    {
        var key = _leftKey(item);
        if (key is null)
        {
            return default;
        }

        if (_leftFiles is not null)
        {
            var index = PartitionOf(key, 0, _leftFiles.Length);

            // A left row whose partition has no right row matches nothing: it is not written.
            if (_rightFiles![index] is not null)
            {
                (_leftFiles[index] ??= Session.Create(_leftType.Value)).Write(0, item);
            }

            return default;
        }

        if (!_table!.TryGetValue(key, out var matches))
        {
            return default;
        }

        return matches.Count == 1 ? Next.OnNextAsync(_result(item, matches[0])) : EmitAsync(item, matches);
    }

    private async ValueTask EmitAsync(T item, List<TRight> matches)
    {
        foreach (var match in matches)
        {
            await Next.OnNextAsync(_result(item, match)).ConfigureAwait(false);
        }
    }

    private async Task BuildAsync()
    {
        var table = new Dictionary<TKey, List<TRight>>();
        long held = 0;
        var count = 0;
        var context = new EtlSourceContext(_run, EtlBookmark.Start, _right.Name);
        await foreach (var row in _right.ReadAsync(context, _cancellationToken).ConfigureAwait(false))
        {
            var key = _rightKey(row);
            if (key is null)
            {
                continue;
            }

            if (_rightFiles is not null)
            {
                WriteRight(key, row);
                continue;
            }

            Add(table, key, row);
            held += EtlMemory.EntryOverhead + _size(row);
            if (++count > _maxRows || held > _budget)
            {
                Session.Observe("table", 0, count, held);
                StartSpilling(table, held, count);
            }
        }

        if (_rightFiles is null)
        {
            _table = table;
        }
    }

    private void StartSpilling(Dictionary<TKey, List<TRight>> table, long held, int count)
    {
        if (_run.Acknowledgements is not null)
        {
            // A queue's messages are acknowledged with the batch that loads their rows: a spilled left row's would be acknowledged before it is loaded.
            throw EtlMemory.Exceeded(_run, "Join", "maxBuildBytes", _budget, held, count, $"rows of its build side '{_right.Name}'", "A queue or subscription source cannot spill (its messages are acknowledged with the batch that loads their rows): join with the smaller source as the right side, or raise maxBuildBytes.");
        }

        // Left rows now leave after the left source ends: from here on, bookmarks are taken only at the end of the run.
        _run.PositionsTrackRows = false;
        _rightFiles = new EtlSpillWriter<TRight>?[Session.Partitions];
        _leftFiles = new EtlSpillWriter<T>?[Session.Partitions];
        foreach (var (key, rows) in table)
        {
            foreach (var row in rows)
            {
                WriteRight(key, row);
            }
        }

        table.Clear();
    }

    private void WriteRight(TKey key, TRight row)
    {
        var index = PartitionOf(key, 0, _rightFiles!.Length);
        (_rightFiles[index] ??= Session.Create(_rightType.Value)).Write(0, row);
    }

    private static int PartitionOf(TKey key, int depth, int partitions) => EtlSpillHash.Partition(key, EqualityComparer<TKey>.Default, depth, partitions);

    private async Task JoinPartitionsAsync()
    {
        for (var i = 0; i < _leftFiles!.Length; i++)
        {
            var left = _leftFiles[i];
            var right = _rightFiles![i];
            left?.Dispose();
            right?.Dispose();
            _leftFiles[i] = null;
            _rightFiles[i] = null;
            if (left is not null && right is not null)
            {
                await JoinPartitionAsync(left.Path, right.Path, 1).ConfigureAwait(false);
            }

            // A partition with rows on one side only joins nothing.
            Delete(left?.Path);
            Delete(right?.Path);
        }
    }

    /// <summary>
    /// Joins one partition (a left and a right file whose keys hash alike down to <paramref name="depth"/>): at once if
    /// its right rows fit the budget; else split again with the hash of <paramref name="depth"/>, or in slices when that
    /// splits nothing. Deletes both files once done with them.
    /// </summary>
    private async Task JoinPartitionAsync(string leftFile, string rightFile, int depth)
    {
        var table = new Dictionary<TKey, List<TRight>>();
        var rights = new Cursor(Session.Read(rightFile, _rightType.Value, delete: false, _cancellationToken));
        try
        {
            var fits = Fill(table, rights, depth);
            if (!fits && depth < EtlSpillHash.MaxDepth)
            {
                var parts = SplitRight(table, rights, depth);
                rights.Dispose();
                if (parts is not null)
                {
                    Delete(rightFile);
                    var lefts = SplitLeft(leftFile, parts, depth);
                    Delete(leftFile);
                    await JoinPartsAsync(lefts, parts, depth).ConfigureAwait(false);
                    return;
                }

                // Every right row went to the same part: no hash splits these keys, so the partition is joined in slices, from its first row.
                rights = new Cursor(Session.Read(rightFile, _rightType.Value, delete: false, _cancellationToken));
                fits = Fill(table, rights, depth);
            }

            if (!fits)
            {
                Session.Observe("slices", depth, 0, 0);
            }

            while (table.Count > 0)
            {
                await ProbeAsync(table, leftFile, depth).ConfigureAwait(false);
                table.Clear();
                if (fits)
                {
                    break;
                }

                fits = Fill(table, rights, depth);
            }
        }
        finally
        {
            rights.Dispose();
        }

        Delete(leftFile);
        Delete(rightFile);
    }

    /// <summary>Reads right rows into <paramref name="table"/> up to the budget; returns <see langword="true"/> when the rows ran out first.</summary>
    private bool Fill(Dictionary<TKey, List<TRight>> table, Cursor rights, int depth)
    {
        long held = 0;
        var count = 0;
        while (rights.HasRow && held < _budget && count < _maxRows)
        {
            var row = rights.Row;
            Add(table, _rightKey(row), row);
            held += EtlMemory.EntryOverhead + _size(row);
            count++;
            rights.MoveNext();
        }

        if (count > 0)
        {
            Session.Observe("table", depth, count, held);
        }

        return !rights.HasRow;
    }

    /// <summary>
    /// Writes the right rows held in <paramref name="table"/> and the rest of <paramref name="rights"/> to part files by
    /// the hash of <paramref name="depth"/>; returns them, or <see langword="null"/> (and deletes the one part) when
    /// every row went to the same part.
    /// </summary>
    private EtlSpillWriter<TRight>?[]? SplitRight(Dictionary<TKey, List<TRight>> table, Cursor rights, int depth)
    {
        var parts = new EtlSpillWriter<TRight>?[Session.Partitions];
        foreach (var (key, rows) in table)
        {
            foreach (var row in rows)
            {
                Write(parts, key, row, depth);
            }
        }

        table.Clear();
        for (; rights.HasRow; rights.MoveNext())
        {
            var row = rights.Row;
            Write(parts, _rightKey(row), row, depth);
        }

        var used = 0;
        foreach (var part in parts)
        {
            if (part is not null)
            {
                part.Dispose();
                used++;
            }
        }

        if (used > 1)
        {
            Session.Observe("split", depth, used, 0);
            return parts;
        }

        foreach (var part in parts)
        {
            Delete(part?.Path);
        }

        return null;
    }

    /// <summary>Writes the left rows to the parts of <paramref name="rights"/>, by the same hash; a row whose part has no right row is dropped (it matches nothing).</summary>
    private EtlSpillWriter<T>?[] SplitLeft(string leftFile, EtlSpillWriter<TRight>?[] rights, int depth)
    {
        var parts = new EtlSpillWriter<T>?[rights.Length];
        try
        {
            foreach (var (_, item) in Session.Read(leftFile, _leftType.Value, delete: false, _cancellationToken))
            {
                var index = PartitionOf(_leftKey(item), depth, parts.Length);
                if (rights[index] is not null)
                {
                    (parts[index] ??= Session.Create(_leftType.Value)).Write(0, item);
                }
            }
        }
        finally
        {
            foreach (var part in parts)
            {
                part?.Dispose();
            }
        }

        return parts;
    }

    private async Task JoinPartsAsync(EtlSpillWriter<T>?[] lefts, EtlSpillWriter<TRight>?[] rights, int depth)
    {
        for (var i = 0; i < rights.Length; i++)
        {
            if (lefts[i] is { } left && rights[i] is { } right)
            {
                await JoinPartitionAsync(left.Path, right.Path, depth + 1).ConfigureAwait(false);
            }
            else
            {
                // A part with rows on one side only joins nothing.
                Delete(lefts[i]?.Path);
                Delete(rights[i]?.Path);
            }
        }
    }

    private void Write(EtlSpillWriter<TRight>?[] parts, TKey key, TRight row, int depth) =>
        (parts[PartitionOf(key, depth, parts.Length)] ??= Session.Create(_rightType.Value)).Write(0, row);

    /// <summary>Matches the left rows of <paramref name="leftFile"/> against <paramref name="table"/>, reading the file once.</summary>
    private async Task ProbeAsync(Dictionary<TKey, List<TRight>> table, string leftFile, int depth)
    {
        var probed = 0;
        foreach (var (_, item) in Session.Read(leftFile, _leftType.Value, delete: false, _cancellationToken))
        {
            probed++;
            if (table.TryGetValue(_leftKey(item), out var matches))
            {
                foreach (var match in matches)
                {
                    await Next.OnNextAsync(_result(item, match)).ConfigureAwait(false);

                    // The left source has ended, so each joined row stands alone: a batch that filled (in rows or bytes) on it is sealed now.
                    _run.SourceRowDone?.Invoke();
                }
            }
        }

        Session.Observe("probe", depth, probed, 0);
    }

    private static void Add(Dictionary<TKey, List<TRight>> table, TKey key, TRight row)
    {
        if (!table.TryGetValue(key, out var list))
        {
            table[key] = list = new List<TRight>(1);
        }

        list.Add(row);
    }

    private static void Delete(string? file)
    {
        if (file is not null)
        {
            File.Delete(file);
        }
    }

    /// <summary>A right file read one row ahead: <see cref="Row"/> is the next row not yet taken.</summary>
    private sealed class Cursor : IDisposable
    {
        private readonly IEnumerator<(long Ordinal, TRight Value)> _rows;

        public Cursor(IEnumerable<(long Ordinal, TRight Value)> rows)
        {
            _rows = rows.GetEnumerator();
            MoveNext();
        }

        public bool HasRow { get; private set; }

        public TRight Row => _rows.Current.Value;

        public void MoveNext() => HasRow = _rows.MoveNext();

        public void Dispose() => _rows.Dispose();
    }
}
