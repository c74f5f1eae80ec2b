using System.Diagnostics;
using Patterns.Conformance;

namespace Patterns.Sqlite.Tests;

/// <summary>
/// The event store conformance suite on SQLite: one database file per store name in a temporary directory, with a
/// small read page so that long reads cross many pages, and the suite's <c>Clock</c> as the store's clock so that the
/// lease tests can expire leases by moving it. The crash test kills a child process (Patterns.Sqlite.CrashHost) that
/// appends to the file.
/// </summary>
public sealed class SqliteEventStoreConformanceTests : EventStoreConformanceTests
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "patterns-sqlite-conformance", Guid.NewGuid().ToString("N"));

    public override ValueTask InitializeAsync()
    {
        Directory.CreateDirectory(_directory);
        return base.InitializeAsync();
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
            // A killed child may hold the file a moment longer; the OS temp cleaner removes what is left.
        }
    }

    protected override Task<EventStoreFixture> CreateStoreAsync(string name) => ReopenAsync(name);

    protected override Task<EventStoreFixture> ReopenAsync(string name)
    {
        var store = new SqliteEventStore(new SqliteEventStoreOptions { ConnectionString = $"Data Source={File(name)}", PageSize = 64, TimeProvider = Clock });
        return Task.FromResult(EventStoreFixture.From(store));
    }

    protected override async Task<CrashRun?> RunWriterAndKillAsync(string name, int killAfterAcks, CancellationToken cancellationToken)
    {
        // The child creates the schema itself; nothing in this process has the file open while it runs.
        var host = Path.Combine(AppContext.BaseDirectory, "Patterns.Sqlite.CrashHost.dll");
        var start = new ProcessStartInfo("dotnet") { ArgumentList = { host, File(name), "8" } };
        return await CrashHarness.RunAndKillAsync(start, killAfterAcks, cancellationToken);
    }

    private string File(string name) => Path.Combine(_directory, name + ".db");
}
