using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using JasperFx;
using JasperFx.Events;
using Marten;
using Npgsql;
using NpgsqlTypes;
using Patterns.Postgres;
using Patterns.Storage;

namespace Patterns.Benchmarks;

/// <summary>
/// The PostgreSQL event store against a plain Npgsql insert of the same rows. One operation is one event: every
/// benchmark sets <c>OperationsPerInvoke</c> to the number of events an invocation appends or reads, so times and
/// allocations are per event. The server comes from PATTERNS_POSTGRES (default: the local test database); each run
/// works in a schema of its own, dropped at the end.
/// </summary>
/// <remarks>
/// Rows are grouped by category, each with its own baseline: a 100-event append (against one raw multi-row insert),
/// 16 concurrent single-event appenders (against 16 raw connections each inserting one row per statement into a table
/// with an identity column), and reading a stream. Marten 9.62.0 does the same appends in the same run: a lightweight
/// session per append, string stream keys, <c>EventAppendMode.Quick</c> (its documented mode for append throughput),
/// one <c>SaveChangesAsync</c> (one transaction) per append. Every side commits with the server's
/// <c>synchronous_commit</c> (on by default): each transaction waits for its WAL flush.
/// </remarks>
[Config(typeof(BenchmarkConfig))]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class PostgresEventStoreBenchmarks
{
    /// <summary>Events per batch append.</summary>
    public const int BatchSize = 100;

    /// <summary>Concurrent appenders.</summary>
    public const int Writers = 16;

    /// <summary>Single-event appends each concurrent appender makes per invocation.</summary>
    public const int AppendsPerWriter = 8;

    /// <summary>Events in the stream that <see cref="ReadStream10k"/> reads.</summary>
    public const int StreamLength = 10_000;

    private const string DefaultConnectionString = "Host=127.0.0.1;Port=5432;Username=postgres;Password=postgres;Database=patterns_tests";

    // A typical small JSON event body (72 bytes).
    private static readonly byte[] Body = """{"orderId":"7c4e2d1a","customer":"c-1042","amount":129.95,"currency":"EUR"}"""u8.ToArray();
    private static readonly DateTimeOffset Timestamp = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private NpgsqlDataSource? _dataSource;
    private DocumentStore? _marten;
    private string _connectionString = "";
    private PostgresEventStore? _store;
    private string _schema = "";
    private string _rawInsert = "";
    private long _streams;
    private long _rawPosition;

    [GlobalSetup]
    public async Task Setup()
    {
        var connectionString = Environment.GetEnvironmentVariable("PATTERNS_POSTGRES") is { Length: > 0 } configured ? configured : DefaultConnectionString;
        _connectionString = connectionString;
        _schema = "bench_" + Guid.NewGuid().ToString("N")[..12];
        _dataSource = NpgsqlDataSource.Create(connectionString);
        _store = new PostgresEventStore(new PostgresEventStoreOptions { DataSource = _dataSource, Schema = _schema });
        await _store.MigrateAsync();

        // The baseline's table has the events table's columns, keys and indexes.
        await using (var create = _dataSource.CreateCommand($"CREATE TABLE \"{_schema}\".raw_events (LIKE \"{_schema}\".events INCLUDING ALL)"))
        {
            await create.ExecuteNonQueryAsync();
        }

        // The concurrent baseline's table: the same columns with the position from an identity column, so concurrent
        // inserts need no coordination beyond the sequence.
        await using (var create = _dataSource.CreateCommand($"""
            CREATE TABLE "{_schema}".raw_identity_events (
                position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                stream_id text NOT NULL, version bigint NOT NULL, event_id uuid NOT NULL, event_type text NOT NULL,
                data bytea NOT NULL, metadata bytea, correlation_id text, causation_id text, created_at timestamptz NOT NULL)
            """))
        {
            await create.ExecuteNonQueryAsync();
        }

        _rawInsert = $"""
            INSERT INTO "{_schema}".raw_events (position, stream_id, version, event_id, event_type, data, metadata, correlation_id, causation_id, created_at)
            SELECT $1 + u.ord - 1, $2, u.ord, u.event_id, u.event_type, u.data, u.metadata, u.correlation_id, u.causation_id, u.created_at
              FROM unnest($3, $4, $5, $6, $7, $8, $9) WITH ORDINALITY AS u(event_id, event_type, data, metadata, correlation_id, causation_id, created_at, ord)
            """;
    }

    [GlobalSetup(Target = nameof(ReadStream10k))]
    public async Task SetupRead()
    {
        await Setup();
        for (var i = 0; i < StreamLength / 500; i++)
        {
            await _store!.AppendAsync("long", ExpectedVersion.Any, NewEvents(500));
        }
    }

    [GlobalSetup(Targets = [nameof(MartenAppendBatch100), nameof(MartenAppendConcurrent16)])]
    public async Task SetupMarten()
    {
        await Setup();
        _marten = MartenBench.CreateStore(_connectionString, _schema + "_marten");
        await _marten.Storage.ApplyAllConfiguredChangesToDatabaseAsync();
    }

    [GlobalCleanup]
    public async Task Cleanup()
    {
        if (_marten is not null)
        {
            await using (var drop = _dataSource!.CreateCommand($"DROP SCHEMA IF EXISTS \"{_schema}_marten\" CASCADE"))
            {
                await drop.ExecuteNonQueryAsync();
            }

            _marten.Dispose();
        }

        if (_store is not null)
        {
            await _store.DisposeAsync();
        }

        if (_dataSource is not null)
        {
            await using (var drop = _dataSource.CreateCommand($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE"))
            {
                await drop.ExecuteNonQueryAsync();
            }

            await _dataSource.DisposeAsync();
        }
    }

    /// <summary>
    /// The floor: one Npgsql command inserting 100 rows (one transaction, one round trip) from the same arrays the
    /// store sends, into a table shaped like the events table, with no version check, stream row or notification.
    /// </summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = BatchSize)]
    [BenchmarkCategory("Batch")]
    public async Task RawInsertBatch100()
    {
        var events = NewEvents(BatchSize);
        var ids = new Guid[BatchSize];
        var types = new string[BatchSize];
        var data = new byte[BatchSize][];
        var metadata = new byte[]?[BatchSize];
        var correlationIds = new string?[BatchSize];
        var causationIds = new string?[BatchSize];
        var timestamps = new DateTime[BatchSize];
        for (var i = 0; i < BatchSize; i++)
        {
            ids[i] = events[i].EventId;
            types[i] = events[i].EventType;
            data[i] = Body;
            timestamps[i] = events[i].Timestamp.UtcDateTime;
        }

        var first = _rawPosition + 1;
        _rawPosition += BatchSize;
        await using var command = _dataSource!.CreateCommand(_rawInsert);
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = first });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = "raw-" + ++_streams });
        command.Parameters.Add(new NpgsqlParameter<Guid[]> { TypedValue = ids, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Uuid });
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = types, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<byte[][]> { TypedValue = data, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
        command.Parameters.Add(new NpgsqlParameter<byte[]?[]> { TypedValue = metadata, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
        command.Parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = correlationIds, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = causationIds, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<DateTime[]> { TypedValue = timestamps, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.TimestampTz });
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>One append of 100 events to a new stream (expected version: no stream).</summary>
    [Benchmark(OperationsPerInvoke = BatchSize)]
    [BenchmarkCategory("Batch")]
    public async Task AppendBatch100() =>
        await _store!.AppendAsync("batch-" + ++_streams, ExpectedVersion.NoStream, NewEvents(BatchSize));

    /// <summary>Marten: one lightweight session starting a new stream with 100 events, one <c>SaveChangesAsync</c>.</summary>
    [Benchmark(OperationsPerInvoke = BatchSize)]
    [BenchmarkCategory("Batch")]
    public async Task MartenAppendBatch100()
    {
        var events = new object[BatchSize];
        for (var i = 0; i < events.Length; i++)
        {
            events[i] = MartenBench.NewEvent();
        }

        await using var session = _marten!.LightweightSession();
        session.Events.StartStream("batch-" + ++_streams, events);
        await session.SaveChangesAsync();
    }

    /// <summary>
    /// The floor for concurrent appenders: 16 tasks, each on its own pooled connection, inserting one row per statement
    /// (its own transaction and WAL flush) 8 times into a table whose position is an identity column.
    /// </summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Writers * AppendsPerWriter)]
    [BenchmarkCategory("Concurrent")]
    public async Task RawConcurrent16()
    {
        var round = ++_streams;
        var dataSource = _dataSource!;
        var sql = $"""
            INSERT INTO "{_schema}".raw_identity_events (stream_id, version, event_id, event_type, data, created_at)
            VALUES ($1, $2, $3, 'order-placed', $4, $5)
            """;
        var writers = new Task[Writers];
        for (var w = 0; w < Writers; w++)
        {
            var streamId = $"raw-{round}-{w}";
            writers[w] = Task.Run(async () =>
            {
                await using var connection = await dataSource.OpenConnectionAsync();
                for (var i = 0; i < AppendsPerWriter; i++)
                {
                    await using var insert = new NpgsqlCommand(sql, connection);
                    insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = streamId });
                    insert.Parameters.Add(new NpgsqlParameter<long> { TypedValue = i + 1 });
                    insert.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = Guid.NewGuid() });
                    insert.Parameters.Add(new NpgsqlParameter<byte[]> { TypedValue = Body });
                    insert.Parameters.Add(new NpgsqlParameter<DateTime> { TypedValue = Timestamp.UtcDateTime });
                    await insert.ExecuteNonQueryAsync();
                }
            });
        }

        await Task.WhenAll(writers);
    }

    /// <summary>Marten: 16 tasks, each appending one event at a time to its own stream (a lightweight session and one <c>SaveChangesAsync</c> per append), 8 times.</summary>
    [Benchmark(OperationsPerInvoke = Writers * AppendsPerWriter)]
    [BenchmarkCategory("Concurrent")]
    public async Task MartenAppendConcurrent16()
    {
        var round = ++_streams;
        var store = _marten!;
        var writers = new Task[Writers];
        for (var w = 0; w < Writers; w++)
        {
            var streamId = $"marten-{round}-{w}";
            writers[w] = Task.Run(async () =>
            {
                for (var i = 0; i < AppendsPerWriter; i++)
                {
                    await using var session = store.LightweightSession();
                    session.Events.Append(streamId, MartenBench.NewEvent());
                    await session.SaveChangesAsync();
                }
            });
        }

        await Task.WhenAll(writers);
    }

    /// <summary>16 tasks, each appending one event at a time to its own stream, 8 times.</summary>
    [Benchmark(OperationsPerInvoke = Writers * AppendsPerWriter)]
    [BenchmarkCategory("Concurrent")]
    public async Task AppendConcurrent16()
    {
        var round = ++_streams;
        var store = _store!;
        var writers = new Task[Writers];
        for (var w = 0; w < Writers; w++)
        {
            var streamId = $"concurrent-{round}-{w}";
            writers[w] = Task.Run(async () =>
            {
                for (var i = 0; i < AppendsPerWriter; i++)
                {
                    await store.AppendAsync(streamId, ExpectedVersion.Any, [NewEvent()]);
                }
            });
        }

        await Task.WhenAll(writers);
    }

    /// <summary>Reads a 10,000-event stream forward, in pages of the default 500 rows.</summary>
    [Benchmark(OperationsPerInvoke = StreamLength)]
    [BenchmarkCategory("Read")]
    public async Task<long> ReadStream10k()
    {
        long versions = 0;
        await foreach (var e in _store!.ReadStreamAsync("long"))
        {
            versions += e.Version;
        }

        return versions;
    }

    private static SerializedEvent NewEvent() => new(Guid.NewGuid(), "order-placed", Body, Timestamp);

    private static SerializedEvent[] NewEvents(int count)
    {
        var events = new SerializedEvent[count];
        for (var i = 0; i < events.Length; i++)
        {
            events[i] = NewEvent();
        }

        return events;
    }
}

/// <summary>The event Marten appends: the same fields as the raw and Patterns rows' JSON body.</summary>
public sealed record MartenOrderPlaced(string OrderId, string Customer, decimal Amount, string Currency);

/// <summary>How the Marten rows configure Marten (the same for appends and projections).</summary>
public static class MartenBench
{
    /// <summary>A store in its own schema: string stream keys, quick appends (Marten's documented mode for append throughput), schema created on start.</summary>
    public static DocumentStore CreateStore(string connectionString, string schema, Action<StoreOptions>? configure = null) => DocumentStore.For(o =>
    {
        o.Connection(connectionString);
        o.DatabaseSchemaName = schema;
        o.Events.StreamIdentity = StreamIdentity.AsString;
        o.Events.AppendMode = EventAppendMode.Quick;
        o.AutoCreateSchemaObjects = AutoCreate.All;
        configure?.Invoke(o);
    });

    /// <summary>A new event.</summary>
    public static MartenOrderPlaced NewEvent() => new("7c4e2d1a", "c-1042", 129.95m, "EUR");
}
