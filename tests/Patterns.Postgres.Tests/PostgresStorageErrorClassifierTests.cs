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
