using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using Patterns.EventSourcing;
using Patterns.Orchestration;

namespace Patterns.Benchmarks.Orchestration;

public enum Store
{
    InMemory,
    Sqlite,
    Postgres,
}

/// <summary>N sequential no-op activities.</summary>
public sealed class NoOpChain : Workflow<int, int>
{
    public override async Task<int> RunAsync(WorkflowContext context, int activities)
    {
        for (var i = 0; i < activities; i++)
        {
            await context.CallActivityAsync<int>("NoOp", i);
        }

        return activities;
    }
}

/// <summary>Waits for one signal (the suspended-memory figure).</summary>
public sealed class WaitForSignal : Workflow<int, int>
{
    public override Task<int> RunAsync(WorkflowContext context, int input) => context.WaitForSignalAsync<int>("go");
}

/// <summary>Waits for one durable timer and reports when it fired (the timer figure).</summary>
public sealed class SleepOnce : Workflow<long, long>
{
    public override async Task<long> RunAsync(WorkflowContext context, long dueTicks)
    {
        await context.DelayAsync(new DateTimeOffset(dueTicks, TimeSpan.Zero) - context.UtcNow);
        return dueTicks;
    }
}

/// <summary>A Patterns host with the engine on one store, built for one benchmark iteration.</summary>
public sealed class PatternsEngine : IAsyncDisposable
{
    public const string PostgresDefault = "Host=127.0.0.1;Port=5432;Username=postgres;Password=postgres;Database=patterns_tests";
    private readonly IHost _host;
    private readonly string? _file;
    private readonly string? _schema;

    private PatternsEngine(IHost host, string? file, string? schema)
    {
        _host = host;
        _file = file;
        _schema = schema;
        Client = host.Services.GetRequiredService<IWorkflowClient>();
    }

    public IWorkflowClient Client { get; }

    public IServiceProvider Services => _host.Services;

    public static string PostgresConnection => Environment.GetEnvironmentVariable("PATTERNS_POSTGRES") is { Length: > 0 } c ? c : PostgresDefault;

    public static async Task<PatternsEngine> StartAsync(Store store)
    {
        var file = store == Store.Sqlite ? Path.Combine(Path.GetTempPath(), $"wf-bench-{Guid.NewGuid():N}.db") : null;
        var schema = store == Store.Postgres ? "wfb_" + Guid.NewGuid().ToString("N")[..16] : null;
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.AddPatterns(p => p.UseInMemory());
        builder.AddEventSourcing(es =>
        {
            if (file is not null)
            {
                es.UseSqlite($"Data Source={file}");
            }

            if (schema is not null)
            {
                es.UsePostgres(o =>
                {
                    o.ConnectionString = PostgresConnection;
                    o.Schema = schema;
                });
            }
        });
        builder.AddOrchestration(o =>
        {
            o.Options.ActivityConcurrency = 64;
            o.Options.ResultConcurrency = 128;
            if (Environment.GetEnvironmentVariable("PATTERNS_MAX_TASKS") is { Length: > 0 } places)
            {
                // For comparisons (e.g. 1000000: every instance's workflow task at once, as before the bound).
                o.Options.MaxConcurrentWorkflowTasks = int.Parse(places, System.Globalization.CultureInfo.InvariantCulture);
            }
            o.AddWorkflow<NoOpChain>().AddWorkflow<WaitForSignal>().AddWorkflow<SleepOnce>()
                .AddActivity<int, int>("NoOp", static (i, _) => Task.FromResult(i));
        });
        var host = builder.Build();
        await host.StartAsync();
        return new PatternsEngine(host, file, schema);
    }

    public async ValueTask DisposeAsync()
    {
        await _host.StopAsync();
        _host.Dispose();
        await DropAsync(_file, _schema);
    }

    /// <summary>Deletes a benchmark's SQLite file (with its journal files) and drops its PostgreSQL schema.</summary>
    public static async Task DropAsync(string? file, string? schema)
    {
        if (file is not null)
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            foreach (var f in Directory.GetFiles(Path.GetDirectoryName(file)!, Path.GetFileName(file) + "*"))
            {
                File.Delete(f);
            }
        }

        if (schema is not null)
        {
            await using var connection = new NpgsqlConnection(PostgresConnection);
            await connection.OpenAsync();
            await using var drop = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", connection);
            await drop.ExecuteNonQueryAsync();
        }
    }
}
