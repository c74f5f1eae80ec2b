using System.Runtime.CompilerServices;
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

/// <summary>Where an ETL row loads.</summary>
public enum EtlTarget
{
    /// <summary>A SQLite file in a fresh temporary directory (the sink sets WAL and synchronous=NORMAL).</summary>
    Sqlite,

    /// <summary>A table in a schema of its own on the PostgreSQL server.</summary>
    Postgres,
}

/// <summary>
/// An ETL load: each run is one ETL job over the run's orders, read from a resumable in-memory source (its bookmark is
/// the orders consumed), priced by the shared handler (<see cref="OrderRow.Of"/>) and appended to a table in batches of
/// <see cref="BatchSize"/>; each batch commits with its bookmark in one transaction (exactly once: a stopped run resumes
/// after the last committed batch). Latency: from the order's creation to the commit of its batch.
/// </summary>
public sealed class EtlScenario(EtlTarget target) : IScenario
{
    /// <summary>Rows per batch (one transaction each, with the bookmark).</summary>
    public const int BatchSize = 10_000;

    private Deliveries? _deliveries;
    private string? _directory;
    private string? _schema;
    private EtlSink<OrderRow>? _sink;

    /// <inheritdoc />
    public async Task StartAsync(RunContext context, CancellationToken cancellationToken)
    {
        _deliveries = context.Deliveries;
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
            _directory = Path.Combine(Path.GetTempPath(), "patterns-compare", context.Prefix);
            Directory.CreateDirectory(_directory);
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
    public async Task RunAsync(int first, int count, CancellationToken cancellationToken)
    {
        _deliveries!.Expect(count);

        // A job per run: its bookmark starts empty, and the table takes the run's rows once each.
        var result = await global::Patterns.Etl.Etl.From(new OrderSource(first, count))
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
        if (_directory is not null && Directory.Exists(_directory))
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(_directory, recursive: true);
        }

        if (_schema is not null)
        {
            await Servers.DropSchemaAsync(_schema);
        }
    }

    /// <summary>The run's orders, created as they are read; resumable (the bookmark's offset is the orders consumed).</summary>
    private sealed class OrderSource(int first, int count) : EtlSource<OrderPlaced>
    {
        public override string Name => "orders";

        public override bool CanResume => true;

        public override async IAsyncEnumerable<OrderPlaced> ReadAsync(EtlSourceContext context, [EnumeratorCancellation] CancellationToken cancellationToken)
        {
            for (var offset = context.Resume.Offset; offset < count; offset++)
            {
                context.Offset = offset + 1;
                context.Line = offset + 1;
                yield return Orders.Create(first + (int)offset);
            }

            await Task.CompletedTask;
        }
    }

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
