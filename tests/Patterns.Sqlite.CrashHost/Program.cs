using Patterns.Conformance;
using Patterns.Sqlite;

// Usage: Patterns.Sqlite.CrashHost <database file> [writers]
// Appends to the SQLite event store until the process is killed, printing "ack ..." after every append
// that returned (see CrashHarness). The crash-safety test kills it mid-load and checks the file.
if (args.Length is < 1 or > 2)
{
    await Console.Error.WriteLineAsync("usage: Patterns.Sqlite.CrashHost <database file> [writers]");
    return 2;
}

var writers = args.Length == 2 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 4;
await using var store = new SqliteEventStore(args[0]);
await store.MigrateAsync();
await CrashHarness.RunWriterAsync(store, Console.Out, writers);
return 0;
