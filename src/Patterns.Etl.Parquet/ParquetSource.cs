using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Parquet;
using Parquet.Schema;

namespace Patterns.Etl;

/// <summary>
/// A Parquet file read one row group at a time: each column of the group is read into a reused typed array, then each
/// row is handed to the schema's create function through <see cref="ParquetFieldReader"/>. The bookmark is the count of
/// rows consumed: a resumed run skips whole row groups before it without reading them.
/// </summary>
internal sealed class ParquetSource<T>(string path, EtlSchema<T> schema, Func<EtlFieldReader, T> create, ParquetReadOptions options) : EtlSource<T>
{
    public override string Name => path;

    public override bool CanResume => true;

    public override async IAsyncEnumerable<T> ReadAsync(EtlSourceContext context, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
        await using var _ = stream.ConfigureAwait(false);
        context.Length = stream.Length;
        var reader = await OpenAsync(stream, cancellationToken).ConfigureAwait(false);
        await using var __ = reader.ConfigureAwait(false);
        var fields = new ParquetFieldReader(Map(reader.Schema));
        var skip = context.Resume.Offset;
        long offset = 0;
        for (var group = 0; group < reader.RowGroupCount; group++)
        {
            var rows = await ReadGroupAsync(reader, group, fields, offset, skip, cancellationToken).ConfigureAwait(false);
            if (rows < 0)
            {
                // Skipped unread: every row of the group was loaded by an earlier run.
                offset -= rows;
                continue;
            }

            context.BytesRead = stream.Position;
            for (var row = 0; row < rows; row++)
            {
                offset++;
                if (offset <= skip)
                {
                    continue;
                }

                context.Offset = offset;
                context.Line = offset;
                fields.Row = row;
                if (EtlRecordFactory.TryCreate(create, fields, out var record, out var column, out var error))
                {
                    yield return record;
                }
                else
                {
                    context.Quarantine(fields.Format(), column, error!);
                }
            }
        }

        context.BytesRead = stream.Length;
    }

    private async Task<ParquetReader> OpenAsync(Stream stream, CancellationToken cancellationToken)
    {
        try
        {
            return await ParquetReader.CreateAsync(stream, null, leaveStreamOpen: true, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            throw new InvalidDataException($"'{path}' is not a readable Parquet file: {ex.Message}", ex);
        }
    }

    /// <summary>Reads a row group's columns; returns its row count, or minus its row count when it was skipped unread.</summary>
    private async Task<long> ReadGroupAsync(ParquetReader reader, int index, ParquetFieldReader fields, long offset, long skip, CancellationToken cancellationToken)
    {
        var group = reader.OpenRowGroupReader(index);
        var rows = group.RowCount;
        if (offset + rows <= skip)
        {
            return -rows;
        }

        if (rows > options.MaxRowGroupRows)
        {
            throw new InvalidDataException(
                $"Parquet file '{path}': row group {index} has {rows} rows, more than ParquetReadOptions.MaxRowGroupRows ({options.MaxRowGroupRows}); a row group is read whole, so raise the limit if the memory allows it, or rewrite the file with smaller row groups.");
        }

        foreach (var column in fields.Columns)
        {
            try
            {
                await column.ReadAsync(group, (int)rows, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                throw new InvalidDataException($"Parquet file '{path}': column '{column.Name}' of row group {index} could not be read: {ex.Message}", ex);
            }
        }

        return rows;
    }

    private ParquetColumnReader[] Map(ParquetSchema fileSchema)
    {
        var columns = schema.Columns;
        var readers = new ParquetColumnReader[columns.Count];
        var problems = new List<string>();
        for (var i = 0; i < columns.Count; i++)
        {
            var column = columns[i];
            var field = fileSchema.Fields.OfType<DataField>().FirstOrDefault(f => string.Equals(f.Name, column.Name, StringComparison.OrdinalIgnoreCase));
            if (field is null)
            {
                problems.Add($"it has no column '{column.Name}'");
            }
            else if (field.IsArray || field.MaxRepetitionLevel > 0)
            {
                problems.Add($"its column '{field.Name}' is a list, not a {column.Type} value");
            }
            else if (ParquetColumnReader.For(field, column.Type) is { } reader)
            {
                readers[i] = reader;
            }
            else
            {
                problems.Add($"its column '{field.Name}' holds {ParquetColumnReader.TypeName(field.ClrType)} values, which cannot be read as {column.Type}");
            }
        }

        return problems.Count == 0
            ? readers
            : throw new InvalidDataException(
                $"Parquet file '{path}' does not match the schema of {typeof(T).Name}: {string.Join("; ", problems)} (its columns are {string.Join(", ", fileSchema.Fields.Select(f => f.Name))}).");
    }
}

/// <summary>The fields of the current row of a row group, by schema ordinal.</summary>
internal sealed class ParquetFieldReader(ParquetColumnReader[] columns) : EtlFieldReader
{
    public ParquetColumnReader[] Columns => columns;

    public int Row { get; set; }

    public override int Int32(int ordinal) => columns[ordinal].Int32(Row);

    public override long Int64(int ordinal) => columns[ordinal].Int64(Row);

    public override decimal Decimal(int ordinal) => columns[ordinal].Decimal(Row);

    public override double Double(int ordinal) => columns[ordinal].Double(Row);

    public override bool Boolean(int ordinal) => columns[ordinal].Boolean(Row);

    public override DateTime DateTime(int ordinal) => columns[ordinal].DateTime(Row);

    public override string String(int ordinal) => columns[ordinal].String(Row);

    public override Guid Guid(int ordinal) => columns[ordinal].Guid(Row);

    public override bool IsNull(int ordinal) => columns[ordinal].IsNull(Row);

    /// <summary>The current row as CSV text, for its quarantine entry.</summary>
    public string Format()
    {
        var text = new StringBuilder();
        for (var i = 0; i < columns.Length; i++)
        {
            if (i > 0)
            {
                text.Append(',');
            }

            text.Append(columns[i].Format(Row));
        }

        return text.ToString();
    }
}

/// <summary>One column of a row group, read into a typed array reused from group to group.</summary>
internal abstract class ParquetColumnReader(DataField dataField)
{
    public string Name => dataField.Name;

    protected DataField Field => dataField;

    /// <summary>Makes the reader of a file column for a schema column type, or <see langword="null"/> when the file's type cannot be read as it.</summary>
    public static ParquetColumnReader? For(DataField field, EtlColumnType type)
    {
        var clr = field.ClrType;
        var accepted = type switch
        {
            EtlColumnType.Int32 => clr == typeof(int) || clr == typeof(short) || clr == typeof(byte) || clr == typeof(sbyte) || clr == typeof(ushort),
            EtlColumnType.Int64 => clr == typeof(long) || clr == typeof(int) || clr == typeof(uint) || clr == typeof(short) || clr == typeof(byte),
            EtlColumnType.Decimal => clr == typeof(decimal) || clr == typeof(int) || clr == typeof(long),
            EtlColumnType.Double => clr == typeof(double) || clr == typeof(float) || clr == typeof(int) || clr == typeof(long),
            EtlColumnType.Boolean => clr == typeof(bool),
            EtlColumnType.DateTime => clr == typeof(DateTime) || clr == typeof(DateTimeOffset),
            EtlColumnType.Guid => clr == typeof(Guid),
            _ => IsText(clr),
        };
        if (!accepted)
        {
            return null;
        }

        return clr == typeof(int) ? Values<int>(field)
            : clr == typeof(long) ? Values<long>(field)
            : clr == typeof(short) ? Values<short>(field)
            : clr == typeof(byte) ? Values<byte>(field)
            : clr == typeof(sbyte) ? Values<sbyte>(field)
            : clr == typeof(ushort) ? Values<ushort>(field)
            : clr == typeof(uint) ? Values<uint>(field)
            : clr == typeof(decimal) ? Values<decimal>(field)
            : clr == typeof(double) ? Values<double>(field)
            : clr == typeof(float) ? Values<float>(field)
            : clr == typeof(bool) ? Values<bool>(field)
            : clr == typeof(DateTime) ? Values<DateTime>(field)
            : clr == typeof(DateTimeOffset) ? Values<DateTimeOffset>(field)
            : clr == typeof(Guid) ? Values<Guid>(field)
            : new StringColumn(field);

        static ParquetColumnReader Values<TValue>(DataField field)
            where TValue : struct => field.IsNullable ? new OptionalColumn<TValue>(field) : new RequiredColumn<TValue>(field);
    }

    /// <summary>Names a file column's CLR type for error messages (Parquet.Net reads text as <see cref="ReadOnlyMemory{T}"/> of char).</summary>
    public static string TypeName(Type clr) => IsText(clr) ? "String" : clr.Name;

    public abstract ValueTask ReadAsync(ParquetRowGroupReader group, int rows, CancellationToken cancellationToken);

    private static bool IsText(Type clr) => clr == typeof(string) || clr == typeof(ReadOnlyMemory<char>);

    public abstract bool IsNull(int row);

    public abstract string? Format(int row);

    public virtual int Int32(int row) => throw Mismatch("an integer");

    public virtual long Int64(int row) => throw Mismatch("a 64-bit integer");

    public virtual decimal Decimal(int row) => throw Mismatch("a decimal number");

    public virtual double Double(int row) => throw Mismatch("a number");

    public virtual bool Boolean(int row) => throw Mismatch("true or false");

    public virtual DateTime DateTime(int row) => throw Mismatch("a timestamp");

    public virtual string String(int row) => throw Mismatch("a string");

    public virtual Guid Guid(int row) => throw Mismatch("a GUID");

    protected EtlFieldException Null() => new($"Column '{Name}' is null.") { Column = Name };

    private EtlFieldException Mismatch(string expected) =>
        new($"Column '{Name}' holds {TypeName(dataField.ClrType)} values, not {expected}: the schema's create function reads it with the wrong method.") { Column = Name };
}

/// <summary>A column of value-typed fields; conversions are picked per value type when the JIT specializes the class, so nothing is boxed.</summary>
internal abstract class ValueColumn<TValue>(DataField field) : ParquetColumnReader(field)
    where TValue : struct
{
    public override string? Format(int row) => IsNull(row) ? null : Value(row) switch
    {
        DateTime time => time.ToString("O", CultureInfo.InvariantCulture),
        IFormattable formattable => formattable.ToString(null, CultureInfo.InvariantCulture),
        var other => other.ToString(),
    };

    public override int Int32(int row)
    {
        var v = Value(row);
        return v switch
        {
            int i => i,
            short s => s,
            byte b => b,
            sbyte sb => sb,
            ushort us => us,
            _ => base.Int32(row),
        };
    }

    public override long Int64(int row)
    {
        var v = Value(row);
        return v switch
        {
            long l => l,
            int i => i,
            uint ui => ui,
            short s => s,
            byte b => b,
            _ => base.Int64(row),
        };
    }

    public override decimal Decimal(int row)
    {
        var v = Value(row);
        return v switch
        {
            decimal d => d,
            int i => i,
            long l => l,
            _ => base.Decimal(row),
        };
    }

    public override double Double(int row)
    {
        var v = Value(row);
        return v switch
        {
            double d => d,
            float f => f,
            int i => i,
            long l => l,
            _ => base.Double(row),
        };
    }

    public override bool Boolean(int row) => Value(row) is bool b ? b : base.Boolean(row);

    public override DateTime DateTime(int row) => Value(row) switch
    {
        DateTime time => time.Kind == DateTimeKind.Local ? time.ToUniversalTime() : System.DateTime.SpecifyKind(time, DateTimeKind.Utc),
        DateTimeOffset offset => offset.UtcDateTime,
        _ => base.DateTime(row),
    };

    public override Guid Guid(int row) => Value(row) is Guid g ? g : base.Guid(row);

    protected abstract TValue Value(int row);
}

/// <summary>A column whose fields are never null.</summary>
internal sealed class RequiredColumn<TValue>(DataField field) : ValueColumn<TValue>(field)
    where TValue : struct
{
    private TValue[] _values = [];

    public override async ValueTask ReadAsync(ParquetRowGroupReader group, int rows, CancellationToken cancellationToken)
    {
        if (_values.Length < rows)
        {
            _values = new TValue[rows];
        }

        await group.ReadAsync<TValue>(Field, _values.AsMemory(0, rows), null, cancellationToken).ConfigureAwait(false);
    }

    public override bool IsNull(int row) => false;

    protected override TValue Value(int row) => _values[row];
}

/// <summary>A column whose fields may be null: reading a null one as a value fails the row (it is quarantined).</summary>
internal sealed class OptionalColumn<TValue>(DataField field) : ValueColumn<TValue>(field)
    where TValue : struct
{
    private TValue?[] _values = [];

    public override async ValueTask ReadAsync(ParquetRowGroupReader group, int rows, CancellationToken cancellationToken)
    {
        if (_values.Length < rows)
        {
            _values = new TValue?[rows];
        }

        await group.ReadAsync<TValue>(Field, _values.AsMemory(0, rows), null, cancellationToken).ConfigureAwait(false);
    }

    public override bool IsNull(int row) => _values[row] is null;

    protected override TValue Value(int row) => _values[row] ?? throw Null();
}

/// <summary>A column of UTF-8 strings.</summary>
internal sealed class StringColumn(DataField field) : ParquetColumnReader(field)
{
    private string?[] _values = [];

    public override async ValueTask ReadAsync(ParquetRowGroupReader group, int rows, CancellationToken cancellationToken)
    {
        if (_values.Length < rows)
        {
            _values = new string?[rows];
        }

        await group.ReadAsync(Field, _values.AsMemory(0, rows)!, null, cancellationToken).ConfigureAwait(false);
    }

    public override bool IsNull(int row) => _values[row] is null;

    public override string? Format(int row) => _values[row];

    public override string String(int row) => _values[row] ?? throw Null();
}
