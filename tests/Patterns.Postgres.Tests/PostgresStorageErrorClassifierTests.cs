using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Npgsql;
using Patterns.EventSourcing;
using Patterns.Storage;

namespace Patterns.Postgres.Tests;

public sealed class PostgresStorageErrorClassifierTests
{
    [Theory]
    [InlineData("40001", StorageErrorKind.Conflict)]
    [InlineData("40P01", StorageErrorKind.Conflict)]
    [InlineData("08006", StorageErrorKind.Transient)]
    [InlineData("08001", StorageErrorKind.Transient)]
    [InlineData("53100", StorageErrorKind.Transient)]
    [InlineData("53300", StorageErrorKind.Transient)]
    [InlineData("57P01", StorageErrorKind.Transient)]
    [InlineData("57P02", StorageErrorKind.Transient)]
    [InlineData("57P03", StorageErrorKind.Transient)]
    [InlineData("57014", StorageErrorKind.Transient)]
    [InlineData("23505", StorageErrorKind.Permanent)]
    [InlineData("42P01", StorageErrorKind.Permanent)]
    public async Task AnErrorTheServerRaises_IsClassifiedByItsSqlState(string sqlState, StorageErrorKind expected)
    {
        // The server itself raises an error with that SQLSTATE, so the exception is the one Npgsql builds from a real reply.
        var data = await PostgresDatabase.RequireAsync();
        await using var command = data.CreateCommand($"DO $$ BEGIN RAISE EXCEPTION 'raised for the test' USING ERRCODE = '{sqlState}'; END $$");

        var error = (await FluentActions.Awaiting(() => command.ExecuteNonQueryAsync()).Should().ThrowAsync<PostgresException>()).Which;

        error.SqlState.Should().Be(sqlState);
        StorageErrors.Classify(error, PostgresStorageErrorClassifier.Instance).Should().Be(expected);
    }

    [Fact]
    public async Task AConnectionTheServerTerminates_IsAdminShutdown_Transient()
    {
        await PostgresDatabase.RequireAsync();
        var builder = new NpgsqlConnectionStringBuilder(PostgresDatabase.ConnectionString) { Pooling = false };
        await using var connection = new NpgsqlConnection(builder.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT pg_terminate_backend(pg_backend_pid())", connection);

        var error = (await FluentActions.Awaiting(() => command.ExecuteNonQueryAsync()).Should().ThrowAsync<PostgresException>()).Which;

        error.SqlState.Should().Be(PostgresErrorCodes.AdminShutdown);
        PostgresStorageErrorClassifier.Instance.Classify(error).Should().Be(StorageErrorKind.Transient);
    }

    [Fact]
    public async Task AStatementPastItsStatementTimeout_IsQueryCanceled_Transient()
    {
        // The server cancels a statement that runs past statement_timeout with 57014 (query_canceled): the statement was
        // stopped, not refused, and may succeed later. Before, 57014 was left to the kernel's rules, which made it permanent.
        await PostgresDatabase.RequireAsync();
        var builder = new NpgsqlConnectionStringBuilder(PostgresDatabase.ConnectionString) { Pooling = false };
        await using var connection = new NpgsqlConnection(builder.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SET statement_timeout = '50ms'; SELECT pg_sleep(30)", connection);

        var error = (await FluentActions.Awaiting(() => command.ExecuteNonQueryAsync()).Should().ThrowAsync<PostgresException>()).Which;

        error.SqlState.Should().Be(PostgresErrorCodes.QueryCanceled);
        error.MessageText.Should().Contain("statement timeout");
        StorageErrors.Classify(error, PostgresStorageErrorClassifier.Instance).Should().Be(StorageErrorKind.Transient);
    }

    [Fact]
    public async Task AStatementCancelledThroughTheCallersToken_StaysPermanent()
    {
        // The caller's own cancellation also ends in 57014 on the server, but Npgsql reports it as an
        // OperationCanceledException (the 57014 inside): a stop the caller asked for, never worth retrying.
        await PostgresDatabase.RequireAsync();
        var builder = new NpgsqlConnectionStringBuilder(PostgresDatabase.ConnectionString) { Pooling = false };
        await using var connection = new NpgsqlConnection(builder.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT pg_sleep(30)", connection);
        using var cancel = new CancellationTokenSource();
        var running = command.ExecuteNonQueryAsync(cancel.Token);
        await cancel.CancelAsync();

        var error = (await FluentActions.Awaiting(() => running).Should().ThrowAsync<OperationCanceledException>()).Which;

        StorageErrors.Classify(error, PostgresStorageErrorClassifier.Instance).Should().Be(StorageErrorKind.Permanent);
        PostgresStorageErrorClassifier.Instance.Classify(error).Should().BeNull("not the driver's error itself: left to the kernel's rules");
    }

    [Fact]
    public async Task NoServerListening_IsATransientNpgsqlException()
    {
        // Port 1 on the loopback: nothing listens, the connection is refused (no server needed).
        await using var connection = new NpgsqlConnection("Host=127.0.0.1;Port=1;Username=u;Password=p;Timeout=5;Pooling=false");

        var error = (await FluentActions.Awaiting(() => connection.OpenAsync()).Should().ThrowAsync<NpgsqlException>()).Which;

        error.Should().NotBeOfType<PostgresException>();
        PostgresStorageErrorClassifier.Instance.Classify(error).Should().Be(StorageErrorKind.Transient);
        PostgresStorageErrorClassifier.Instance.Classify(new TimeoutException()).Should().BeNull("not the driver's: left to the kernel's rules");
    }

    [Fact]
    public void UsePostgres_RegistersTheClassifierOnce()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.AddEventSourcing(es => es.UsePostgres(PostgresDatabase.DefaultConnectionString));
        builder.AddEventSourcing(es => es.UsePostgres(PostgresDatabase.DefaultConnectionString));
        using var host = builder.Build();

        host.Services.GetServices<IStorageErrorClassifier>().Should().ContainSingle().Which.Should().BeSameAs(PostgresStorageErrorClassifier.Instance);
    }
}
