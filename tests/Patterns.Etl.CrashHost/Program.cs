using System.Globalization;
using Patterns.Etl;
using Patterns.Etl.Samples;

// A child process for the ETL kill tests: loads a CSV of orders into SQLite or PostgreSQL (merge on id, small
// batches), printing "loaded N" after each committed batch and waiting for a line on stdin, until it is killed or
// the load completes.
// Usage: Patterns.Etl.CrashHost sqlite|postgres <connection string> <table> <csv> <job> <batch size>
if (args[0] == "queue")
{
    await QueueHost.RunAsync(args);
    return;
}

if (args[0] == "queue-append")
{
    await QueueAppendHost.RunAsync(args);
    return;
}

if (args[0] == "sort")
{
    await SortHost.RunAsync(args);
    return;
}

if (args[0] == "events")
{
    await EventsHost.RunAsync(args);
    return;
}

var kind = args[0];
var connectionString = args[1];
var table = args[2];
var csv = args[3];
var job = args[4];
var batchSize = int.Parse(args[5], CultureInfo.InvariantCulture);

EtlSink<Order> sink = kind == "sqlite"
    ? Sqlite.Merge<Order>(connectionString, table, "id")
    : Postgres.Merge<Order>(connectionString, table, "id");
var result = await Etl.From(Csv.Read<Order>(csv))
    .Validate(o => o.Amount < 0 ? "negative amount" : null, "amount")
    .To(sink, job)
    .RunAsync(new EtlRunOptions { BatchSize = batchSize, Progress = new Line() });
Console.Out.WriteLine($"done {result.Status} {result.RowsRead} {result.RowsChanged}");
Console.Out.Flush();

internal sealed class Line : IProgress<EtlProgress>
{
    public void Report(EtlProgress value)
    {
        // Gated: the parent answers each report, so it decides after which committed batch the child runs on unchecked.
        Console.Out.WriteLine($"loaded {value.RowsLoaded}");
        Console.Out.Flush();
        Console.In.ReadLine();
    }
}
