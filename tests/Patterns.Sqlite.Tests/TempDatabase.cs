namespace Patterns.Sqlite.Tests;

/// <summary>A fresh directory under the temp path for one test's database files, deleted with everything in it on dispose.</summary>
internal sealed class TempDatabase : IAsyncDisposable
{
    private readonly List<SqliteEventStore> _stores = [];

    public TempDatabase()
    {
        Directory = Path.Combine(Path.GetTempPath(), "patterns-sqlite-tests", Guid.NewGuid().ToString("N"));
        System.IO.Directory.CreateDirectory(Directory);
    }

    public static TimeSpan Wait { get; } = TimeSpan.FromSeconds(60);

    public string Directory { get; }

    public string File(string name = "events.db") => Path.Combine(Directory, name);

    /// <summary>Creates a store on <paramref name="file"/> that is disposed with the directory.</summary>
    public SqliteEventStore Open(Action<SqliteEventStoreOptions>? configure = null, string file = "events.db")
    {
        var options = new SqliteEventStoreOptions { ConnectionString = $"Data Source={File(file)}" };
        configure?.Invoke(options);
        var store = new SqliteEventStore(options);
        _stores.Add(store);
        return store;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var store in _stores)
        {
            await store.DisposeAsync();
        }

        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
            // A child process may still hold the file for a moment after being killed; the OS temp cleaner gets it.
        }
    }
}
