using Patterns.Conformance;
using Patterns.EventSourcing;

namespace Patterns.Sqlite.Tests;

/// <summary>The process-kill tests on SQLite: each case's children share one database file in a temporary directory.</summary>
public sealed class SqliteProcessKillTests : ProcessKillTests
{
    private readonly TempDatabase _db = new();

    protected override string StoreKind => "sqlite";

    public override async ValueTask DisposeAsync()
    {
        await _db.DisposeAsync();
        await base.DisposeAsync();
    }

    protected override Task<string> CreateDatabaseAsync(string name) => Task.FromResult(_db.File(name + ".db"));

    protected override void UseStore(EventSourcingBuilder builder, string target) => builder.UseSqlite(target);
}
