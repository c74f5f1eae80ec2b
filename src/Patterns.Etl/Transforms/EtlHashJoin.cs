using System.Text.Json.Serialization.Metadata;
using Patterns.Streaming;

namespace Patterns.Etl;

/// <summary>
/// The join with a byte budget that spills (a grace hash join). The build side (the right source) is read into a hash
/// table at the first left row. If it fits its budget (rows and bytes), each left row is matched at once, as in memory.
/// If it does not, every right row (those held and the rest) is written to one of <see cref="EtlSpill.Partitions"/>
/// files by a hash of its key, and so is every left row as it comes; after the left source ends, the partitions are
/// joined one by one: a partition's right rows are read into a table as far as the budget allows, the partition's left
/// rows are matched against it, and so on with the next slice of right rows (the left file read once per slice) until
/// the partition's right rows are done. Each pair of a left and a right row of equal keys is joined exactly once; a row
/// whose key is <see langword="null"/> matches nothing.
/// </summary>
internal sealed class SpillingJoinStage<T, TRight, TKey, TOut> : ForwardingStage<T, TOut>, IDisposable
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
    private readonly EtlSpillSession _session;
    private readonly Lazy<JsonTypeInfo<T>> _leftType;
    private readonly Lazy<JsonTypeInfo<TRight>> _rightType;
    private Dictionary<TKey, List<TRight>>? _table;
    private EtlSpillWriter<T>?[]? _leftFiles;
    private EtlSpillWriter<TRight>?[]? _rightFiles;
    private bool _completed;

    public SpillingJoinStage(Stage<TOut> next, EtlRun run, EtlSource<TRight> right, Func<T, TKey> leftKey, Func<TRight, TKey> rightKey, Func<T, TRight, TOut> result, int maxRows, long budget, Func<TRight, long> size, EtlSpill spill, CancellationToken cancellationToken)
        : base(next)
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
        _session = new EtlSpillSession(run, "Join", "maxBuildBytes", budget, spill);
        _leftType = new(_session.TypeInfo<T>);
        _rightType = new(_session.TypeInfo<TRight>);
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

    public override async ValueTask OnCompletedAsync(bool final)
    {
        try
        {
            if (final && !_completed && _leftFiles is not null)
            {
                _completed = true;
                try
                {
                    await JoinPartitionsAsync().ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (_cancellationToken.IsCancellationRequested)
                {
                    // A graceful stop, as while the source is read: what was joined is loaded, the rest is not, and the
                    // run ends Stopped (its bookmark stays where the last commit before the spill left it).
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

    public void Dispose() => _session.Dispose();

    private async ValueTask BuildThenJoinAsync(T item)
    {
        await BuildAsync().ConfigureAwait(false);
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
            var index = EtlSpillHash.Partition(key, EqualityComparer<TKey>.Default, 0, _leftFiles.Length);
            (_leftFiles[index] ??= _session.Create(_leftType.Value)).Write(0, item);
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
        _rightFiles = new EtlSpillWriter<TRight>?[_session.Partitions];
        _leftFiles = new EtlSpillWriter<T>?[_session.Partitions];
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
        var index = EtlSpillHash.Partition(key, EqualityComparer<TKey>.Default, 0, _rightFiles!.Length);
        (_rightFiles[index] ??= _session.Create(_rightType.Value)).Write(0, row);
    }

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
                await JoinPartitionAsync(left.Path, right.Path).ConfigureAwait(false);
            }

            // A partition with rows on one side only joins nothing.
            Delete(left?.Path);
            Delete(right?.Path);
        }
    }

    /// <summary>Joins one partition: its right rows in slices that fit the budget, its left rows read once per slice.</summary>
    private async Task JoinPartitionAsync(string leftFile, string rightFile)
    {
        var table = new Dictionary<TKey, List<TRight>>();
        using var rights = _session.Read(rightFile, _rightType.Value, delete: false, _cancellationToken).GetEnumerator();
        var more = true;
        while (more)
        {
            table.Clear();
            long held = 0;
            var count = 0;
            while (true)
            {
                if (!rights.MoveNext())
                {
                    more = false;
                    break;
                }

                var row = rights.Current.Value;
                Add(table, _rightKey(row), row);
                held += EtlMemory.EntryOverhead + _size(row);
                if (++count >= _maxRows || held >= _budget)
                {
                    break;
                }
            }

            if (table.Count == 0)
            {
                break;
            }

            foreach (var (_, item) in _session.Read(leftFile, _leftType.Value, delete: false, _cancellationToken))
            {
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
        }
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
}
