using Microsoft.Data.Sqlite;
using Patterns.Etl;
using Patterns.Etl.Samples;
using Spectre.Console;

// ETL sample: generates a CSV of orders with some bad rows, loads it into SQLite (or PostgreSQL with --postgres),
// shows a progress bar, prints the quarantine, then runs an incremental second load that changes only what changed.
var postgres = args.Contains("--postgres");
var rows = args.SkipWhile(a => a != "--rows").Skip(1).Select(int.Parse).FirstOrDefault(50_000);
var work = Path.Combine(Path.GetTempPath(), "patterns-etl-sample-" + Guid.NewGuid().ToString("N")[..8]);
Directory.CreateDirectory(work);
var day1 = Path.Combine(work, "orders-day1.csv");
var day2 = Path.Combine(work, "orders-day2.csv");
var database = Path.Combine(work, "warehouse.db");
var pg = Environment.GetEnvironmentVariable("PATTERNS_POSTGRES") ?? "Host=127.0.0.1;Port=5432;Username=postgres;Password=postgres;Database=patterns_tests";
var table = postgres ? "etl_sample_orders" : "orders";

// Day 1: every 200th row is malformed (a bad amount, a missing field, a bad timestamp).
OrderData.Write(day1, rows, badEvery: 200);

// Day 2: the same orders, 10% of them changed, 2,000 new ones.
OrderData.Write(day2, rows + 2_000, badEvery: 0, change: (i, id, order) => id % 10 == 0 && id <= rows ? order with { Status = "refunded" } : order);

EtlSink<Order> Sink() => postgres ? Postgres.Merge<Order>(pg, table, "id") : Sqlite.Merge<Order>($"Data Source={database}", table, "id");

async Task<EtlRunResult> LoadAsync(string file, string title)
{
    EtlRunResult? result = null;
    await AnsiConsole.Progress()
        .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
        .StartAsync(async context =>
        {
            var task = context.AddTask(title, maxValue: 1.0);
            var progress = new Progress(p => task.Value = p.Fraction ?? 0);
            result = await Etl.From(Csv.Read<Order>(file))
                .Validate(o => o.Amount < 0 ? "the amount is negative" : null, "amount")
                .To(Sink(), "orders-" + Path.GetFileNameWithoutExtension(file))
                .RunAsync(new EtlRunOptions { BatchSize = 5_000, MaxErrorRate = 0.02, Progress = progress });
            task.Value = 1.0;
        });
    return result!;
}

void Show(EtlRunResult r)
{
    var grid = new Table().AddColumns("run", "status", "read", "inserted", "updated", "deleted", "quarantined", "time");
    grid.AddRow(r.RunId[^8..], r.Status.ToString(), $"{r.RowsRead:N0}", $"{r.RowsInserted:N0}", $"{r.RowsUpdated:N0}", $"{r.RowsDeleted:N0}", $"{r.RowsQuarantined:N0}", $"{r.Duration.TotalSeconds:F2} s");
    AnsiConsole.Write(grid);
}

AnsiConsole.MarkupLine($"[bold]Loading {rows:N0} orders into {(postgres ? "PostgreSQL" : "SQLite")}[/]");
var first = await LoadAsync(day1, "day 1");
Show(first);

AnsiConsole.MarkupLine("[bold]Quarantine (first 5 rows)[/]");
var quarantine = new Table().AddColumns("line", "column", "error", "raw");
if (postgres)
{
    await using var source = Npgsql.NpgsqlDataSource.Create(pg);
    await using var command = source.CreateCommand("SELECT line, coalesce(column_name, ''), error, raw FROM patterns_etl_quarantine WHERE job = 'orders-orders-day1' ORDER BY id LIMIT 5");
    await using var reader = await command.ExecuteReaderAsync();
    while (await reader.ReadAsync())
    {
        quarantine.AddRow(reader.GetInt64(0).ToString(), reader.GetString(1), Markup.Escape(reader.GetString(2)), Markup.Escape(reader.GetString(3)));
    }
}
else
{
    using var connection = new SqliteConnection($"Data Source={database}");
    connection.Open();
    using var command = connection.CreateCommand();
    command.CommandText = "SELECT line, coalesce(column_name, ''), error, raw FROM patterns_etl_quarantine ORDER BY id LIMIT 5";
    using var reader = command.ExecuteReader();
    while (reader.Read())
    {
        quarantine.AddRow(reader.GetInt64(0).ToString(), reader.GetString(1), Markup.Escape(reader.GetString(2)), Markup.Escape(reader.GetString(3)));
    }
}

AnsiConsole.Write(quarantine);

AnsiConsole.MarkupLine("[bold]Incremental second load (day 2: 10% changed, 2,000 new)[/]");
var second = await LoadAsync(day2, "day 2");
Show(second);

AnsiConsole.MarkupLine("[bold]Running day 2 again (its bookmark says it is loaded)[/]");
var again = await Etl.From(Csv.Read<Order>(day2)).To(Sink(), "orders-orders-day2").RunAsync();
Show(again);

var ok = first.RowsQuarantined == rows / 200 && second.RowsInserted == 2_000 + (rows / 200) && again.Status == EtlRunStatus.AlreadyCompleted;
if (postgres)
{
    await using var source = Npgsql.NpgsqlDataSource.Create(pg);
    await using var drop = source.CreateCommand($"DROP TABLE IF EXISTS {table}; DELETE FROM patterns_etl_bookmarks WHERE job LIKE 'orders-orders-day%'; DELETE FROM patterns_etl_quarantine WHERE job LIKE 'orders-orders-day%'");
    await drop.ExecuteNonQueryAsync();
}

SqliteConnection.ClearAllPools();
Directory.Delete(work, recursive: true);
AnsiConsole.MarkupLine(ok ? "[green]ETL sample OK[/]" : "[red]ETL sample: unexpected counts[/]");
return ok ? 0 : 1;

internal sealed class Progress(Action<EtlProgress> report) : IProgress<EtlProgress>
{
    public void Report(EtlProgress value) => report(value);
}
