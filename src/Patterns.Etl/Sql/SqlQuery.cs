using System.Data.Common;
using System.Globalization;
using System.Runtime.CompilerServices;

namespace Patterns.Etl;

/// <summary>Sources over any ADO.NET provider: a query streamed from its data reader (the SQLite and PostgreSQL packages wrap these).</summary>
public static class SqlQuery
{
    /// <summary>
    /// A SQL query streamed row by row from the data reader (never buffered). With a <paramref name="watermark"/> column the
    /// source is incremental: the query receives the bookmark's watermark as the <c>@watermark</c> parameter and must
    /// return rows in ascending watermark order (<c>WHERE id &gt; @watermark ORDER BY id</c>); the bookmark committed with
    /// each batch is the watermark of its last row.
    /// </summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="name">The source's name (for logs and quarantine).</param>
    /// <param name="connect">Opens a connection (the source disposes it).</param>
    /// <param name="sql">The query; its columns are matched to the schema by name.</param>
    /// <param name="schema">The columns and the create function.</param>
    /// <param name="watermark">The watermark column (a schema column of type Int32, Int64, DateTime or String), or <see langword="null"/>.</param>
    /// <param name="initialWatermark">The <c>@watermark</c> value of the first run.</param>
    /// <returns>The source.</returns>
    public static EtlSource<T> Read<T>(string name, Func<CancellationToken, ValueTask<DbConnection>> connect, string sql, EtlSchema<T> schema, string? watermark = null, object? initialWatermark = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(connect);
        ArgumentException.ThrowIfNullOrWhiteSpace(sql);
        ArgumentNullException.ThrowIfNull(schema);
        var create = schema.RequireCreate($"The query source '{name}'");
        var watermarkOrdinal = watermark is null ? -1 : schema.Ordinal(watermark);
        if (watermark is not null && !sql.Contains("@watermark", StringComparison.OrdinalIgnoreCase))
        {
            throw new ArgumentException($"The query of source '{name}' has a watermark column '{watermark}' but no @watermark parameter: write it as ... WHERE {watermark} > @watermark ORDER BY {watermark}.", nameof(sql));
        }

        return new SqlQuerySource<T>(name, connect, sql, schema, create, watermarkOrdinal, initialWatermark);
    }
}

internal sealed class SqlQuerySource<T>(
    string name,
    Func<CancellationToken, ValueTask<DbConnection>> connect,
    string sql,
    EtlSchema<T> schema,
    Func<EtlFieldReader, T> create,
    int watermarkOrdinal,
    object? initialWatermark) : EtlSource<T>
{
    public override string Name => name;

    public override bool CanResume => watermarkOrdinal >= 0;

    public override bool Incremental => watermarkOrdinal >= 0;

    public override async IAsyncEnumerable<T> ReadAsync(EtlSourceContext context, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var connection = await connect(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var command = connection.CreateCommand();
        await using var __ = command.ConfigureAwait(false);
        command.CommandText = sql;
        if (watermarkOrdinal >= 0)
        {
            var parameter = command.CreateParameter();
            parameter.ParameterName = "watermark";
            parameter.Value = context.Resume.Watermark is { } saved ? Parse(saved, schema.Columns[watermarkOrdinal].Type) : initialWatermark ?? DBNull.Value;
            command.Parameters.Add(parameter);
        }

        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using var ___ = reader.ConfigureAwait(false);
        var fields = new DataReaderFieldReader(reader, Map(reader));
        var offset = context.Resume.Offset;
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            context.Offset = ++offset;
            context.Line = offset;
            T record;
            string? error = null;
            try
            {
                record = create(fields);
            }
            catch (Exception ex) when (ex is FormatException or InvalidCastException or OverflowException or InvalidOperationException)
            {
                record = default!;
                error = QuarantineText.Describe(ex);
            }

            if (error is not null)
            {
                context.Quarantine(null, null, error);
                continue;
            }

            if (watermarkOrdinal >= 0)
            {
                context.Watermark = schema.Columns[watermarkOrdinal].GetValue(record);
            }

            yield return record;
        }
    }

    private static object Parse(string text, EtlColumnType type) => type switch
    {
        EtlColumnType.Int32 => int.Parse(text, CultureInfo.InvariantCulture),
        EtlColumnType.Int64 => long.Parse(text, CultureInfo.InvariantCulture),
        EtlColumnType.DateTime => DateTime.Parse(text, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal),
        EtlColumnType.Decimal => decimal.Parse(text, CultureInfo.InvariantCulture),
        _ => text,
    };

    private int[] Map(DbDataReader reader)
    {
        var map = new int[schema.Columns.Count];
        for (var i = 0; i < map.Length; i++)
        {
            try
            {
                map[i] = reader.GetOrdinal(schema.Columns[i].Name);
            }
            catch (IndexOutOfRangeException)
            {
                throw new InvalidDataException($"The query of source '{name}' returns no column '{schema.Columns[i].Name}'.");
            }
        }

        return map;
    }
}

/// <summary>The fields of the current data-reader row, by schema ordinal.</summary>
internal sealed class DataReaderFieldReader(DbDataReader reader, int[] map) : EtlFieldReader
{
    public override int Int32(int ordinal) => reader.GetInt32(map[ordinal]);

    public override long Int64(int ordinal) => reader.GetInt64(map[ordinal]);

    public override decimal Decimal(int ordinal) => reader.GetDecimal(map[ordinal]);

    public override double Double(int ordinal) => reader.GetDouble(map[ordinal]);

    public override bool Boolean(int ordinal) => reader.GetBoolean(map[ordinal]);

    public override DateTime DateTime(int ordinal) => System.DateTime.SpecifyKind(reader.GetDateTime(map[ordinal]), DateTimeKind.Utc);

    public override string String(int ordinal) => reader.GetString(map[ordinal]);

    public override Guid Guid(int ordinal) => reader.GetGuid(map[ordinal]);

    public override bool IsNull(int ordinal) => reader.IsDBNull(map[ordinal]);
}
