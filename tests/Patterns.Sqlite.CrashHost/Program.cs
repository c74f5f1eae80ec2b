using System.Globalization;
using System.Text;
using Patterns.Conformance;
using Patterns.Sqlite;
using Patterns.Storage;

// Usage: Patterns.Sqlite.CrashHost <database file> [writers] [units]
// Appends to the SQLite event store until the process is killed, printing "ack ..." after every append
// that returned (see CrashHarness). The crash-safety test kills it mid-load and checks the file.
// With "units", each append commits as a unit of work that also writes the stream's new version to the document
// crash/<stream> and enqueues an outbox message whose payload is the appended event ids (16 bytes each): after the
// kill, every stored event must have its outbox message and every document its stream's version.
if (args.Length is < 1 or > 3 || (args.Length == 3 && args[2] != "units"))
{
    await Console.Error.WriteLineAsync("usage: Patterns.Sqlite.CrashHost <database file> [writers] [units]");
    return 2;
}

var writers = args.Length >= 2 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 4;
await using var store = new SqliteEventStore(args[0]);
await store.MigrateAsync();
if (args.Length < 3)
{
    await CrashHarness.RunWriterAsync(store, Console.Out, writers);
    return 0;
}

await CrashHarness.RunAppenderAsync(async (streamId, expected, events, cancellationToken) =>
{
    var version = expected.Value + events.Count; // the harness appends at exact versions
    var work = new UnitOfWork()
        .Append(streamId, expected, events)
        .Upsert("crash", streamId, Encoding.UTF8.GetBytes(version.ToString(CultureInfo.InvariantCulture)))
        .Enqueue(new OutboxMessage(streamId, OutboxMessageKind.Publish, events.SelectMany(e => e.EventId.ToByteArray()).ToArray()));
    return (await store.CommitAsync(work, cancellationToken)).Appends[0];
}, Console.Out, writers);
return 0;
