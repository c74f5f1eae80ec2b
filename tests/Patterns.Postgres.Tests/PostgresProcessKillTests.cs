using System.Collections.Concurrent;
using Patterns.Conformance;
using Patterns.EventSourcing;

namespace Patterns.Postgres.Tests;

/// <summary>The process-kill tests on PostgreSQL: each case's children share one schema, dropped when the test ends.</summary>
public sealed class PostgresProcessKillTests : ProcessKillTests
{
    private readonly ConcurrentBag<string> _schemas = [];

    protected override string StoreKind => "postgres";

    public override async ValueTask InitializeAsync()
    {
        await PostgresDatabase.RequireAsync();
        await base.InitializeAsync();
    }

    public override async ValueTask DisposeAsync()
    {
        foreach (var schema in _schemas)
        {
            await PostgresDatabase.DropSchemaAsync(schema);
        }

        await base.DisposeAsync();
    }

    protected override Task<string> CreateDatabaseAsync(string name)
    {
        var schema = PostgresDatabase.NewSchema();
        _schemas.Add(schema);
        return Task.FromResult(schema);
    }

    protected override void UseStore(EventSourcingBuilder builder, string target) =>
        builder.UsePostgres(PostgresDatabase.ConnectionString, o => o.Schema = target);
}
