namespace Patterns.Orchestration.Tests;

/// <summary>Where a test's stores live: a SQLite file in a directory of its own, or a PostgreSQL schema of its own; all removed at the end.</summary>
internal sealed class StoreLocations : IAsyncDisposable
{
    private readonly List<string> _schemas = [];
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "wf-tests-" + Guid.NewGuid().ToString("N"));

    public StoreLocations() => Directory.CreateDirectory(_directory);

    /// <summary>Gets a new location for <paramref name="store"/> (null in memory); skips the test when PostgreSQL is not reachable.</summary>
    public async Task<string?> NewAsync(StoreKind store)
    {
        switch (store)
        {
            case StoreKind.Postgres:
                var schema = await Postgres.NewSchemaAsync();
                _schemas.Add(schema);
                return schema;
            case StoreKind.Sqlite:
                return Path.Combine(_directory, Guid.NewGuid().ToString("N") + ".db");
            default:
                return null;
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var schema in _schemas)
        {
            await Postgres.DropAsync(schema);
        }

        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }
}
