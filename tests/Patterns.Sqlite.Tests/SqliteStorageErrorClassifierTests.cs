using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.EventSourcing;
using Patterns.Storage;

namespace Patterns.Sqlite.Tests;

public sealed class SqliteStorageErrorClassifierTests : IAsyncLifetime
{
    private readonly TempDatabase _db = new();

    public ValueTask InitializeAsync() => default;

    public ValueTask DisposeAsync() => _db.DisposeAsync();

    [Fact]
    public void AFileAnotherConnectionHoldsExclusively_IsBusy_Transient()
    {
        // A real SQLITE_BUSY: another connection holds an exclusive lock on the file, and the reader waits 1 s for it.
        var connectionString = $"Data Source={_db.File("locked.db")};Pooling=False;Default Timeout=1";
        using var locker = new SqliteConnection(connectionString);
        locker.Open();
        Execute(locker, "CREATE TABLE t (id INTEGER PRIMARY KEY); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);");
        using var reader = new SqliteConnection(connectionString);
        reader.Open();

        var busy = Catch(() => Execute(reader, "SELECT count(*) FROM t"));

        busy.SqliteErrorCode.Should().Be(5, "SQLITE_BUSY");
        SqliteStorageErrorClassifier.Instance.Classify(busy).Should().Be(StorageErrorKind.Transient);
        StorageErrors.IsRetryable(busy, SqliteStorageErrorClassifier.Instance).Should().BeTrue();
        StorageErrors.IsRetryable(busy).Should().BeFalse("Microsoft.Data.Sqlite does not report busy as IsTransient: only the classifier knows");
    }

    [Fact]
    public void AFileThatCannotBeOpened_IsCantOpen_Transient()
    {
        var missing = Path.Combine(_db.Directory, "no-such-folder", "x.db");
        using var connection = new SqliteConnection($"Data Source={missing};Pooling=False");

        var cantOpen = Catch(connection.Open);

        cantOpen.SqliteErrorCode.Should().Be(14, "SQLITE_CANTOPEN");
        SqliteStorageErrorClassifier.Instance.Classify(cantOpen).Should().Be(StorageErrorKind.Transient);
    }

    [Fact]
    public void ExtendedCodes_CountAsTheirPrimaryCode_OtherCodesAndOtherErrors_AreLeftToTheKernel()
    {
        SqliteStorageErrorClassifier.Instance.Classify(new SqliteException("busy recovery", 5, 5 | (1 << 8))).Should().Be(StorageErrorKind.Transient);
        SqliteStorageErrorClassifier.Instance.Classify(new SqliteException("locked shared cache", 6, 6 | (1 << 8))).Should().Be(StorageErrorKind.Transient);
        SqliteStorageErrorClassifier.Instance.Classify(new SqliteException("io error read", 10, 10 | (1 << 8))).Should().Be(StorageErrorKind.Transient);
        SqliteStorageErrorClassifier.Instance.Classify(new SqliteException("disk full", 13)).Should().Be(StorageErrorKind.Transient);
        SqliteStorageErrorClassifier.Instance.Classify(new SqliteException("out of memory", 7)).Should().Be(StorageErrorKind.Transient);
        SqliteStorageErrorClassifier.Instance.Classify(new SqliteException("lock protocol", 15)).Should().Be(StorageErrorKind.Transient);
        SqliteStorageErrorClassifier.Instance.Classify(new SqliteException("corrupt", 11)).Should().BeNull();
        SqliteStorageErrorClassifier.Instance.Classify(new TimeoutException()).Should().BeNull();
        StorageErrors.Classify(new SqliteException("corrupt", 11), SqliteStorageErrorClassifier.Instance).Should().Be(StorageErrorKind.Permanent);
    }

    [Fact]
    public void AConstraintViolation_FromTheDriver_IsPermanent()
    {
        using var connection = new SqliteConnection($"Data Source={_db.File("constraint.db")};Pooling=False");
        connection.Open();
        Execute(connection, "CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);");

        var duplicate = Catch(() => Execute(connection, "INSERT INTO t VALUES (1)"));

        duplicate.SqliteErrorCode.Should().Be(19, "SQLITE_CONSTRAINT");
        SqliteStorageErrorClassifier.Instance.Classify(duplicate).Should().BeNull();
        StorageErrors.Classify(duplicate, SqliteStorageErrorClassifier.Instance).Should().Be(StorageErrorKind.Permanent);
    }

    [Fact]
    public async Task UseSqlite_RegistersTheClassifierOnce_AndTheStoreClassifiesWithIt()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.AddEventSourcing(es => es.UseSqlite($"Data Source={_db.File()}"));
        builder.AddEventSourcing(es => es.UseSqlite($"Data Source={_db.File()}"));
        using var host = builder.Build();

        host.Services.GetServices<IStorageErrorClassifier>().Should().ContainSingle().Which.Should().BeSameAs(SqliteStorageErrorClassifier.Instance);
        await using var store = _db.Open();
        ((IStorageErrorClassifier)store).Classify(new SqliteException("busy", 5)).Should().Be(StorageErrorKind.Transient);
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private static SqliteException Catch(Action action)
    {
        try
        {
            action();
        }
        catch (SqliteException ex)
        {
            return ex;
        }

        throw new InvalidOperationException("The call did not fail.");
    }
}
