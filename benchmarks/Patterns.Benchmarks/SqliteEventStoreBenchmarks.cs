using System.Threading.Channels;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using Microsoft.Data.Sqlite;
using Patterns.Sqlite;
using Patterns.Storage;

namespace Patterns.Benchmarks;

/// <summary>
/// The SQLite event store against plain Microsoft.Data.Sqlite doing the same writes with the same durability (WAL,
/// <c>synchronous=FULL</c>) into a table of the same shape and indexes. One operation is one event appended (or read),
/// so every row reads per event. Each benchmark gets its own database file in a fresh temporary directory.
/// </summary>
/// <remarks>
/// Rows are grouped by category, each with its own baseline: batches (100 events in one transaction), concurrent
/// single-event appends from 16 tasks (against a hand-written single writer that commits whatever is waiting as one
/// transaction: the real floor for concurrent appends on SQLite, which has one writer), and reading a 10,000-event stream.
/// </remarks>
[Config(typeof(BenchmarkConfig))]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class SqliteEventStoreBenchmarks
{
    /// <summary>Events per batch append.</summary>
    public const int Batch = 100;

    /// <summary>Concurrent tasks.</summary>
    public const int Tasks = 16;

    /// <summary>Single-event appends each task makes per invocation.</summary>
    public const int PerTask = 8;

    /// <summary>Events in the stream that is read.</summary>
    public const int StreamLength = 10_000;

    private const string RawSchema = """
        CREATE TABLE IF NOT EXISTS raw_events (
            position INTEGER PRIMARY KEY,
            stream_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            event_id BLOB NOT NULL,
            event_type TEXT NOT NULL,
            data BLOB NOT NULL,
            metadata BLOB,
            correlation_id TEXT,
            causation_id TEXT,
            timestamp INTEGER NOT NULL);
        CREATE UNIQUE INDEX IF NOT EXISTS raw_events_stream ON raw_events (stream_id, version);
        CREATE INDEX IF NOT EXISTS raw_events_event_id ON raw_events (event_id);
        """;

    private const string RawInsert = """
        INSERT INTO raw_events (stream_id, version, event_id, event_type, data, metadata, correlation_id, causation_id, timestamp)
        VALUES (@stream, @version, @id, 'bench.happened', @data, NULL, NULL, NULL, @timestamp)
        """;

    private static readonly byte[] Payload = System.Text.Encoding.UTF8.GetBytes("{\"account\":\"acc-0001\",\"amount\":125.50,\"currency\":\"EUR\",\"note\":\"benchmark payload\"}");
    private static readonly DateTimeOffset Timestamp = new(2025, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private readonly SemaphoreSlim _rawGate = new(1, 1);
    private Channel<(string Stream, long Version, TaskCompletionSource Done)>? _writerQueue;
    private Task? _writer;
    private string? _directory;
    private SqliteEventStore? _store;
    private SqliteConnection[] _raw = [];
    private SqliteCommand[] _rawInserts = [];
    private int _streams;

    [GlobalSetup(Targets = [nameof(RawInsertBatch100), nameof(RawBatchingWriterConcurrent16), nameof(RawTransactionPerAppendConcurrent16), nameof(RawTransactionPerAppendConcurrent16OwnConnections), nameof(RawReadStream10k)])]
    public void SetupRaw()
    {
        _directory = NewDirectory();
        var file = Path.Combine(_directory, "raw.db");
        _raw = new SqliteConnection[Tasks];
        _rawInserts = new SqliteCommand[Tasks];
        for (var i = 0; i < Tasks; i++)
        {
            var connection = new SqliteConnection($"Data Source={file};Pooling=False");
            connection.Open();
            Execute(connection, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY; PRAGMA busy_timeout = 30000;");
            if (i == 0)
            {
                Execute(connection, RawSchema);
            }

            var insert = connection.CreateCommand();
            insert.CommandText = RawInsert;
            insert.Parameters.Add(new SqliteParameter("@stream", SqliteType.Text));
            insert.Parameters.Add(new SqliteParameter("@version", SqliteType.Integer));
            insert.Parameters.Add(new SqliteParameter("@id", SqliteType.Blob));
            insert.Parameters.Add(new SqliteParameter("@data", SqliteType.Blob));
            insert.Parameters.Add(new SqliteParameter("@timestamp", SqliteType.Integer));
            insert.Prepare();
            _raw[i] = connection;
            _rawInserts[i] = insert;
        }

        // The stream ReadStream10k reads, written in batches.
        for (var written = 0; written < StreamLength; written += Batch)
        {
            InsertRawBatch(_raw[0], _rawInserts[0], "read-me", written);
        }

        // The batching single writer: one connection, one task; each round commits every append waiting.
        _writerQueue = Channel.CreateUnbounded<(string, long, TaskCompletionSource)>(new UnboundedChannelOptions { SingleReader = true });
        var reader = _writerQueue.Reader;
        var writerConnection = _raw[0];
        var writerInsert = _rawInserts[0];
        _writer = Task.Run(async () =>
        {
            var pending = new List<(string Stream, long Version, TaskCompletionSource Done)>(Tasks);
            while (await reader.WaitToReadAsync())
            {
                while (reader.TryRead(out var append))
                {
                    pending.Add(append);
                }

                using (var transaction = writerConnection.BeginTransaction(deferred: false))
                {
                    writerInsert.Transaction = transaction;
                    foreach (var (stream, version, _) in pending)
                    {
                        InsertRow(writerInsert, stream, version);
                    }

                    transaction.Commit();
                }

                foreach (var append in pending)
                {
                    append.Done.TrySetResult();
                }

                pending.Clear();
            }
        });
    }

    [GlobalCleanup(Targets = [nameof(RawInsertBatch100), nameof(RawBatchingWriterConcurrent16), nameof(RawTransactionPerAppendConcurrent16), nameof(RawTransactionPerAppendConcurrent16OwnConnections), nameof(RawReadStream10k)])]
    public void CleanupRaw()
    {
        _writerQueue?.Writer.TryComplete();
        _writer?.GetAwaiter().GetResult();
        foreach (var command in _rawInserts)
        {
            command.Dispose();
        }

        foreach (var connection in _raw)
        {
            connection.Dispose();
        }

        DeleteDirectory();
    }

    [GlobalSetup(Targets = [nameof(AppendBatch100), nameof(AppendOne), nameof(AppendConcurrent16), nameof(ReadStream10k)])]
    public async Task SetupStore()
    {
        _directory = NewDirectory();
        _store = new SqliteEventStore(new SqliteEventStoreOptions { ConnectionString = Path.Combine(_directory, "store.db") });
        await _store.MigrateAsync();
        for (var written = 0; written < StreamLength; written += Batch)
        {
            await _store.AppendAsync("read-me", ExpectedVersion.Exact(written), NewEvents(Batch));
        }
    }

    [GlobalCleanup(Targets = [nameof(AppendBatch100), nameof(AppendOne), nameof(AppendConcurrent16), nameof(ReadStream10k)])]
    public async Task CleanupStore()
    {
        if (_store is not null)
        {
            await _store.DisposeAsync();
        }

        DeleteDirectory();
    }

    /// <summary>Plain Microsoft.Data.Sqlite: 100 single-row inserts (one prepared command) in one transaction, to a new stream.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Batch)]
    [BenchmarkCategory("Batch")]
    public void RawInsertBatch100() => InsertRawBatch(_raw[0], _rawInserts[0], NextStream(), 0);

    /// <summary>One append of 100 events to a new stream (<see cref="ExpectedVersion.NoStream"/>).</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    [BenchmarkCategory("Batch")]
    public async Task AppendBatch100() => await _store!.AppendAsync(NextStream(), ExpectedVersion.NoStream, NewEvents(Batch));

    /// <summary>One append of one event to a long stream with <see cref="ExpectedVersion.Any"/>, awaited: one commit per event.</summary>
    [Benchmark(OperationsPerInvoke = 1)]
    [BenchmarkCategory("Single")]
    public async Task AppendOne() => await _store!.AppendAsync("one", ExpectedVersion.Any, NewEvents(1));

    /// <summary>
    /// The floor: 16 tasks handing one-row appends (8 each, one after another) to a single writer task on one connection,
    /// which inserts every append waiting in one transaction (BEGIN IMMEDIATE, INSERTs with one prepared command, COMMIT)
    /// and then completes them: group commit by hand, with the same durability (WAL, synchronous=FULL).
    /// </summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Tasks * PerTask)]
    [BenchmarkCategory("Concurrent")]
    public Task RawBatchingWriterConcurrent16()
    {
        var stream = NextStream();
        var queue = _writerQueue!.Writer;
        return Task.WhenAll(Enumerable.Range(0, Tasks).Select(t => Task.Run(async () =>
        {
            for (var i = 0; i < PerTask; i++)
            {
                var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                queue.TryWrite(($"{stream}-{t}", i + 1, done));
                await done.Task;
            }
        })));
    }

    /// <summary>
    /// 16 tasks inserting one row per transaction (BEGIN IMMEDIATE, INSERT, COMMIT), 8 times each, on one shared connection
    /// taken in turn through a <see cref="SemaphoreSlim"/>: one commit per append, without time lost waiting on SQLite's lock.
    /// </summary>
    [Benchmark(OperationsPerInvoke = Tasks * PerTask)]
    [BenchmarkCategory("Concurrent")]
    public Task RawTransactionPerAppendConcurrent16()
    {
        var stream = NextStream();
        return Task.WhenAll(Enumerable.Range(0, Tasks).Select(t => Task.Run(async () =>
        {
            for (var i = 0; i < PerTask; i++)
            {
                await _rawGate.WaitAsync();
                try
                {
                    InsertRawOne(_raw[0], _rawInserts[0], $"{stream}-{t}", i + 1);
                }
                finally
                {
                    _rawGate.Release();
                }
            }
        })));
    }

    /// <summary>
    /// The same with each task on its own connection, as naive code does: the tasks contend for SQLite's write lock, and a
    /// connection that finds it taken sleeps in SQLite's busy handler before trying again.
    /// </summary>
    [Benchmark(OperationsPerInvoke = Tasks * PerTask)]
    [BenchmarkCategory("Concurrent")]
    public Task RawTransactionPerAppendConcurrent16OwnConnections()
    {
        var stream = NextStream();
        return Task.WhenAll(Enumerable.Range(0, Tasks).Select(t => Task.Run(() =>
        {
            for (var i = 0; i < PerTask; i++)
            {
                InsertRawOne(_raw[t], _rawInserts[t], $"{stream}-{t}", i + 1);
            }
        })));
    }

    /// <summary>16 tasks appending one event at a time to their own streams, 8 times each; the store's writer groups them into shared commits.</summary>
    [Benchmark(OperationsPerInvoke = Tasks * PerTask)]
    [BenchmarkCategory("Concurrent")]
    public Task AppendConcurrent16()
    {
        var stream = NextStream();
        var store = _store!;
        return Task.WhenAll(Enumerable.Range(0, Tasks).Select(t => Task.Run(async () =>
        {
            for (var i = 0; i < PerTask; i++)
            {
                await store.AppendAsync($"{stream}-{t}", ExpectedVersion.Exact(i), NewEvents(1));
            }
        })));
    }

    /// <summary>Plain Microsoft.Data.Sqlite: SELECT the stream's 10,000 rows in version order into event objects.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = StreamLength)]
    [BenchmarkCategory("Read")]
    public int RawReadStream10k()
    {
        using var command = _raw[0].CreateCommand();
        command.CommandText = "SELECT position, stream_id, version, event_id, event_type, data, metadata, correlation_id, causation_id, timestamp FROM raw_events WHERE stream_id = 'read-me' ORDER BY version";
        using var reader = command.ExecuteReader();
        var count = 0;
        while (reader.Read())
        {
            var e = new StoredEvent(reader.GetGuid(3), reader.GetString(1), reader.GetInt64(2), reader.GetInt64(0), reader.GetString(4), (byte[])reader.GetValue(5), new DateTimeOffset(reader.GetInt64(9), TimeSpan.Zero));
            count += e.Data.Length > 0 ? 1 : 0;
        }

        return count;
    }

    /// <summary>ReadStreamAsync over a 10,000-event stream, paging (512 per page) to the end.</summary>
    [Benchmark(OperationsPerInvoke = StreamLength)]
    [BenchmarkCategory("Read")]
    public async Task<int> ReadStream10k()
    {
        var count = 0;
        await foreach (var e in _store!.ReadStreamAsync("read-me"))
        {
            count += e.Data.Length > 0 ? 1 : 0;
        }

        return count;
    }

    private static SerializedEvent[] NewEvents(int count)
    {
        var events = new SerializedEvent[count];
        for (var i = 0; i < events.Length; i++)
        {
            events[i] = new SerializedEvent(Guid.NewGuid(), "bench.happened", Payload, Timestamp);
        }

        return events;
    }

    private static void InsertRawOne(SqliteConnection connection, SqliteCommand insert, string stream, long version)
    {
        using var transaction = connection.BeginTransaction(deferred: false);
        insert.Transaction = transaction;
        InsertRow(insert, stream, version);
        transaction.Commit();
    }

    private static void InsertRawBatch(SqliteConnection connection, SqliteCommand insert, string stream, long firstVersion)
    {
        using var transaction = connection.BeginTransaction(deferred: false);
        insert.Transaction = transaction;
        for (var i = 0; i < Batch; i++)
        {
            InsertRow(insert, stream, firstVersion + i + 1);
        }

        transaction.Commit();
    }

    private static void InsertRow(SqliteCommand insert, string stream, long version)
    {
        insert.Parameters[0].Value = stream;
        insert.Parameters[1].Value = version;
        insert.Parameters[2].Value = Guid.NewGuid();
        insert.Parameters[3].Value = Payload;
        insert.Parameters[4].Value = Timestamp.UtcTicks;
        insert.ExecuteNonQuery();
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private static string NewDirectory()
    {
        var directory = Path.Combine(Path.GetTempPath(), "patterns-sqlite-bench", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        return directory;
    }

    private string NextStream() => "s-" + Interlocked.Increment(ref _streams).ToString(System.Globalization.CultureInfo.InvariantCulture);

    private void DeleteDirectory()
    {
        if (_directory is not null && Directory.Exists(_directory))
        {
            Directory.Delete(_directory, recursive: true);
        }
    }
}
