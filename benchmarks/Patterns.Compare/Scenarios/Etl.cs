using System.Diagnostics;
using Npgsql;
using Patterns.Etl;

namespace Patterns.Compare.Scenarios;

/// <summary>The row an ETL load writes for each order: the order's keys and the total the shared handler computed.</summary>
public sealed record OrderRow(Guid OrderId, int Sequence, string CustomerId, string Region, DateTime PlacedAt, int Lines, decimal Total, long SentAt)
    : IEtlRecord<OrderRow>
{
    /// <summary>Gets the columns written (<see cref="SentAt"/>, the latency stamp, is not one of them).</summary>
    public static EtlSchema<OrderRow> Schema { get; } = EtlSchema.For<OrderRow>()
        .Column("order_id", r => r.OrderId)
        .Column("sequence", r => r.Sequence)
        .Column("customer_id", r => r.CustomerId)
        .Column("region", r => r.Region)
        .Column("placed_at", r => r.PlacedAt)
        .Column("lines", r => r.Lines)
        .Column("total", r => r.Total);

    /// <summary>Prices <paramref name="order"/> with the shared handler and makes its row.</summary>
    public static OrderRow Of(OrderPlaced order) => new(
        order.OrderId,
        order.Sequence,
        order.CustomerId,
        order.Region,
        order.PlacedAt.UtcDateTime,
        order.Lines.Count,
        OrderHandler.Handle(order),
        order.SentAt);
}

/// <summary>
/// The CSV file an ETL load reads: one row per order, its address and its three lines flattened into columns (about
/// 320 bytes a row; the descriptions hold commas, so they are quoted). Reading a row stamps its
/// <see cref="OrderPlaced.SentAt"/>, so the row's latency runs from its read to the commit of its batch.
/// </summary>
public static class OrderCsv
{
    /// <summary>Lines per order in the file (every order of the workload has three).</summary>
    public const int Lines = 3;

    /// <summary>Gets the file's columns, and how a row becomes an order.</summary>
    public static EtlSchema<OrderPlaced> Schema { get; } = Build();

    private static EtlSchema<OrderPlaced> Build()
    {
        var schema = EtlSchema.For(r => new OrderPlaced(
                r.Guid(0),
                r.Int32(1),
                r.String(2),
                r.String(3),
                new DateTimeOffset(r.DateTime(4)),
                new Address(r.String(5), r.String(6), r.String(7), r.String(8), r.String(9)),
                [
                    new OrderLine(r.String(10), r.String(11), r.Int32(12), r.Decimal(13)),
                    new OrderLine(r.String(14), r.String(15), r.Int32(16), r.Decimal(17)),
                    new OrderLine(r.String(18), r.String(19), r.Int32(20), r.Decimal(21)),
                ],
                r.String(22),
                Stopwatch.GetTimestamp()))
            .Column("order_id", o => o.OrderId)
            .Column("sequence", o => o.Sequence)
            .Column("customer_id", o => o.CustomerId)
            .Column("region", o => o.Region)
            .Column("placed_at", o => o.PlacedAt.UtcDateTime)
            .Column("ship_name", o => o.ShipTo.Name)
            .Column("ship_street", o => o.ShipTo.Street)
            .Column("ship_city", o => o.ShipTo.City)
            .Column("ship_postal_code", o => o.ShipTo.PostalCode)
            .Column("ship_country", o => o.ShipTo.Country);
        for (var i = 0; i < Lines; i++)
        {
            var line = i;
            schema = schema
                .Column($"sku_{line + 1}", o => o.Lines[line].Sku)
                .Column($"description_{line + 1}", o => o.Lines[line].Description)
                .Column($"quantity_{line + 1}", o => o.Lines[line].Quantity)
                .Column($"unit_price_{line + 1}", o => o.Lines[line].UnitPrice);
        }

        return schema.Column("currency", o => o.Currency);
    }

    /// <summary>Writes orders <paramref name="first"/> .. <paramref name="first"/> + <paramref name="count"/> - 1 to <paramref name="path"/> with the library's CSV sink.</summary>
    public static async Task WriteAsync(string path, int first, int count, CancellationToken cancellationToken)
    {
        var result = await global::Patterns.Etl.Etl.From(new GeneratedOrders(first, count))
            .To(Csv.Write(path, Schema), "orders-csv")
            .RunAsync(new EtlRunOptions { BatchSize = EtlScenario.BatchSize }, cancellationToken);
        if (result.Status != EtlRunStatus.Completed || result.RowsInserted != count)
        {
            throw new InvalidOperationException($"Writing {path} ended {result.Status} with {result.RowsInserted} rows; expected {count}.");
        }
    }

    /// <summary>The orders, created as they are read.</summary>
    private sealed class GeneratedOrders(int first, int count) : EtlSource<OrderPlaced>
    {
        public override string Name => "generated-orders";

        public override async IAsyncEnumerable<OrderPlaced> ReadAsync(EtlSourceContext context, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
        {
            for (var i = 0; i < count; i++)
            {
                yield return Orders.Create(first + i);
            }

            await Task.CompletedTask;
        }
    }
}

/// <summary>Where an ETL row loads.</summary>
public enum EtlTarget
{
    /// <summary>A SQLite file in a fresh temporary directory (the sink sets WAL and synchronous=NORMAL).</summary>
    Sqlite,

    /// <summary>A table in a schema of its own on the PostgreSQL server.</summary>
    Postgres,
}

/// <summary>
/// An ETL load: each run is one ETL job over a CSV file of the run's orders (<see cref="OrderCsv"/>, written before the
/// run is timed), each row parsed into an order, priced by the shared handler (<see cref="OrderRow.Of"/>) and appended
/// to a table in batches of <see cref="BatchSize"/>; each batch commits with its bookmark (the rows read) in one
/// transaction (exactly once: a stopped run resumes after the last committed batch). Latency: from the row's read to the
/// commit of its batch.
/// </summary>
public sealed class EtlScenario(EtlTarget target) : IScenario
{
    /// <summary>Rows per batch (one transaction each, with the bookmark).</summary>
    public const int BatchSize = 10_000;

    private Deliveries? _deliveries;
    private string _directory = null!;
    private string? _schema;
    private EtlSink<OrderRow>? _sink;

    /// <inheritdoc />
    public async Task StartAsync(RunContext context, CancellationToken cancellationToken)
    {
        _deliveries = context.Deliveries;
        _directory = Path.Combine(Path.GetTempPath(), "patterns-compare", context.Prefix);
        Directory.CreateDirectory(_directory);
        EtlSink<OrderRow> sink;
        if (target == EtlTarget.Postgres)
        {
            _schema = context.Prefix;
            await using var dataSource = NpgsqlDataSource.Create(Servers.Postgres);
            await using var create = dataSource.CreateCommand($"CREATE SCHEMA \"{_schema}\"");
            await create.ExecuteNonQueryAsync(cancellationToken);
            sink = global::Patterns.Etl.Postgres.Append<OrderRow>(Servers.Postgres, $"{_schema}.orders");
        }
        else
        {
            sink = global::Patterns.Etl.Sqlite.Append<OrderRow>($"Data Source={Path.Combine(_directory, "orders.db")}", "orders");
        }

        var deliveries = context.Deliveries;
        _sink = new CommitRecordingSink(sink, rows =>
        {
            foreach (var row in rows)
            {
                deliveries.Record(row.SentAt);
            }
        });
    }

    /// <inheritdoc />
    public Task PrepareAsync(int first, int count, CancellationToken cancellationToken) =>
        OrderCsv.WriteAsync(FileOf(first), first, count, cancellationToken);

    /// <inheritdoc />
    public async Task RunAsync(int first, int count, CancellationToken cancellationToken)
    {
        _deliveries!.Expect(count);

        // A job per run: its bookmark starts empty, and the table takes the run's rows once each.
        var result = await global::Patterns.Etl.Etl.From(Csv.Read(FileOf(first), OrderCsv.Schema))
            .Select(OrderRow.Of)
            .To(_sink!, $"orders-{first}")
            .RunAsync(new EtlRunOptions { BatchSize = BatchSize }, cancellationToken);
        if (result.Status != EtlRunStatus.Completed || result.RowsInserted != count)
        {
            throw new InvalidOperationException($"The ETL run ended {result.Status} with {result.RowsInserted} rows inserted; expected {count}.");
        }

        await _deliveries.Completion.WaitAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (Directory.Exists(_directory))
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(_directory, recursive: true);
        }

        if (_schema is not null)
        {
            await Servers.DropSchemaAsync(_schema);
        }
    }

    private string FileOf(int first) => Path.Combine(_directory, $"orders-{first}.csv");

    /// <summary>A sink that reports each batch's rows once the inner sink has committed them (with their bookmark).</summary>
    private sealed class CommitRecordingSink(EtlSink<OrderRow> inner, Action<ReadOnlySpan<OrderRow>> committed) : EtlSink<OrderRow>
    {
        public override string Name => inner.Name;

        public override int PreferredBatchSize => inner.PreferredBatchSize;

        public override Func<OrderRow, long>? RowSize => inner.RowSize;

        public override async ValueTask<EtlSinkWriter<OrderRow>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) =>
            new Writer(await inner.OpenAsync(context, cancellationToken), committed);

        private sealed class Writer(EtlSinkWriter<OrderRow> inner, Action<ReadOnlySpan<OrderRow>> committed) : EtlSinkWriter<OrderRow>
        {
            public override bool StoresBookmarks => inner.StoresBookmarks;

            public override bool StoresQuarantine => inner.StoresQuarantine;

            public override ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken) => inner.ReadBookmarkAsync(cancellationToken);

            public override ValueTask ResetAsync(CancellationToken cancellationToken) => inner.ResetAsync(cancellationToken);

            public override async ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<OrderRow> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                var counts = await inner.WriteAsync(rows, commit, cancellationToken);
                committed(rows.Span);
                return counts;
            }

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => inner.CompleteAsync(commit, cancellationToken);

            public override async ValueTask DisposeAsync()
            {
                await inner.DisposeAsync();
                await base.DisposeAsync();
            }
        }
    }
}
