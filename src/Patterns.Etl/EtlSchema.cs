using System.Globalization;
using System.Text;

namespace Patterns.Etl;

/// <summary>The type of a column of an <see cref="EtlSchema{T}"/>: what sources parse and sinks write.</summary>
public enum EtlColumnType
{
    /// <summary>A 32-bit integer (<see cref="int"/>; SQL <c>integer</c>).</summary>
    Int32,

    /// <summary>A 64-bit integer (<see cref="long"/>; SQL <c>bigint</c>).</summary>
    Int64,

    /// <summary>A decimal number (<see cref="decimal"/>; SQL <c>numeric</c>).</summary>
    Decimal,

    /// <summary>A double-precision number (<see cref="double"/>; SQL <c>double precision</c>).</summary>
    Double,

    /// <summary>A boolean (<see cref="bool"/>).</summary>
    Boolean,

    /// <summary>A UTC timestamp (<see cref="DateTime"/> of kind UTC; SQL <c>timestamptz</c>).</summary>
    DateTime,

    /// <summary>A string, possibly <see langword="null"/> (SQL <c>text</c>).</summary>
    String,

    /// <summary>A <see cref="System.Guid"/> (SQL <c>uuid</c>).</summary>
    Guid,
}

/// <summary>
/// A record type that carries its own <see cref="EtlSchema{T}"/>, so sources and sinks can be written as
/// <c>Csv.Read&lt;Order&gt;(path)</c>. The schema is written once per type, by hand or by a generator; nothing reads
/// the type by reflection, so it is safe under trimming and native AOT.
/// </summary>
/// <typeparam name="TSelf">The record type.</typeparam>
public interface IEtlRecord<TSelf>
    where TSelf : IEtlRecord<TSelf>
{
    /// <summary>Gets the record's schema.</summary>
    static abstract EtlSchema<TSelf> Schema { get; }
}

/// <summary>Creates schemas.</summary>
public static class EtlSchema
{
    /// <summary>Starts a schema whose records are made by <paramref name="create"/> from the fields of a row, read by column ordinal.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="create">Makes a record: <c>r =&gt; new Order(r.Int32(0), r.String(1))</c>, where each ordinal is the position of the column in this schema (the order of the <c>Column</c> calls). <see langword="null"/> for a write-only schema.</param>
    /// <returns>The schema, to add columns to.</returns>
    public static EtlSchema<T> For<T>(Func<EtlFieldReader, T>? create = null) => new(create, []);
}

/// <summary>
/// The columns of a record type: their names, types and getters (for sinks), and how to make a record from a row's
/// fields (for sources). An explicit, compiled mapping: built once per type, with no reflection per row.
/// </summary>
/// <typeparam name="T">The record type.</typeparam>
/// <remarks>Immutable: each <c>Column</c> call returns a new schema.</remarks>
public sealed class EtlSchema<T>
{
    private readonly EtlColumn<T>[] _columns;

    internal EtlSchema(Func<EtlFieldReader, T>? create, EtlColumn<T>[] columns)
    {
        Create = create;
        _columns = columns;
    }

    /// <summary>Gets the columns, in order.</summary>
    public IReadOnlyList<EtlColumn<T>> Columns => _columns;

    /// <summary>Gets the function that makes a record from a row's fields, or <see langword="null"/> for a write-only schema.</summary>
    public Func<EtlFieldReader, T>? Create { get; }

    /// <summary>Adds an <see cref="int"/> column.</summary>
    /// <param name="name">The column's name (the CSV header, the SQL column).</param>
    /// <param name="get">Reads the value from a record.</param>
    /// <returns>The schema with the column.</returns>
    public EtlSchema<T> Column(string name, Func<T, int> get) => Add(name, EtlColumnType.Int32, get);

    /// <summary>Adds a <see cref="long"/> column.</summary>
    /// <param name="name">The column's name.</param>
    /// <param name="get">Reads the value from a record.</param>
    /// <returns>The schema with the column.</returns>
    public EtlSchema<T> Column(string name, Func<T, long> get) => Add(name, EtlColumnType.Int64, get);

    /// <summary>Adds a <see cref="decimal"/> column.</summary>
    /// <param name="name">The column's name.</param>
    /// <param name="get">Reads the value from a record.</param>
    /// <returns>The schema with the column.</returns>
    public EtlSchema<T> Column(string name, Func<T, decimal> get) => Add(name, EtlColumnType.Decimal, get);

    /// <summary>Adds a <see cref="double"/> column.</summary>
    /// <param name="name">The column's name.</param>
    /// <param name="get">Reads the value from a record.</param>
    /// <returns>The schema with the column.</returns>
    public EtlSchema<T> Column(string name, Func<T, double> get) => Add(name, EtlColumnType.Double, get);

    /// <summary>Adds a <see cref="bool"/> column.</summary>
    /// <param name="name">The column's name.</param>
    /// <param name="get">Reads the value from a record.</param>
    /// <returns>The schema with the column.</returns>
    public EtlSchema<T> Column(string name, Func<T, bool> get) => Add(name, EtlColumnType.Boolean, get);

    /// <summary>Adds a UTC <see cref="System.DateTime"/> column.</summary>
    /// <param name="name">The column's name.</param>
    /// <param name="get">Reads the value from a record; a value that is not of kind UTC is taken as UTC.</param>
    /// <returns>The schema with the column.</returns>
    public EtlSchema<T> Column(string name, Func<T, DateTime> get) => Add(name, EtlColumnType.DateTime, get);

    /// <summary>Adds a <see cref="string"/> column (which may hold <see langword="null"/>).</summary>
    /// <param name="name">The column's name.</param>
    /// <param name="get">Reads the value from a record.</param>
    /// <returns>The schema with the column.</returns>
    public EtlSchema<T> Column(string name, Func<T, string?> get) => Add(name, EtlColumnType.String, get);

    /// <summary>Adds a <see cref="System.Guid"/> column.</summary>
    /// <param name="name">The column's name.</param>
    /// <param name="get">Reads the value from a record.</param>
    /// <returns>The schema with the column.</returns>
    public EtlSchema<T> Column(string name, Func<T, Guid> get) => Add(name, EtlColumnType.Guid, get);

    /// <summary>Gets the ordinal of the column named <paramref name="name"/> (ordinal, case-insensitive).</summary>
    /// <param name="name">The column's name.</param>
    /// <returns>The ordinal.</returns>
    /// <exception cref="ArgumentException">The schema has no such column; the message lists the columns it has.</exception>
    public int Ordinal(string name)
    {
        for (var i = 0; i < _columns.Length; i++)
        {
            if (string.Equals(_columns[i].Name, name, StringComparison.OrdinalIgnoreCase))
            {
                return i;
            }
        }

        throw new ArgumentException($"The schema of {typeof(T).Name} has no column '{name}'; its columns are {string.Join(", ", _columns.Select(c => c.Name))}.", nameof(name));
    }

    /// <summary>Formats a record as one CSV line (for quarantine entries and the CSV sink's fallback).</summary>
    /// <param name="record">The record.</param>
    /// <returns>The line, without a line break.</returns>
    public string Format(T record)
    {
        var text = new StringBuilder();
        for (var i = 0; i < _columns.Length; i++)
        {
            if (i > 0)
            {
                text.Append(',');
            }

            var value = _columns[i].FormatValue(record);
            if (value is null)
            {
                continue;
            }

            if (value.AsSpan().IndexOfAny(",\"\r\n") >= 0)
            {
                text.Append('"').Append(value.Replace("\"", "\"\"", StringComparison.Ordinal)).Append('"');
            }
            else
            {
                text.Append(value);
            }
        }

        return text.ToString();
    }

    /// <summary>
    /// Estimates the managed memory a record's values take: 8 bytes for a number or a timestamp (4 for an
    /// <see cref="int"/>, 1 for a <see cref="bool"/>, 16 for a <see cref="decimal"/> or a <see cref="System.Guid"/>), and
    /// 24 bytes plus 2 per character for a string, plus 24 for the record itself. Used to bound batches in bytes
    /// (<see cref="EtlRunOptions.MaxBatchBytes"/>).
    /// </summary>
    /// <param name="record">The record.</param>
    /// <returns>The estimate in bytes.</returns>
    public long EstimateSize(T record)
    {
        long size = 24;
        foreach (var column in _columns)
        {
            size += column.SizeOf(record);
        }

        return size;
    }

    internal Func<EtlFieldReader, T> RequireCreate(string what) =>
        Create ?? throw new InvalidOperationException($"{what} reads {typeof(T).Name} records, but its schema has no create function: pass one to EtlSchema.For<{typeof(T).Name}>(r => ...).");

    private EtlSchema<T> Add<TValue>(string name, EtlColumnType type, Func<T, TValue> get)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(get);
        if (_columns.Any(c => string.Equals(c.Name, name, StringComparison.OrdinalIgnoreCase)))
        {
            throw new ArgumentException($"The schema of {typeof(T).Name} already has a column '{name}'.", nameof(name));
        }

        return new EtlSchema<T>(Create, [.. _columns, new EtlColumn<T, TValue>(name, type, _columns.Length, get)]);
    }
}

/// <summary>One column of an <see cref="EtlSchema{T}"/>.</summary>
/// <typeparam name="T">The record type.</typeparam>
public abstract class EtlColumn<T>
{
    private protected EtlColumn(string name, EtlColumnType type, int ordinal)
    {
        Name = name;
        Type = type;
        Ordinal = ordinal;
    }

    /// <summary>Gets the column's name.</summary>
    public string Name { get; }

    /// <summary>Gets the column's type.</summary>
    public EtlColumnType Type { get; }

    /// <summary>Gets the column's position in the schema.</summary>
    public int Ordinal { get; }

    /// <summary>Reads the value of this column from a record, boxed (for sinks that take objects, such as ADO.NET parameters).</summary>
    /// <param name="record">The record.</param>
    /// <returns>The value, or <see langword="null"/>.</returns>
    public abstract object? GetValue(T record);

    /// <summary>Formats the value of this column in a record as invariant text (the CSV form); <see langword="null"/> for a null value.</summary>
    /// <param name="record">The record.</param>
    /// <returns>The text.</returns>
    public abstract string? FormatValue(T record);

    /// <summary>Estimates the bytes this column's value takes in a record.</summary>
    internal abstract long SizeOf(T record);

    /// <summary>Gets the typed getter of this column.</summary>
    /// <typeparam name="TValue">The column's CLR type (for example <see cref="int"/> for <see cref="EtlColumnType.Int32"/>).</typeparam>
    /// <returns>The getter.</returns>
    /// <exception cref="InvalidOperationException">The column is of another type.</exception>
    public Func<T, TValue> Getter<TValue>() =>
        (this as EtlColumn<T, TValue>)?.Get ?? throw new InvalidOperationException($"Column '{Name}' is of type {Type}, not {typeof(TValue).Name}.");
}

/// <summary>A column with a typed getter.</summary>
internal sealed class EtlColumn<T, TValue>(string name, EtlColumnType type, int ordinal, Func<T, TValue> get) : EtlColumn<T>(name, type, ordinal)
{
    public Func<T, TValue> Get { get; } = get;

    private readonly long _fixedSize = type switch
    {
        EtlColumnType.Boolean => 1,
        EtlColumnType.Int32 => 4,
        EtlColumnType.Decimal or EtlColumnType.Guid => 16,
        _ => 8,
    };

    public override object? GetValue(T record) => Get(record);

    internal override long SizeOf(T record) => Get(record) switch
    {
        string text => 24 + (2L * text.Length),
        null => 0,
        _ => _fixedSize,
    };

    public override string? FormatValue(T record) => Get(record) switch
    {
        null => null,
        DateTime time => time.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture),
        bool flag => flag ? "true" : "false",
        IFormattable formattable => formattable.ToString(null, CultureInfo.InvariantCulture),
        var other => other.ToString(),
    };
}

/// <summary>
/// The fields of one source row, read by the ordinal of a column in the schema. A CSV source parses the text of the
/// field; a SQL source reads the data reader's column. Valid only inside the schema's create function.
/// </summary>
public abstract class EtlFieldReader
{
    /// <summary>Reads an <see cref="int"/>.</summary>
    /// <param name="ordinal">The column's position in the schema.</param>
    /// <returns>The value.</returns>
    public abstract int Int32(int ordinal);

    /// <summary>Reads a <see cref="long"/>.</summary>
    /// <param name="ordinal">The column's position in the schema.</param>
    /// <returns>The value.</returns>
    public abstract long Int64(int ordinal);

    /// <summary>Reads a <see cref="decimal"/>.</summary>
    /// <param name="ordinal">The column's position in the schema.</param>
    /// <returns>The value.</returns>
    public abstract decimal Decimal(int ordinal);

    /// <summary>Reads a <see cref="double"/>.</summary>
    /// <param name="ordinal">The column's position in the schema.</param>
    /// <returns>The value.</returns>
    public abstract double Double(int ordinal);

    /// <summary>Reads a <see cref="bool"/>.</summary>
    /// <param name="ordinal">The column's position in the schema.</param>
    /// <returns>The value.</returns>
    public abstract bool Boolean(int ordinal);

    /// <summary>Reads a UTC <see cref="System.DateTime"/>.</summary>
    /// <param name="ordinal">The column's position in the schema.</param>
    /// <returns>The value.</returns>
    public abstract DateTime DateTime(int ordinal);

    /// <summary>Reads a string; an empty CSV field or a SQL null reads as <see langword="null"/> only through <see cref="IsNull"/>.</summary>
    /// <param name="ordinal">The column's position in the schema.</param>
    /// <returns>The value.</returns>
    public abstract string String(int ordinal);

    /// <summary>Reads a <see cref="System.Guid"/>.</summary>
    /// <param name="ordinal">The column's position in the schema.</param>
    /// <returns>The value.</returns>
    public abstract Guid Guid(int ordinal);

    /// <summary>Gets a value indicating whether the field is null (SQL null, or an empty CSV field).</summary>
    /// <param name="ordinal">The column's position in the schema.</param>
    /// <returns><see langword="true"/> when null.</returns>
    public abstract bool IsNull(int ordinal);

    /// <summary>Reads a string, or <see langword="null"/> when the field is null.</summary>
    /// <param name="ordinal">The column's position in the schema.</param>
    /// <returns>The value.</returns>
    public string? NullableString(int ordinal) => IsNull(ordinal) ? null : String(ordinal);
}
