using Npgsql;

namespace Patterns.Etl;

/// <summary>ETL sources and sinks on PostgreSQL.</summary>
public static class Postgres
{
    /// <summary>Appends rows to a table through binary COPY, one transaction per batch (with its bookmark).</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="connectionString">The database.</param>
    /// <param name="table">The table (<c>schema.table</c> or <c>table</c>); created from the schema when missing.</param>
    /// <returns>The sink.</returns>
    public static EtlSink<T> Append<T>(string connectionString, string table)
        where T : IEtlRecord<T> => Load(new PostgresSinkOptions<T> { ConnectionString = connectionString, Table = table, Schema = T.Schema, Mode = EtlLoadMode.Append });

    /// <summary>
    /// Merges rows into a table on a key: each batch is copied (binary COPY) into a staging table, then
    /// <c>INSERT … ON CONFLICT DO UPDATE</c> inserts new keys and updates existing keys whose values differ; rows that are
    /// equal are not touched. Updates are real UPDATEs, so identities and foreign keys survive.
    /// </summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="connectionString">The database.</param>
    /// <param name="table">The table; created from the schema (with the key as primary key) when missing. An existing table needs a unique index on the key.</param>
    /// <param name="key">The key column(s) of the schema.</param>
    /// <returns>The sink.</returns>
    public static EtlSink<T> Merge<T>(string connectionString, string table, params string[] key)
        where T : IEtlRecord<T> => Load(new PostgresSinkOptions<T> { ConnectionString = connectionString, Table = table, Schema = T.Schema, Mode = EtlLoadMode.Merge, Key = key });

    /// <summary>Merges rows on a key, then deletes the rows whose keys the source did not have (the keys seen are kept in a table, committed with each batch, so a resumed run still knows them).</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="connectionString">The database.</param>
    /// <param name="table">The table.</param>
    /// <param name="key">The key column(s) of the schema.</param>
    /// <returns>The sink.</returns>
    public static EtlSink<T> Full<T>(string connectionString, string table, params string[] key)
        where T : IEtlRecord<T> => Load(new PostgresSinkOptions<T> { ConnectionString = connectionString, Table = table, Schema = T.Schema, Mode = EtlLoadMode.Full, Key = key });

    /// <summary>Merges rows into a table on a key given as a lambda (<c>o =&gt; o.Id</c>, or <c>o =&gt; new { o.Region, o.Id }</c>): each property names the schema column of the same name (in any case, underscores ignored); see <see cref="Merge{T}(string, string, string[])"/>.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="connectionString">The database.</param>
    /// <param name="table">The table.</param>
    /// <param name="key">The key's properties.</param>
    /// <returns>The sink.</returns>
    /// <exception cref="ArgumentException">A property matches no column, or several.</exception>
    public static EtlSink<T> Merge<T>(string connectionString, string table, System.Linq.Expressions.Expression<Func<T, object?>> key)
        where T : IEtlRecord<T> => Merge<T>(connectionString, table, EtlKey.Columns(T.Schema, key));

    /// <summary>Merges rows on a key given as a lambda, then deletes the rows whose keys the source did not have; see <see cref="Full{T}(string, string, string[])"/>.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="connectionString">The database.</param>
    /// <param name="table">The table.</param>
    /// <param name="key">The key's properties.</param>
    /// <returns>The sink.</returns>
    /// <exception cref="ArgumentException">A property matches no column, or several.</exception>
    public static EtlSink<T> Full<T>(string connectionString, string table, System.Linq.Expressions.Expression<Func<T, object?>> key)
        where T : IEtlRecord<T> => Full<T>(connectionString, table, EtlKey.Columns(T.Schema, key));

    /// <summary>
    /// Merges rows on a key given as a lambda, where some rows are delete markers: for a row on which
    /// <paramref name="deleted"/> is true, the target row with its key is deleted (its other values are ignored); the
    /// others are merged as by <see cref="Merge{T}(string, string, string[])"/>. Deletes, inserts and updates of a batch
    /// are set-wise statements in the batch's transaction, with its bookmark; the last row of a key in a batch wins.
    /// </summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="connectionString">The database.</param>
    /// <param name="table">The table.</param>
    /// <param name="key">The key's properties.</param>
    /// <param name="deleted">Whether a row marks a delete (for example <c>o =&gt; o.Op == 'D'</c>).</param>
    /// <returns>The sink.</returns>
    /// <exception cref="ArgumentException">A property matches no column, or several.</exception>
    public static EtlSink<T> Merge<T>(string connectionString, string table, System.Linq.Expressions.Expression<Func<T, object?>> key, Func<T, bool> deleted)
        where T : IEtlRecord<T> =>
        Load(new PostgresSinkOptions<T> { ConnectionString = connectionString, Table = table, Schema = T.Schema, Mode = EtlLoadMode.Merge, Key = EtlKey.Columns(T.Schema, key), Deleted = deleted });

    /// <summary>A sink with every option.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="options">The options.</param>
    /// <returns>The sink.</returns>
    /// <exception cref="ArgumentException">The options are invalid; the message lists every problem.</exception>
    public static EtlSink<T> Load<T>(PostgresSinkOptions<T> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        return errors.Count == 0 ? new PostgresSink<T>(options) : throw new ArgumentException(string.Join(Environment.NewLine, errors), nameof(options));
    }

    /// <summary>A query streamed from PostgreSQL; incremental with a watermark column (see <see cref="SqlQuery.Read{T}"/>).</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="dataSource">The database.</param>
    /// <param name="sql">The query.</param>
    /// <param name="schema">The columns and the create function.</param>
    /// <param name="watermark">The watermark column, or <see langword="null"/>.</param>
    /// <param name="initialWatermark">The watermark of the first run.</param>
    /// <returns>The source.</returns>
    public static EtlSource<T> Query<T>(NpgsqlDataSource dataSource, string sql, EtlSchema<T> schema, string? watermark = null, object? initialWatermark = null)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        return SqlQuery.Read(
            "postgres:" + new NpgsqlConnectionStringBuilder(dataSource.ConnectionString).Database,
            async ct => await dataSource.OpenConnectionAsync(ct).ConfigureAwait(false),
            sql,
            schema,
            watermark,
            initialWatermark);
    }
}

/// <summary>Options of a PostgreSQL sink.</summary>
/// <typeparam name="T">The record type.</typeparam>
public sealed class PostgresSinkOptions<T>
{
    /// <summary>Gets or sets the database's connection string (used when <see cref="DataSource"/> is not set).</summary>
    public string? ConnectionString { get; set; }

    /// <summary>Gets or sets the data source; takes precedence over <see cref="ConnectionString"/>.</summary>
    public NpgsqlDataSource? DataSource { get; set; }

    /// <summary>Gets or sets the target table: <c>schema.table</c> or <c>table</c>. The bookmark and quarantine tables go in the same schema.</summary>
    public string Table { get; set; } = string.Empty;

    /// <summary>Gets or sets the columns written.</summary>
    public EtlSchema<T>? Schema { get; set; }

    /// <summary>Gets or sets the load mode.</summary>
    /// <value>Default <see cref="EtlLoadMode.Append"/>.</value>
    public EtlLoadMode Mode { get; set; } = EtlLoadMode.Append;

    /// <summary>Gets or sets the key columns (merge and full modes).</summary>
    public IReadOnlyList<string> Key { get; set; } = [];

    /// <summary>
    /// Gets or sets which rows are delete markers (merge and full modes): the target row with a marker's key is deleted,
    /// and the marker's other values are ignored. The deletes are counted in <see cref="EtlRunResult.RowsDeleted"/>.
    /// </summary>
    /// <value>Default <see langword="null"/>: no row is a delete marker.</value>
    public Func<T, bool>? Deleted { get; set; }

    /// <summary>Gets or sets a value indicating whether the target table is created from the schema when it does not exist.</summary>
    /// <value>Default <see langword="true"/>.</value>
    public bool CreateTable { get; set; } = true;

    /// <summary>Gets or sets the rows per batch (one COPY and one transaction each).</summary>
    /// <value>Default 50,000.</value>
    public int BatchSize { get; set; } = 50_000;

    /// <summary>
    /// Gets or sets how long the ids of messages loaded from a queue or subscription are kept (in the table
    /// <see cref="EtlConsumedRecord.Table"/>, in the target table's schema, written with each batch) so that a message
    /// delivered again is skipped; see <see cref="EtlConsumedRecord"/>. <see cref="Timeout.InfiniteTimeSpan"/> keeps them.
    /// </summary>
    /// <value>Default 7 days.</value>
    public TimeSpan ConsumedRetention { get; set; } = EtlConsumedRecord.DefaultRetention;

    internal List<string> Validate()
    {
        var errors = new List<string>();
        if (DataSource is null && string.IsNullOrWhiteSpace(ConnectionString))
        {
            errors.Add("PostgresSinkOptions needs a DataSource or a ConnectionString.");
        }

        EtlSinkValidation.Validate(errors, "PostgresSinkOptions", Table, Schema, Mode, Key, BatchSize, Deleted is not null);
        EtlConsumedRecord.Validate(errors, "PostgresSinkOptions", ConsumedRetention);

        return errors;
    }
}
