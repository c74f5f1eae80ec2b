using System.Globalization;
using nietras.SeparatedValues;

namespace Patterns.Etl;

/// <summary>
/// Sorts rows within a memory budget: up to the budget they are sorted in memory; each full run is written sorted to a
/// CSV file (through the schema) in the run's spill folder (<see cref="EtlSpillSession"/>: a folder of its own, with a
/// lock file, swept by a later run if this process dies), and the runs are merged with a priority queue as they are
/// read back. The budget is in rows, and optionally in bytes (rows measured by the schema's estimate): the run spills at
/// either, or, when <paramref name="exceeded"/> is given (spilling is off), fails with what it returns. The sort is
/// stable: rows with equal keys leave in their input order. In memory, ties are broken on each row's input sequence
/// number; runs are written in input order, so in the merge, ties are broken on the run's index (the in-memory run last).
/// </summary>
internal sealed class ExternalSorter<T, TKey>(Func<T, TKey> key, IComparer<TKey> comparer, EtlSchema<T> schema, int budget, long? budgetBytes, EtlSpillSession session, Func<int, long, Exception>? exceeded) : IDisposable
{
    private readonly List<(TKey Key, long Sequence, T Row)> _buffer = [];
    private readonly List<string> _spills = [];
    private readonly Comparison<(TKey Key, long Sequence, T Row)> _compare = (a, b) => comparer.Compare(a.Key, b.Key) is var c and not 0 ? c : a.Sequence.CompareTo(b.Sequence);
    private long _bytes;
    private long _sequence;

    /// <summary>Gets the number of runs spilled to disk.</summary>
    public int Spills => _spills.Count;

    public void Add(T row)
    {
        _buffer.Add((key(row), _sequence++, row));
        if (budgetBytes is not null)
        {
            _bytes += EtlMemory.EntryOverhead + schema.EstimateSize(row);
        }

        if (exceeded is not null)
        {
            // Not spilling: the rows fail the run only once they pass the budget, not when they reach it.
            if (_buffer.Count > budget || _bytes > budgetBytes)
            {
                throw exceeded(_buffer.Count, _bytes);
            }
        }
        else if (_buffer.Count >= budget || _bytes >= budgetBytes)
        {
            Spill();
        }
    }

    /// <summary>The sorted rows; spill files are deleted when the enumeration ends (or the run does).</summary>
    public IEnumerable<T> Sorted(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        _buffer.Sort(_compare);
        if (_spills.Count == 0)
        {
            foreach (var (_, _, row) in _buffer)
            {
                yield return row;
            }

            yield break;
        }

        var readers = new List<SpillReader>();
        try
        {
            // Equal keys leave from the earliest run first: runs hold consecutive stretches of the input, in order.
            var queue = new PriorityQueue<int, (TKey Key, int Source)>(Comparer<(TKey Key, int Source)>.Create((a, b) => comparer.Compare(a.Key, b.Key) is var c and not 0 ? c : a.Source.CompareTo(b.Source)));
            var memory = 0;
            foreach (var file in _spills)
            {
                var reader = new SpillReader(file, schema);
                session.Opened(reader);
                readers.Add(reader);
                if (reader.MoveNext())
                {
                    queue.Enqueue(readers.Count - 1, (key(reader.Current), readers.Count - 1));
                }
            }

            // The in-memory run is the last source, index readers.Count.
            var memoryIndex = readers.Count;
            if (_buffer.Count > 0)
            {
                queue.Enqueue(memoryIndex, (_buffer[0].Key, memoryIndex));
            }

            while (queue.TryDequeue(out var source, out _))
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (source == memoryIndex)
                {
                    yield return _buffer[memory++].Row;
                    if (memory < _buffer.Count)
                    {
                        queue.Enqueue(memoryIndex, (_buffer[memory].Key, memoryIndex));
                    }
                }
                else
                {
                    var reader = readers[source];
                    yield return reader.Current;
                    if (reader.MoveNext())
                    {
                        queue.Enqueue(source, (key(reader.Current), source));
                    }
                }
            }
        }
        finally
        {
            foreach (var reader in readers)
            {
                session.Closed(reader);
                reader.Dispose();
            }

            Dispose();
        }
    }

    /// <summary>Deletes the spill folder (closing what is open in it) and drops the in-memory run.</summary>
    public void Dispose()
    {
        _spills.Clear();
        _buffer.Clear();
        session.Dispose();
    }

    private void Spill()
    {
        _buffer.Sort(_compare);
        var file = session.NewFile(".csv");
        using (var writer = new CsvRowWriter<T>(new FileStream(file, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16), schema, ','))
        {
            foreach (var (_, _, row) in _buffer)
            {
                writer.Write(row);
            }
        }

        _spills.Add(file);
        _buffer.Clear();
        _bytes = 0;
    }

    private sealed class SpillReader : IDisposable
    {
        private readonly SepReader _reader;
        private readonly SepFieldReader _fields;
        private readonly Func<EtlFieldReader, T> _create;

        public SpillReader(string file, EtlSchema<T> schema)
        {
            _reader = Sep.New(',').Reader(o => o with { Unescape = true, CultureInfo = CultureInfo.InvariantCulture }).FromFile(file);
            var names = schema.Columns.Select(c => c.Name).ToList();
            _fields = new SepFieldReader(_reader, [.. Enumerable.Range(0, names.Count)], names, emptyIsNull: true);
            _create = schema.RequireCreate("OrderBy");
        }

        public T Current { get; private set; } = default!;

        public bool MoveNext()
        {
            if (!_reader.MoveNext())
            {
                return false;
            }

            if (!_fields.TryCreate(_create, out var row, out _, out var error))
            {
                throw new InvalidDataException($"A sort spill file could not be read back: {error}");
            }

            Current = row;
            return true;
        }

        public void Dispose() => _reader.Dispose();
    }
}
