using Npgsql;
using Patterns.Testing;

namespace Patterns.Postgres.Tests;

/// <summary>
/// The local PostgreSQL server the tests run against (env PATTERNS_POSTGRES). Reachability is checked once;
/// without a server every test skips with the reason. Each test works in its own schema, dropped afterwards.
/// </summary>
internal static class PostgresDatabase
{
    public const string DefaultConnectionString = "Host=127.0.0.1;Port=5432;Username=postgres;Password=postgres;Database=patterns_tests";

    public static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    private static readonly Lazy<Task<string?>> Unreachable = new(ProbeAsync);

    private static readonly Lazy<NpgsqlDataSource> Shared = new(() =>
    {
        // One bounded pool for every test in the run keeps the server well under max_connections.
        var builder = new NpgsqlConnectionStringBuilder(ConnectionString) { MaxPoolSize = 40 };
        return NpgsqlDataSource.Create(builder.ConnectionString);
    });

    public static string ConnectionString =>
        Environment.GetEnvironmentVariable("PATTERNS_POSTGRES") is { Length: > 0 } configured ? configured : DefaultConnectionString;

    /// <summary>Gets the shared data source, or skips the test when the server is not reachable.</summary>
    public static async Task<NpgsqlDataSource> RequireAsync()
    {
        if (await Unreachable.Value is { } error)
        {
            Assert.Skip($"PostgreSQL is not reachable at {Describe()}: {error}");
        }

        return Shared.Value;
    }

    /// <summary>A schema name no other test uses.</summary>
    public static string NewSchema() => "t_" + Guid.NewGuid().ToString("N");

    public static PostgresEventStoreOptions Options(string schema, TimeProvider? time = null) => new()
    {
        DataSource = Shared.Value,
        Schema = schema,
        TimeProvider = time,
    };

    public static async Task DropSchemaAsync(string schema)
    {
        await using var command = Shared.Value.CreateCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        await command.ExecuteNonQueryAsync();
    }

    public static async Task<T> ScalarAsync<T>(string sql)
    {
        await using var command = Shared.Value.CreateCommand(sql);
        return (T)(await command.ExecuteScalarAsync())!;
    }

    private static string Describe()
    {
        var builder = new NpgsqlConnectionStringBuilder(ConnectionString);
        return $"{builder.Host}:{builder.Port}/{builder.Database}";
    }

    private static async Task<string?> ProbeAsync()
    {
        try
        {
            // A server that is there answers at once unless the machine is overloaded (CI runs every test assembly at once on
            // two cores), and CI counts a skip as a failure: wait long before deciding it is not there. An absent server refuses
            // the connection at once anyway.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await using var connection = new NpgsqlConnection(ConnectionString);
            await connection.OpenAsync(timeout.Token);
            return null;
        }
        catch (Exception ex) when (ex is NpgsqlException or OperationCanceledException or ArgumentException or TimeoutException)
        {
            return ex.Message;
        }
    }
}

/// <summary>A test class whose every test gets a fresh store in its own schema, dropped when the test ends.</summary>
public abstract class PostgresTestBase : IAsyncLifetime
{
    private readonly List<PostgresEventStore> _stores = [];

    protected string SchemaName { get; } = PostgresDatabase.NewSchema();

    protected NpgsqlDataSource DataSource { get; private set; } = null!;

    public virtual async ValueTask InitializeAsync() => DataSource = await PostgresDatabase.RequireAsync();

    public virtual async ValueTask DisposeAsync()
    {
        foreach (var store in _stores)
        {
            await store.DisposeAsync();
        }

        if (DataSource is not null)
        {
            await PostgresDatabase.DropSchemaAsync(SchemaName);
        }

        GC.SuppressFinalize(this);
    }

    /// <summary>Creates a store on this test's schema; disposed when the test ends.</summary>
    protected PostgresEventStore CreateSut(Action<PostgresEventStoreOptions>? configure = null, TimeProvider? time = null)
    {
        var options = PostgresDatabase.Options(SchemaName, time);
        configure?.Invoke(options);
        var store = new PostgresEventStore(options);
        _stores.Add(store);
        return store;
    }

    /// <summary>Locks a stream's row from another connection, so an append to it waits until the transaction ends.</summary>
    protected async Task<RowLock> HoldStreamRowAsync(string streamId)
    {
        var connection = await DataSource.OpenConnectionAsync();
        var transaction = await connection.BeginTransactionAsync();
        await using var command = new NpgsqlCommand($"SELECT 1 FROM \"{SchemaName}\".streams WHERE stream_id = $1 FOR UPDATE", connection, transaction);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = streamId });
        (await command.ExecuteScalarAsync()).Should().Be(1);
        return new RowLock(connection, transaction);
    }

    /// <summary>A row lock held by a transaction on its own connection.</summary>
    protected sealed class RowLock(NpgsqlConnection connection, NpgsqlTransaction transaction) : IAsyncDisposable
    {
        /// <summary>Gets the server process that holds the lock.</summary>
        public int ProcessId => connection.ProcessID;

        public Task CommitAsync() => transaction.CommitAsync();

        /// <summary>Runs a statement in the lock's transaction.</summary>
        public async Task<int> ExecuteAsync(string sql)
        {
            await using var command = new NpgsqlCommand(sql, connection, transaction);
            return await command.ExecuteNonQueryAsync();
        }

        public async ValueTask DisposeAsync()
        {
            await transaction.DisposeAsync();
            await connection.DisposeAsync();
        }
    }
}
