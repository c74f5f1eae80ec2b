using Parquet;

namespace Patterns.Etl;

/// <summary>
/// Parquet files as sources and sinks, on Parquet.Net's typed column API. Columns are matched to the record's
/// <see cref="EtlSchema{T}"/> by name; nothing reads the record type by reflection.
/// </summary>
public static class ParquetFiles
{
    /// <summary>Reads a Parquet file into records of a type that carries its schema.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="path">The file.</param>
    /// <param name="options">Read options.</param>
    /// <returns>The source: resumable (its bookmark is the rows consumed; whole row groups before it are skipped unread), one row group in memory at a time.</returns>
    public static EtlSource<T> Read<T>(string path, ParquetReadOptions? options = null)
        where T : IEtlRecord<T> => Read(path, T.Schema, options);

    /// <summary>Reads a Parquet file into records through a schema: its columns are found by name once, then each row group is read column by column and each row made by the schema's create function.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="path">The file.</param>
    /// <param name="schema">The columns to read and how to make a record (its create function).</param>
    /// <param name="options">Read options.</param>
    /// <returns>The source.</returns>
    public static EtlSource<T> Read<T>(string path, EtlSchema<T> schema, ParquetReadOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(schema);
        options ??= new ParquetReadOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxRowGroupRows, 1, nameof(options));
        return new ParquetSource<T>(path, schema, schema.RequireCreate($"ParquetFiles.Read(\"{path}\")"), options);
    }

    /// <summary>
    /// Writes records to a Parquet file, one row group per batch. The file is written under a temporary name and renamed
    /// into place when the run completes, so it never holds a partial load.
    /// </summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="path">The file (replaced).</param>
    /// <param name="options">Row group size, compression, decimal precision.</param>
    /// <returns>The sink.</returns>
    public static EtlSink<T> Write<T>(string path, ParquetWriteOptions? options = null)
        where T : IEtlRecord<T> => Write(path, T.Schema, options);

    /// <summary>Writes records to a Parquet file through a schema; see <see cref="Write{T}(string, ParquetWriteOptions?)"/>.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="path">The file (replaced).</param>
    /// <param name="schema">The columns to write.</param>
    /// <param name="options">Row group size, compression, decimal precision.</param>
    /// <returns>The sink.</returns>
    public static EtlSink<T> Write<T>(string path, EtlSchema<T> schema, ParquetWriteOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(schema);
        options ??= new ParquetWriteOptions();
        if (options.Validate() is { Count: > 0 } errors)
        {
            throw new ArgumentException(string.Join(Environment.NewLine, errors), nameof(options));
        }

        if (schema.Columns.Count == 0)
        {
            throw new ArgumentException($"The schema of {typeof(T).Name} has no columns: a Parquet file needs at least one.", nameof(schema));
        }

        return new ParquetSink<T>(path, schema, options);
    }
}

/// <summary>Options of a Parquet source.</summary>
public sealed class ParquetReadOptions
{
    /// <summary>
    /// Gets or sets the most rows a row group may have. A row group is read whole (one array per column), so this bounds
    /// the source's memory; a file with a larger row group fails the run with an error naming the file and the group.
    /// </summary>
    /// <value>Default 4,194,304.</value>
    public int MaxRowGroupRows { get; set; } = 4_194_304;
}

/// <summary>Options of a Parquet sink.</summary>
public sealed class ParquetWriteOptions
{
    /// <summary>Gets or sets the rows per row group: the sink's preferred batch size (a run's <see cref="EtlRunOptions.BatchSize"/> overrides it), each batch being one row group.</summary>
    /// <value>Default 65,536.</value>
    public int RowGroupRows { get; set; } = 65_536;

    /// <summary>Gets or sets the compression of the column chunks.</summary>
    /// <value>Default <see cref="CompressionMethod.Snappy"/>.</value>
    public CompressionMethod Compression { get; set; } = CompressionMethod.Snappy;

    /// <summary>Gets or sets the precision of decimal columns (total digits, at most 38).</summary>
    /// <value>Default 38.</value>
    public int DecimalPrecision { get; set; } = 38;

    /// <summary>Gets or sets the scale of decimal columns (digits after the point); values with more are rounded by Parquet.Net.</summary>
    /// <value>Default 18.</value>
    public int DecimalScale { get; set; } = 18;

    internal List<string> Validate()
    {
        var errors = new List<string>();
        if (RowGroupRows is < 1 or > 1_000_000)
        {
            errors.Add($"ParquetWriteOptions.RowGroupRows must be between 1 and 1,000,000 (was {RowGroupRows}).");
        }

        if (DecimalPrecision is < 1 or > 38)
        {
            errors.Add($"ParquetWriteOptions.DecimalPrecision must be between 1 and 38 (was {DecimalPrecision}).");
        }

        if (DecimalScale < 0 || DecimalScale > DecimalPrecision)
        {
            errors.Add($"ParquetWriteOptions.DecimalScale must be between 0 and the precision {DecimalPrecision} (was {DecimalScale}).");
        }

        return errors;
    }
}
