using Npgsql;

namespace Patterns.Orchestration.Tests;

/// <summary>The PostgreSQL server (env PATTERNS_POSTGRES); tests skip with the reason when it is not reachable. Each test uses its own schema.</summary>
internal static class Postgres
{
    private static readonly Lazy<Task<string?>> Unreachable = new(ProbeAsync);

    public static string ConnectionString =>
        Environment.GetEnvironmentVariable("PATTERNS_POSTGRES") is { Length: > 0 } configured
            ? configured
            : "Host=127.0.0.1;Port=5432;Username=postgres;Password=postgres;Database=patterns_tests";

    public static async Task<string> NewSchemaAsync()
    {
        if (await Unreachable.Value is { } error)
        {
            Assert.Skip($"PostgreSQL is not reachable (set PATTERNS_POSTGRES): {error}");
        }

        return "wf_" + Guid.NewGuid().ToString("N")[..20];
    }

    public static async Task DropAsync(string schema)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", connection);
        await command.ExecuteNonQueryAsync();
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
