namespace Patterns.Etl;

/// <summary>CSV sources and sinks, on the Sep parser.</summary>
public static class Csv
{
    /// <summary>Reads a CSV file with a header row into records of a type that carries its schema.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="path">The file.</param>
    /// <param name="options">Separator and parsing options.</param>
    /// <returns>The source: resumable (its bookmark is the data rows consumed), with rows that cannot be read quarantined with their line and raw text.</returns>
    public static EtlSource<T> Read<T>(string path, CsvReadOptions? options = null)
        where T : IEtlRecord<T> => Read(path, T.Schema, options);

    /// <summary>Reads a CSV file with a header row into records, through a schema: columns are matched by header name once, then each row is parsed field by field with no reflection.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="path">The file.</param>
    /// <param name="schema">The columns to read and how to make a record (its create function).</param>
    /// <param name="options">Separator and parsing options.</param>
    /// <returns>The source.</returns>
    public static EtlSource<T> Read<T>(string path, EtlSchema<T> schema, CsvReadOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(schema);
        return new CsvSource<T>(path, schema, schema.RequireCreate($"Csv.Read(\"{path}\")"), options ?? new CsvReadOptions());
    }

    /// <summary>Writes records to a CSV file with a header row. The file is written under a temporary name and renamed into place when the run completes, so it never holds a partial load.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="path">The file (replaced).</param>
    /// <param name="separator">The separator.</param>
    /// <returns>The sink.</returns>
    public static EtlSink<T> Write<T>(string path, char separator = ',')
        where T : IEtlRecord<T> => Write(path, T.Schema, separator);

    /// <summary>Writes records to a CSV file through a schema; see <see cref="Write{T}(string, char)"/>.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="path">The file (replaced).</param>
    /// <param name="schema">The columns to write.</param>
    /// <param name="separator">The separator.</param>
    /// <returns>The sink.</returns>
    public static EtlSink<T> Write<T>(string path, EtlSchema<T> schema, char separator = ',')
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(schema);
        return new CsvSink<T>(path, schema, separator);
    }
}

/// <summary>Options of a CSV source.</summary>
public sealed class CsvReadOptions
{
    /// <summary>Gets or sets the separator.</summary>
    /// <value>Default <c>,</c>.</value>
    public char Separator { get; set; } = ',';

    /// <summary>Gets or sets a value indicating whether repeated short strings are read into one shared instance (Sep's per-column string pool), which saves allocations on low-cardinality columns.</summary>
    /// <value>Default <see langword="true"/>.</value>
    public bool PoolStrings { get; set; } = true;

    /// <summary>Gets or sets a value indicating whether an empty field of a string column reads as <see langword="null"/> (through <see cref="EtlFieldReader.IsNull"/>).</summary>
    /// <value>Default <see langword="true"/>.</value>
    public bool EmptyIsNull { get; set; } = true;
}
