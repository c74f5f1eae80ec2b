using Patterns.Conformance;
using Patterns.Sqlite;
using Patterns.Sqlite.CrashHost;

// Usage: Patterns.Sqlite.CrashHost <database file> [writers] [units]
// Appends to the SQLite event store until the process is killed, printing "ack ..." after every append
// that returned (see CrashHarness). The crash-safety test kills it mid-load and checks the file. With "units",
// every append is committed as a unit of work with a document and an outbox message (see UnitAppends).
if (args.Length is < 1 or > 3 || (args.Length == 3 && args[2] != "units"))
{
    await Console.Error.WriteLineAsync("usage: Patterns.Sqlite.CrashHost <database file> [writers] [units]");
    return 2;
}

var writers = args.Length >= 2 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 4;
await using var store = new SqliteEventStore(args[0]);
await store.MigrateAsync();
await CrashHarness.RunWriterAsync(args.Length == 3 ? new UnitAppends(store) : store, Console.Out, writers);
return 0;
