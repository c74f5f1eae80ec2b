using System.Globalization;
using nietras.SeparatedValues;

namespace Patterns.Etl;

/// <summary>Writes a CSV file under a temporary name and renames it into place when the run completes.</summary>
internal sealed class CsvSink<T>(string path, EtlSchema<T> schema, char separator) : EtlSink<T>
{
    public override string Name => path;

    public override Func<T, long>? RowSize => schema.EstimateSize;

    public override ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) =>
        new(new Writer(path, schema, separator, context.RunId));

    private sealed class Writer : EtlSinkWriter<T>
    {
        private readonly string _path;
        private readonly string _temporary;
        private readonly CsvRowWriter<T> _rows;
        private bool _completed;

        public Writer(string path, EtlSchema<T> schema, char separator, string runId)
        {
            _path = path;
            _temporary = path + "." + runId + ".tmp";
            _rows = new CsvRowWriter<T>(new FileStream(_temporary, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16), schema, separator);
        }

        // The file is moved into place only when the run completes.
        public override bool CommitsEachBatch => false;

        public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> rows, EtlCommit commit, CancellationToken cancellationToken)
        {
            _rows.Write(rows.Span);
            return new(new EtlLoadCounts(rows.Length, 0, 0));
        }

        public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken)
        {
            _rows.Dispose();
            File.Move(_temporary, _path, overwrite: true);
            _completed = true;
            return new(default(EtlLoadCounts));
        }

        public override ValueTask DisposeAsync()
        {
            _rows.Dispose();
            if (!_completed)
            {
                File.Delete(_temporary);
            }

            return base.DisposeAsync();
        }
    }
}

/// <summary>Writes records as CSV rows through a schema (the CSV sink and the sort's spill files).</summary>
internal sealed class CsvRowWriter<T> : IDisposable
{
    private readonly Stream _stream;
    private readonly SepWriter _writer;
    private readonly ColumnWriter[] _columns;
    private bool _disposed;

    public CsvRowWriter(Stream stream, EtlSchema<T> schema, char separator)
    {
        _stream = stream;
        _writer = Sep.New(separator).Writer(o => o with { Escape = true, CultureInfo = CultureInfo.InvariantCulture }).To(stream, leaveOpen: true);
        _writer.Header.Add([.. schema.Columns.Select(c => c.Name)]);
        _columns = [.. schema.Columns.Select(ColumnWriter.For)];
    }

    public void Write(ReadOnlySpan<T> rows)
    {
        foreach (var record in rows)
        {
            Write(record);
        }
    }

    public void Write(T record)
    {
        using var row = _writer.NewRow();
        for (var i = 0; i < _columns.Length; i++)
        {
            _columns[i].Write(row[i], record);
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _writer.Dispose();
        _stream.Dispose();
    }

    private abstract class ColumnWriter
    {
        public static ColumnWriter For(EtlColumn<T> column) => column.Type switch
        {
            EtlColumnType.Int32 => new Formatted<int>(column.Getter<int>()),
            EtlColumnType.Int64 => new Formatted<long>(column.Getter<long>()),
            EtlColumnType.Decimal => new Formatted<decimal>(column.Getter<decimal>()),
            EtlColumnType.Double => new Formatted<double>(column.Getter<double>()),
            EtlColumnType.Guid => new Formatted<Guid>(column.Getter<Guid>()),
            EtlColumnType.DateTime => new Time(column.Getter<DateTime>()),
            EtlColumnType.Boolean => new Flag(column.Getter<bool>()),
            _ => new Text(column.Getter<string?>()),
        };

        public abstract void Write(SepWriter.Col col, T record);

        private sealed class Formatted<TValue>(Func<T, TValue> get) : ColumnWriter
            where TValue : ISpanFormattable
        {
            public override void Write(SepWriter.Col col, T record) => col.Format(get(record));
        }

        private sealed class Time(Func<T, DateTime> get) : ColumnWriter
        {
            public override void Write(SepWriter.Col col, T record) => col.Format(DateTime.SpecifyKind(get(record), DateTimeKind.Utc), "O");
        }

        private sealed class Flag(Func<T, bool> get) : ColumnWriter
        {
            public override void Write(SepWriter.Col col, T record) => col.Set(get(record) ? "true" : "false");
        }

        private sealed class Text(Func<T, string?> get) : ColumnWriter
        {
            public override void Write(SepWriter.Col col, T record) => col.Set(get(record) ?? string.Empty);
        }
    }
}
