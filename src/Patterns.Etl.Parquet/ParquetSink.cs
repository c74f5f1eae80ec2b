using Parquet;
using Parquet.Schema;

namespace Patterns.Etl;

/// <summary>Writes a Parquet file, one row group per batch, under a temporary name renamed into place when the run completes.</summary>
internal sealed class ParquetSink<T>(string path, EtlSchema<T> schema, ParquetWriteOptions options) : EtlSink<T>
{
    public override string Name => path;

    public override int PreferredBatchSize => options.RowGroupRows;

    public override Func<T, long>? RowSize => schema.EstimateSize;

    public override async ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken)
    {
        var columns = schema.Columns.Select(c => ParquetColumnWriter<T>.For(c, options)).ToArray();
        var temporary = path + "." + context.RunId + ".tmp";
        var stream = new FileStream(temporary, FileMode.Create, FileAccess.ReadWrite, FileShare.None, 1 << 16);
        try
        {
            var writer = await ParquetWriter.CreateAsync(
                new ParquetSchema(columns.Select(c => (Field)c.Field)),
                stream,
                new ParquetOptions { CompressionMethod = options.Compression },
                append: false,
                cancellationToken).ConfigureAwait(false);
            return new Writer(path, temporary, stream, writer, columns);
        }
        catch
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            File.Delete(temporary);
            throw;
        }
    }

    private sealed class Writer(string path, string temporary, FileStream stream, ParquetWriter writer, ParquetColumnWriter<T>[] columns) : EtlSinkWriter<T>
    {
        private bool _closed;
        private bool _completed;

        // The file is moved into place only when the run completes.
        public override bool CommitsEachBatch => false;

        public override async ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> rows, EtlCommit commit, CancellationToken cancellationToken)
        {
            if (rows.IsEmpty)
            {
                return default;
            }

            using (var group = writer.CreateRowGroup())
            {
                foreach (var column in columns)
                {
                    await column.WriteAsync(group, rows, cancellationToken).ConfigureAwait(false);
                }

                group.CompleteValidate();
            }

            return new EtlLoadCounts(rows.Length, 0, 0);
        }

        public override async ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken)
        {
            await CloseAsync().ConfigureAwait(false);
            File.Move(temporary, path, overwrite: true);
            _completed = true;
            return default;
        }

        public override async ValueTask DisposeAsync()
        {
            await CloseAsync().ConfigureAwait(false);
            if (!_completed)
            {
                File.Delete(temporary);
            }

            await base.DisposeAsync().ConfigureAwait(false);
        }

        private async ValueTask CloseAsync()
        {
            if (_closed)
            {
                return;
            }

            _closed = true;
            try
            {
                // Writes the footer.
                await writer.DisposeAsync().ConfigureAwait(false);
            }
            finally
            {
                await stream.DisposeAsync().ConfigureAwait(false);
            }
        }
    }
}

/// <summary>Writes one schema column of a batch: its values gathered into a reused typed array, then handed to Parquet.Net as one column chunk.</summary>
internal abstract class ParquetColumnWriter<T>
{
    public abstract DataField Field { get; }

    public static ParquetColumnWriter<T> For(EtlColumn<T> column, ParquetWriteOptions options) => column.Type switch
    {
        EtlColumnType.Int32 => new Values<int>(new DataField<int>(column.Name), column.Getter<int>()),
        EtlColumnType.Int64 => new Values<long>(new DataField<long>(column.Name), column.Getter<long>()),
        EtlColumnType.Decimal => new Values<decimal>(new DecimalDataField(column.Name, options.DecimalPrecision, options.DecimalScale), column.Getter<decimal>()),
        EtlColumnType.Double => new Values<double>(new DataField<double>(column.Name), column.Getter<double>()),
        EtlColumnType.Boolean => new Values<bool>(new DataField<bool>(column.Name), column.Getter<bool>()),
        EtlColumnType.Guid => new Values<Guid>(new DataField<Guid>(column.Name), column.Getter<Guid>()),
        EtlColumnType.DateTime => new Values<DateTime>(
            new DateTimeDataField(column.Name, DateTimeFormat.Timestamp, isAdjustedToUTC: true, unit: DateTimeTimeUnit.Micros),
            Utc(column.Getter<DateTime>())),
        _ => new Strings(new DataField<string>(column.Name, nullable: true), column.Getter<string?>()),
    };

    public abstract ValueTask WriteAsync(ParquetRowGroupWriter group, ReadOnlyMemory<T> rows, CancellationToken cancellationToken);

    // Like the other sinks, a value that is not of kind UTC is taken as UTC (not converted from local time).
    private static Func<T, DateTime> Utc(Func<T, DateTime> get) => row => DateTime.SpecifyKind(get(row), DateTimeKind.Utc);

    private sealed class Values<TValue>(DataField dataField, Func<T, TValue> get) : ParquetColumnWriter<T>
        where TValue : struct
    {
        private TValue[] _values = [];

        public override DataField Field => dataField;

        public override async ValueTask WriteAsync(ParquetRowGroupWriter group, ReadOnlyMemory<T> rows, CancellationToken cancellationToken)
        {
            Gather(rows.Span);
            await group.WriteAsync<TValue>(dataField, _values.AsMemory(0, rows.Length), null, null, cancellationToken).ConfigureAwait(false);
        }

        private void Gather(ReadOnlySpan<T> rows)
        {
            if (_values.Length < rows.Length)
            {
                _values = new TValue[rows.Length];
            }

            for (var i = 0; i < rows.Length; i++)
            {
                _values[i] = get(rows[i]);
            }
        }
    }

    private sealed class Strings(DataField dataField, Func<T, string?> get) : ParquetColumnWriter<T>
    {
        private string?[] _values = [];

        public override DataField Field => dataField;

        public override async ValueTask WriteAsync(ParquetRowGroupWriter group, ReadOnlyMemory<T> rows, CancellationToken cancellationToken)
        {
            var count = Gather(rows.Span);
            try
            {
                await group.WriteAsync(dataField, new ArraySegment<string>(_values!, 0, count), null).ConfigureAwait(false);
            }
            finally
            {
                Array.Clear(_values, 0, count);
            }
        }

        private int Gather(ReadOnlySpan<T> rows)
        {
            if (_values.Length < rows.Length)
            {
                _values = new string?[rows.Length];
            }

            for (var i = 0; i < rows.Length; i++)
            {
                _values[i] = get(rows[i]);
            }

            return rows.Length;
        }
    }
}
