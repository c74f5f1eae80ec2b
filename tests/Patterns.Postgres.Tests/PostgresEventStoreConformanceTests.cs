using System.Collections.Concurrent;
using System.Diagnostics;
using Patterns.Conformance;

namespace Patterns.Postgres.Tests;

/// <summary>
/// The event store conformance suite on PostgreSQL: each store is a schema of its own (named by the suite),
/// reopened as a new <see cref="PostgresEventStore"/> on the same schema, and dropped when the test ends. The
/// crash-safety test kills a child process (Patterns.Postgres.CrashHost) that appends to the schema.
/// </summary>
public sealed class PostgresEventStoreConformanceTests : EventStoreConformanceTests
{
    private readonly ConcurrentBag<string> _schemas = [];

    public override async ValueTask InitializeAsync()
    {
        await PostgresDatabase.RequireAsync();
        await base.InitializeAsync();
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        foreach (var schema in _schemas)
        {
            await PostgresDatabase.DropSchemaAsync(schema);
        }
    }

    protected override Task<EventStoreFixture> CreateStoreAsync(string name)
    {
        _schemas.Add(name);
        return ReopenAsync(name);
    }

    protected override Task<EventStoreFixture> ReopenAsync(string name)
    {
        var options = PostgresDatabase.Options(name);
        options.PageSize = 64;
        options.TimeProvider = Clock; // the lease tests move it to expire leases
        return Task.FromResult(EventStoreFixture.From(new PostgresEventStore(options)));
    }

    protected override async Task<CrashRun?> RunWriterAndKillAsync(string name, int killAfterAcks, CancellationToken cancellationToken)
    {
        _schemas.Add(name);
        var host = Path.Combine(AppContext.BaseDirectory, "Patterns.Postgres.CrashHost.dll");
        var start = new ProcessStartInfo("dotnet") { ArgumentList = { host, name, "8" } };
        start.Environment["PATTERNS_POSTGRES"] = PostgresDatabase.ConnectionString;
        return await CrashHarness.RunAndKillAsync(start, killAfterAcks, cancellationToken);
    }
}
