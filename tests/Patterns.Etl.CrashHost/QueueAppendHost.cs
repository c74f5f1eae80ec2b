using System.Globalization;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Hosting;
using Npgsql;
using Patterns.Etl;
using Patterns.Etl.Samples;

/// <summary>
/// The queue-append mode of the crash host: loads the orders a RabbitMQ queue holds into a table with no key (an append
/// sink: SQLite, or PostgreSQL when the connection string is not a SQLite one), negative amounts quarantined. After each
/// batch with rows has committed, and before the run acknowledges its messages, it prints "loaded N" and waits for a line
/// on stdin: the test kills it there, between the commit and the acknowledgements. It stops once the target holds
/// <c>good</c> distinct ids and the quarantine <c>bad</c> distinct rows.
/// Usage: queue-append &lt;amqp uri&gt; &lt;name prefix&gt; &lt;connection string&gt; &lt;table&gt; &lt;job&gt; &lt;batch size&gt; &lt;good&gt; &lt;bad&gt;.
/// </summary>
internal static class QueueAppendHost
{
    public static async Task RunAsync(string[] args)
    {
        var (uri, prefix, connectionString, table, job) = (args[1], args[2], args[3], args[4], args[5]);
        var batchSize = int.Parse(args[6], CultureInfo.InvariantCulture);
        var good = int.Parse(args[7], CultureInfo.InvariantCulture);
        var bad = int.Parse(args[8], CultureInfo.InvariantCulture);
        var sqlite = connectionString.StartsWith("Data Source=", StringComparison.OrdinalIgnoreCase);
        using var host = await QueueHost.StartAsync(uri, prefix);
        await using var counter = new Counter(connectionString, table, sqlite);
        using var stop = new CancellationTokenSource();
        var sink = new CommitGate<Order>(sqlite ? Sqlite.Append<Order>(connectionString, table) : Postgres.Append<Order>(connectionString, table));
        var result = await EtlTransport.FromQueue<Order>(host.Services, QueueHost.Queue, maxUnacknowledged: batchSize * 2)
            .Validate(o => o.Amount < 0 ? "negative amount" : null, "amount", raw: o => o.Id.ToString(CultureInfo.InvariantCulture))
            .To(sink, job)
            .RunAsync(new EtlRunOptions { BatchSize = batchSize, Progress = new Progress(() => counter.Complete(good, bad), stop) }, stop.Token);
        Console.Out.WriteLine($"done {result.Status}");
        Console.Out.Flush();
        await host.StopAsync();
    }

    /// <summary>Stops the run once the target is complete (called after each commit).</summary>
    private sealed class Progress(Func<bool> complete, CancellationTokenSource stop) : IProgress<EtlProgress>
    {
        public void Report(EtlProgress value)
        {
            if (complete())
            {
                stop.Cancel();
            }
        }
    }

    /// <summary>Counts the distinct ids loaded and rows quarantined.</summary>
    private sealed class Counter(string connectionString, string table, bool sqlite) : IAsyncDisposable
    {
        private readonly NpgsqlDataSource? _postgres = sqlite ? null : NpgsqlDataSource.Create(connectionString);

        public bool Complete(int good, int bad)
        {
            var schema = table.Contains('.', StringComparison.Ordinal) ? table[..(table.IndexOf('.', StringComparison.Ordinal) + 1)] : string.Empty;
            return Count($"SELECT count(DISTINCT id) FROM {table}") >= good && Count($"SELECT count(DISTINCT raw) FROM {schema}patterns_etl_quarantine") >= bad;
        }

        public ValueTask DisposeAsync() => _postgres?.DisposeAsync() ?? default;

        private long Count(string sql)
        {
            try
            {
                if (_postgres is { } source)
                {
                    using var pg = source.CreateCommand(sql);
                    return Convert.ToInt64(pg.ExecuteScalar(), CultureInfo.InvariantCulture);
                }

                using var connection = new SqliteConnection(connectionString);
                connection.Open();
                using var command = connection.CreateCommand();
                command.CommandText = sql;
                return Convert.ToInt64(command.ExecuteScalar(), CultureInfo.InvariantCulture);
            }
            catch (Exception ex) when (ex is SqliteException or PostgresException)
            {
                // The tables are created with the first batch.
                return 0;
            }
        }
    }

    /// <summary>A sink that, after each batch with rows has committed, reports it and waits for the test (which kills the process there).</summary>
    private sealed class CommitGate<T>(EtlSink<T> inner) : EtlSink<T>
    {
        public override string Name => inner.Name;

        public override int PreferredBatchSize => inner.PreferredBatchSize;

        public override Func<T, long>? RowSize => inner.RowSize;

        public override async ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) =>
            new Writer(await inner.OpenAsync(context, cancellationToken));

        private sealed class Writer(EtlSinkWriter<T> inner) : EtlSinkWriter<T>
        {
            private long _loaded;

            public override bool StoresBookmarks => inner.StoresBookmarks;

            public override bool StoresQuarantine => inner.StoresQuarantine;

            public override bool CommitsEachBatch => inner.CommitsEachBatch;

            public override bool StoresConsumed => inner.StoresConsumed;

            public override ValueTask<IReadOnlySet<string>> ReadConsumedAsync(IReadOnlyList<string> messageIds, CancellationToken cancellationToken) =>
                inner.ReadConsumedAsync(messageIds, cancellationToken);

            public override ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken) => inner.ReadBookmarkAsync(cancellationToken);

            public override ValueTask ResetAsync(CancellationToken cancellationToken) => inner.ResetAsync(cancellationToken);

            public override async ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                var counts = await inner.WriteAsync(rows, commit, cancellationToken);
                if (rows.Length > 0)
                {
                    // Committed; the run acknowledges the batch's messages only once this returns.
                    _loaded += rows.Length;
                    Console.Out.WriteLine($"loaded {_loaded}");
                    Console.Out.Flush();
                    Console.In.ReadLine();
                }

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
