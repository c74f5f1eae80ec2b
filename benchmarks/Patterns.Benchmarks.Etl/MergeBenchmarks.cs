using System.Globalization;
using BenchmarkDotNet.Attributes;
using Microsoft.Data.Sqlite;
using Npgsql;
using NpgsqlTypes;
using Patterns.Etl;
using nietras.SeparatedValues;
using Patterns.Etl.Samples;

namespace Patterns.Benchmarks.Etl;

/// <summary>
/// A delta merged into a keyed table: 45% of its rows update existing keys, 50% are new keys, 5% are delete markers
/// (status 'deleted') of existing keys. The target has PATTERNS_ETL_MERGE_TARGET rows and the delta a tenth of that:
/// the default 1,000,000 is the CI size; 10,000,000 is the full case (a 1,000,000-row delta into 10,000,000
/// rows). DictionaryDiff is the common hand-written strategy: read the whole destination into a dictionary, diff,
/// delete the changed and deleted keys and insert the changed and new rows.
/// </summary>
[MemoryDiagnoser]
public class MergeBenchmarks
{
    private string _delta = "";
    private int _target;
    private NpgsqlDataSource _source = null!;
    private string _template = "";
    private string _database = "";

    [Params("postgres", "sqlite")]
    public string Store { get; set; } = "postgres";

    /// <summary>Gets or sets the target's rows for the <c>merge</c> runner; otherwise PATTERNS_ETL_MERGE_TARGET, or 1,000,000.</summary>
    internal int? Target { get; set; }

    private static int TargetRows =>
        int.TryParse(Environment.GetEnvironmentVariable("PATTERNS_ETL_MERGE_TARGET"), CultureInfo.InvariantCulture, out var rows) && rows > 0 ? rows : 1_000_000;

    private string SqliteConnectionString => $"Data Source={_database};Pooling=False";

    // Synchronous: the in-process toolchain does not await an async GlobalSetup before IterationSetup.
    [GlobalSetup]
    public void Setup() => SetupAsync().GetAwaiter().GetResult();

    private async Task SetupAsync()
    {
        _target = Target ?? TargetRows;
        var baseCsv = EtlData.Csv(_target);
        _delta = WriteDelta(_target);
        if (Store == "postgres")
        {
            _source = NpgsqlDataSource.Create(EtlData.PostgresConnectionString);
            await ExecuteAsync("DROP TABLE IF EXISTS etl_merge_template");
            await global::Patterns.Etl.Etl.From(Csv.Read<Order>(baseCsv)).To(Postgres.Load(new PostgresSinkOptions<Order> { DataSource = _source, Table = "etl_merge_template", Schema = Order.Schema }), "merge-template").RunAsync(new EtlRunOptions { Bookmarks = false });
        }
        else
        {
            _template = Path.Combine(Path.GetTempPath(), $"patterns-etl-merge-template-{_target}.db");
            if (!File.Exists(_template))
            {
                await global::Patterns.Etl.Etl.From(Csv.Read<Order>(baseCsv)).To(Sqlite.Merge<Order>($"Data Source={_template}.tmp;Pooling=False", "orders", "id"), "template").RunAsync(new EtlRunOptions { Bookmarks = false });
                using (var connection = new SqliteConnection($"Data Source={_template}.tmp;Pooling=False"))
                {
                    connection.Open();
                    using var checkpoint = connection.CreateCommand();
                    checkpoint.CommandText = "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;";
                    checkpoint.ExecuteNonQuery();
                }

                File.Move(_template + ".tmp", _template);
            }
        }
    }

    [IterationSetup]
    public void ResetTarget()
    {
        if (Store == "postgres")
        {
            ExecuteAsync("DROP TABLE IF EXISTS etl_merge_target; CREATE TABLE etl_merge_target AS SELECT * FROM etl_merge_template; ALTER TABLE etl_merge_target ADD PRIMARY KEY (id); DROP TABLE IF EXISTS etl_merge_target_etl_seen").GetAwaiter().GetResult();
        }
        else
        {
            _database = Path.Combine(Path.GetTempPath(), $"patterns-etl-merge-{Guid.NewGuid():N}.db");
            File.Copy(_template, _database);
        }
    }

    [IterationCleanup]
    public void DeleteTarget()
    {
        if (Store == "sqlite")
        {
            foreach (var suffix in new[] { "", "-wal", "-shm" })
            {
                File.Delete(_database + suffix);
            }
        }
    }

    [GlobalCleanup]
    public void Cleanup() => CleanupAsync().GetAwaiter().GetResult();

    private async Task CleanupAsync()
    {
        if (Store == "postgres")
        {
            await ExecuteAsync("DROP TABLE IF EXISTS etl_merge_target; DROP TABLE IF EXISTS etl_merge_template");
            await _source.DisposeAsync();
        }
    }

    [Benchmark(Baseline = true)]
    public async Task<long> DictionaryDiff()
    {
        var delta = await ReadDeltaAsync();
        return Store == "postgres" ? await DictionaryDiffPostgresAsync(delta) : DictionaryDiffSqlite(delta);
    }

    [Benchmark]
    public async Task<long> Patterns()
    {
        EtlSink<Order> sink = Store == "postgres"
            ? Postgres.Load(new PostgresSinkOptions<Order> { DataSource = _source, Table = "etl_merge_target", Schema = Order.Schema, Mode = EtlLoadMode.Merge, Key = ["id"], Deleted = IsDelete, CreateTable = false })
            : Sqlite.Load(new SqliteSinkOptions<Order> { ConnectionString = SqliteConnectionString, Table = "orders", Schema = Order.Schema, Mode = EtlLoadMode.Merge, Key = ["id"], Deleted = IsDelete, CreateTable = false });
        var result = await global::Patterns.Etl.Etl.From(Csv.Read<Order>(_delta)).To(sink, "merge").RunAsync(new EtlRunOptions { Restart = true });
        return result.RowsChanged;
    }

    private static bool IsDelete(Order order) => order.Status == "deleted";

    private async Task<List<Order>> ReadDeltaAsync()
    {
        var rows = new List<Order>();
        using var reader = Sep.Reader(o => o with { Unescape = true }).FromFile(_delta);
        foreach (var row in reader)
        {
            rows.Add(new Order(row[0].Parse<int>(), row[1].Parse<long>(), decimal.Parse(row[2].Span, CultureInfo.InvariantCulture), DateTime.Parse(row[3].Span, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal), row[4].ToString(), row[5].ToString(), row[6].ToString(), row[7].ToString(), row[8].Span.IsEmpty ? null : row[8].ToString(), row[9].ToString()));
        }

        await Task.CompletedTask;
        return rows;
    }

    private async Task<long> DictionaryDiffPostgresAsync(List<Order> delta)
    {
        var existing = new Dictionary<int, Order>();
        await using (var command = _source.CreateCommand("SELECT id, customer_id, amount, placed_at, status, region, product, channel, note, email FROM etl_merge_target"))
        await using (var reader = await command.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                existing[reader.GetInt32(0)] = new Order(reader.GetInt32(0), reader.GetInt64(1), reader.GetDecimal(2), reader.GetDateTime(3), reader.GetString(4), reader.GetString(5), reader.GetString(6), reader.GetString(7), reader.IsDBNull(8) ? null : reader.GetString(8), reader.GetString(9));
            }
        }

        var removed = delta.Where(o => IsDelete(o) && existing.ContainsKey(o.Id)).Select(o => o.Id).ToList();
        var changed = delta.Where(o => !IsDelete(o) && (!existing.TryGetValue(o.Id, out var old) || old != o)).ToList();
        var deletes = changed.Where(o => existing.ContainsKey(o.Id)).Select(o => o.Id).Concat(removed).ToArray();
        await using var connection = await _source.OpenConnectionAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        await using (var delete = new NpgsqlCommand("DELETE FROM etl_merge_target WHERE id = ANY($1)", connection, transaction))
        {
            delete.Parameters.Add(new NpgsqlParameter<int[]> { TypedValue = deletes });
            await delete.ExecuteNonQueryAsync();
        }

        await using (var importer = await connection.BeginBinaryImportAsync("COPY etl_merge_target (id, customer_id, amount, placed_at, status, region, product, channel, note, email) FROM STDIN (FORMAT BINARY)"))
        {
            foreach (var o in changed)
            {
                CsvToPostgresBenchmarks.Write(importer, o.Id, o.CustomerId, o.Amount, o.PlacedAt, o.Status, o.Region, o.Product, o.Channel, o.Note, o.Email);
            }

            await importer.CompleteAsync();
        }

        await transaction.CommitAsync();
        return changed.Count + removed.Count;
    }

    private long DictionaryDiffSqlite(List<Order> delta)
    {
        using var connection = new SqliteConnection(SqliteConnectionString);
        connection.Open();
        var existing = new Dictionary<int, Order>();
        using (var command = connection.CreateCommand())
        {
            command.CommandText = "SELECT id, customer_id, amount, placed_at, status, region, product, channel, note, email FROM orders";
            using var reader = command.ExecuteReader();
            while (reader.Read())
            {
                existing[reader.GetInt32(0)] = new Order(reader.GetInt32(0), reader.GetInt64(1), reader.GetDecimal(2), DateTime.SpecifyKind(reader.GetDateTime(3), DateTimeKind.Utc), reader.GetString(4), reader.GetString(5), reader.GetString(6), reader.GetString(7), reader.IsDBNull(8) ? null : reader.GetString(8), reader.GetString(9));
            }
        }

        var removed = delta.Where(o => IsDelete(o) && existing.ContainsKey(o.Id)).Select(o => o.Id).ToList();
        var changed = delta.Where(o => !IsDelete(o) && (!existing.TryGetValue(o.Id, out var old) || old != o)).ToList();
        using var transaction = connection.BeginTransaction();
        using (var delete = connection.CreateCommand())
        {
            delete.CommandText = "DELETE FROM orders WHERE id = $id";
            var id = delete.Parameters.Add("$id", SqliteType.Integer);
            foreach (var key in changed.Where(o => existing.ContainsKey(o.Id)).Select(o => o.Id).Concat(removed))
            {
                id.Value = key;
                delete.ExecuteNonQuery();
            }
        }

        using (var insert = connection.CreateCommand())
        {
            insert.CommandText = "INSERT INTO orders (id, customer_id, amount, placed_at, status, region, product, channel, note, email) VALUES ($id, $customer, $amount, $placed, $status, $region, $product, $channel, $note, $email)";
            var p = new[] { "$id", "$customer", "$amount", "$placed", "$status", "$region", "$product", "$channel", "$note", "$email" }.Select(n => insert.Parameters.Add(n, SqliteType.Text)).ToArray();
            foreach (var o in changed)
            {
                p[0].Value = o.Id;
                p[1].Value = o.CustomerId;
                p[2].Value = o.Amount;
                p[3].Value = o.PlacedAt;
                p[4].Value = o.Status;
                p[5].Value = o.Region;
                p[6].Value = o.Product;
                p[7].Value = o.Channel;
                p[8].Value = (object?)o.Note ?? DBNull.Value;
                p[9].Value = o.Email;
                insert.ExecuteNonQuery();
            }
        }

        transaction.Commit();
        return changed.Count + removed.Count;
    }

    /// <summary>The delta: a tenth of the target's size, 45% updates of existing keys, 50% new keys, 5% delete markers of existing keys.</summary>
    private static string WriteDelta(int target)
    {
        var path = Path.Combine(Path.GetTempPath(), $"patterns-etl-delta-deletes-{target}-{EtlData.Seed}.csv");
        if (File.Exists(path))
        {
            return path;
        }

        var size = target / 10;
        var existing = new Random(EtlData.Seed);
        var originals = new Dictionary<int, Order>();
        var stride = target / (size / 2);
        var picked = new HashSet<int>();
        for (var i = 0; i < size / 2; i++)
        {
            picked.Add((i * stride) + 1);
        }

        for (var id = 1; id <= target; id++)
        {
            var order = OrderData.Make(existing, id);
            if (picked.Contains(id))
            {
                originals[id] = order;
            }
        }

        using var writer = new StreamWriter(path + ".tmp");
        writer.Write(OrderData.Header + "\n");
        var updates = (int)(size * 0.45);
        var index = 0;
        foreach (var order in originals.Values)
        {
            var row = index++ < updates ? order with { Amount = order.Amount + 1, Status = "updated" } : order with { Status = "deleted" };
            writer.Write(OrderData.Line(row) + "\n");
        }

        var fresh = new Random(EtlData.Seed + 1);
        for (var i = 0; i < size / 2; i++)
        {
            writer.Write(OrderData.Line(OrderData.Make(fresh, target + 1 + i)) + "\n");
        }

        writer.Close();
        File.Move(path + ".tmp", path, overwrite: true);
        return path;
    }

    private async Task ExecuteAsync(string sql)
    {
        await using var command = _source.CreateCommand(sql);
        await command.ExecuteNonQueryAsync();
    }
}
