using Patterns.Conformance;
using Patterns.Postgres;

// Usage: Patterns.Postgres.CrashHost <schema> [writers]
// Appends to the PostgreSQL event store in <schema> (server from PATTERNS_POSTGRES, or the local default) until
// the process is killed, printing "ack ..." after every append that returned (see CrashHarness). The
// crash-safety test kills it mid-load and checks that every acknowledged append was committed.
if (args.Length is < 1 or > 2)
{
    await Console.Error.WriteLineAsync("usage: Patterns.Postgres.CrashHost <schema> [writers]");
    return 2;
}

var connectionString = Environment.GetEnvironmentVariable("PATTERNS_POSTGRES") is { Length: > 0 } configured
    ? configured
    : "Host=127.0.0.1;Port=5432;Username=postgres;Password=postgres;Database=patterns_tests";
var writers = args.Length == 2 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 4;
await using var store = new PostgresEventStore(new PostgresEventStoreOptions { ConnectionString = connectionString, Schema = args[0] });
await store.MigrateAsync();
await CrashHarness.RunWriterAsync(store, Console.Out, writers);
return 0;
