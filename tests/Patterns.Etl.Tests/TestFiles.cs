using Microsoft.Data.Sqlite;
using Npgsql;
using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

/// <summary>A temporary folder per test, deleted afterwards.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "patterns-etl-" + Guid.NewGuid().ToString("N"));

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public string Sqlite(string name = "target.db") => $"Data Source={File(name)};Pooling=False";

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

internal static class Db
{
    public static List<Order> ReadSqlite(string connectionString, string table = "orders")
    {
        using var connection = new SqliteConnection(connectionString);
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = $"SELECT id, customer_id, amount, placed_at, status, region, product, channel, note, email FROM \"{table}\" ORDER BY id";
        using var reader = command.ExecuteReader();
        var rows = new List<Order>();
        while (reader.Read())
        {
            rows.Add(new Order(reader.GetInt32(0), reader.GetInt64(1), reader.GetDecimal(2), DateTime.SpecifyKind(reader.GetDateTime(3), DateTimeKind.Utc), reader.GetString(4), reader.GetString(5), reader.GetString(6), reader.GetString(7), reader.IsDBNull(8) ? null : reader.GetString(8), reader.GetString(9)));
        }

        return rows;
    }

    public static long ScalarSqlite(string connectionString, string sql)
    {
        using var connection = new SqliteConnection(connectionString);
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
    }

    public static async Task<List<Order>> ReadPostgresAsync(NpgsqlDataSource source, string table)
    {
        await using var command = source.CreateCommand($"SELECT id, customer_id, amount, placed_at, status, region, product, channel, note, email FROM {table} ORDER BY id");
        await using var reader = await command.ExecuteReaderAsync();
        var rows = new List<Order>();
        while (await reader.ReadAsync())
        {
            rows.Add(new Order(reader.GetInt32(0), reader.GetInt64(1), reader.GetDecimal(2), reader.GetDateTime(3), reader.GetString(4), reader.GetString(5), reader.GetString(6), reader.GetString(7), reader.IsDBNull(8) ? null : reader.GetString(8), reader.GetString(9)));
        }

        return rows;
    }

    /// <summary>The orders of a CSV file, read through the pipeline into memory.</summary>
    public static async Task<List<Order>> ReadCsvAsync(string csv)
    {
        var sink = new ListSink<Order>();
        await Etl.From(Csv.Read<Order>(csv)).To(sink).RunAsync();
        return sink.Rows;
    }
}

/// <summary>A sink that keeps rows in memory (for tests): not bookmarking.</summary>
public sealed class ListSink<T> : EtlSink<T>
{
    public List<T> Rows { get; } = [];

    public override string Name => "list";

    public override ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken)
    {
        Rows.Clear();
        return new(new Writer(Rows));
    }

    private sealed class Writer(List<T> rows) : EtlSinkWriter<T>
    {
        public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> batch, EtlCommit commit, CancellationToken cancellationToken)
        {
            lock (rows)
            {
                rows.AddRange(batch.Span);
            }

            return new(new EtlLoadCounts(batch.Length, 0, 0));
        }

        public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => new(default(EtlLoadCounts));
    }
}

/// <summary>The local PostgreSQL server (env PATTERNS_POSTGRES); tests skip with the reason when it is not reachable.</summary>
internal static class Pg
{
    private static readonly Lazy<Task<string?>> Unreachable = new(async () =>
    {
        try
        {
            await using var command = Shared!.Value.CreateCommand("SELECT 1");
            await command.ExecuteScalarAsync();
            return null;
        }
        catch (Exception ex) when (ex is NpgsqlException or System.Net.Sockets.SocketException or TimeoutException)
        {
            return ex.Message;
        }
    });

    private static readonly Lazy<NpgsqlDataSource> Shared = new(() => NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(ConnectionString) { MaxPoolSize = 20 }.ConnectionString));

    public static string ConnectionString =>
        Environment.GetEnvironmentVariable("PATTERNS_POSTGRES") is { Length: > 0 } configured ? configured : "Host=127.0.0.1;Port=5432;Username=postgres;Password=postgres;Database=patterns_tests";

    public static async Task<NpgsqlDataSource> RequireAsync()
    {
        if (await Unreachable.Value is { } error)
        {
            Assert.Skip($"PostgreSQL is not reachable (PATTERNS_POSTGRES): {error}");
        }

        return Shared.Value;
    }

    public static async Task<string> NewSchemaAsync()
    {
        var schema = "etl_" + Guid.NewGuid().ToString("N")[..16];
        await using var command = Shared.Value.CreateCommand($"CREATE SCHEMA {schema}");
        await command.ExecuteNonQueryAsync();
        return schema;
    }

    public static async Task DropSchemaAsync(string schema)
    {
        await using var command = Shared.Value.CreateCommand($"DROP SCHEMA IF EXISTS {schema} CASCADE");
        await command.ExecuteNonQueryAsync();
    }

    public static async Task<long> ScalarAsync(string sql)
    {
        await using var command = Shared.Value.CreateCommand(sql);
        return Convert.ToInt64(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
    }
}

/// <summary>PostgreSQL schemas made for one test class, dropped when it is disposed.</summary>
internal sealed class PgSchemas : IAsyncDisposable
{
    private readonly List<string> _schemas = [];

    public async Task<string> NewAsync()
    {
        var schema = await Pg.NewSchemaAsync();
        _schemas.Add(schema);
        return schema;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var schema in _schemas)
        {
            await Pg.DropSchemaAsync(schema);
        }
    }
}
