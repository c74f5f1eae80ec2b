using Npgsql;
using Patterns.EventSourcing;
using Patterns.Messaging;

namespace Patterns.Benchmarks;

/// <summary>The durable stores the store benchmarks run against.</summary>
public enum StoreKind
{
    /// <summary><c>Patterns.Sqlite</c>: a database file in a fresh temporary directory (WAL, <c>synchronous=FULL</c>).</summary>
    Sqlite,

    /// <summary><c>Patterns.Postgres</c>: the server from PATTERNS_POSTGRES, in a schema of its own dropped at the end.</summary>
    Postgres,
}

/// <summary>
/// One benchmark's own database: a SQLite file in a new temporary directory, or a new schema on the PostgreSQL server named
/// by PATTERNS_POSTGRES (default: the local test database). <see cref="DropAsync"/> deletes it.
/// </summary>
internal sealed class BenchmarkDatabase
{
    private const string DefaultPostgres = "Host=127.0.0.1;Port=5432;Username=postgres;Password=postgres;Database=patterns_tests";

    private readonly string? _directory;
    private readonly string? _connectionString;
    private readonly string? _schema;

    private BenchmarkDatabase(StoreKind kind, string? directory, string? connectionString, string? schema)
    {
        Kind = kind;
        _directory = directory;
        _connectionString = connectionString;
        _schema = schema;
    }

    public StoreKind Kind { get; }

    public static BenchmarkDatabase Create(StoreKind kind)
    {
        if (kind == StoreKind.Sqlite)
        {
            var directory = Path.Combine(Path.GetTempPath(), "patterns-store-bench", Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(directory);
            return new BenchmarkDatabase(kind, directory, null, null);
        }

        var connectionString = Environment.GetEnvironmentVariable("PATTERNS_POSTGRES") is { Length: > 0 } configured ? configured : DefaultPostgres;
        return new BenchmarkDatabase(kind, null, connectionString, "bench_" + Guid.NewGuid().ToString("N")[..12]);
    }

    /// <summary>Chooses this database as the event-sourcing store (and so the outbox's store).</summary>
    public EventSourcingBuilder Use(EventSourcingBuilder es) => Kind == StoreKind.Sqlite
        ? es.UseSqlite(Path.Combine(_directory!, "store.db"))
        : es.UsePostgres(_connectionString!, o => o.Schema = _schema!);

    /// <summary>Deletes the SQLite directory or drops the PostgreSQL schema; call after the container is disposed.</summary>
    public async Task DropAsync()
    {
        if (_directory is not null && Directory.Exists(_directory))
        {
            Directory.Delete(_directory, recursive: true);
        }

        if (_schema is not null)
        {
            await using var dataSource = NpgsqlDataSource.Create(_connectionString!);
            await using var drop = dataSource.CreateCommand($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE");
            await drop.ExecuteNonQueryAsync();
        }
    }
}

/// <summary>The event the store benchmarks append: a deposit to an account.</summary>
[MessageName("bench.account-deposited")]
public sealed record AccountDeposited(int Account, long Amount);

/// <summary>The message the outbox benchmarks publish after the append.</summary>
[MessageName("bench.deposit-recorded")]
public sealed record DepositRecorded(int Account, long Amount);

/// <summary>The read model the projection benchmarks fold deposits into: one document per account.</summary>
public sealed record AccountBalance(int Account, long Total, int Deposits)
{
    /// <summary>The fold both projection benchmarks use.</summary>
    public static AccountBalance Apply(AccountBalance? current, AccountDeposited deposited) => current is null
        ? new AccountBalance(deposited.Account, deposited.Amount, 1)
        : current with { Total = current.Total + deposited.Amount, Deposits = current.Deposits + 1 };
}
