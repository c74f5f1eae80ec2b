using System.Globalization;
using BenchmarkDotNet.Attributes;
using Microsoft.Data.Sqlite;
using nietras.SeparatedValues;
using Patterns.Etl;
using Patterns.Etl.Samples;

namespace Patterns.Benchmarks.Etl;

/// <summary>
/// The generated orders CSV loaded into a SQLite table. Raw is the loop Microsoft's docs show for bulk inserts: one
/// transaction, one prepared single-row INSERT reused with its parameters' values set per row (parsed with Sep).
/// </summary>
[MemoryDiagnoser]
public class CsvToSqliteBenchmarks
{
    private const string Create = "CREATE TABLE orders (id INTEGER, customer_id INTEGER, amount TEXT, placed_at TEXT, status TEXT, region TEXT, product TEXT, channel TEXT, note TEXT, email TEXT)";
    private string _csv = "";
    private string _database = "";

    private string ConnectionString => $"Data Source={_database};Pooling=False";

    [GlobalSetup]
    public void Setup() => _csv = EtlData.Csv(EtlData.Rows);

    [IterationSetup]
    public void NewDatabase()
    {
        _database = Path.Combine(Path.GetTempPath(), $"patterns-etl-bench-{Guid.NewGuid():N}.db");
        using var connection = new SqliteConnection(ConnectionString);
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; " + Create;
        command.ExecuteNonQuery();
    }

    [IterationCleanup]
    public void DeleteDatabase()
    {
        foreach (var suffix in new[] { "", "-wal", "-shm" })
        {
            File.Delete(_database + suffix);
        }
    }

    [Benchmark(Baseline = true)]
    public int Raw()
    {
        using var connection = new SqliteConnection(ConnectionString);
        connection.Open();
        using var transaction = connection.BeginTransaction();
        using var command = connection.CreateCommand();
        command.CommandText = "INSERT INTO orders (id, customer_id, amount, placed_at, status, region, product, channel, note, email) VALUES ($id, $customer, $amount, $placed, $status, $region, $product, $channel, $note, $email)";
        var parameters = new[] { "$id", "$customer", "$amount", "$placed", "$status", "$region", "$product", "$channel", "$note", "$email" }
            .Select(name => { var p = command.CreateParameter(); p.ParameterName = name; command.Parameters.Add(p); return p; }).ToArray();
        var rows = 0;
        using (var reader = Sep.Reader(o => o with { Unescape = true, CultureInfo = CultureInfo.InvariantCulture }).FromFile(_csv))
        {
            foreach (var row in reader)
            {
                parameters[0].Value = row[0].Parse<int>();
                parameters[1].Value = row[1].Parse<long>();
                parameters[2].Value = row[2].Parse<decimal>();
                parameters[3].Value = DateTime.Parse(row[3].Span, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal);
                for (var c = 4; c < 10; c++)
                {
                    parameters[c].Value = row[c].Span.IsEmpty ? DBNull.Value : row[c].ToString();
                }

                rows += command.ExecuteNonQuery();
            }
        }

        transaction.Commit();
        return rows;
    }

    [Benchmark]
    public async Task<long> Patterns()
    {
        var result = await global::Patterns.Etl.Etl.From(global::Patterns.Etl.Csv.Read<Order>(_csv))
            .To(Sqlite.Load(new SqliteSinkOptions<Order> { ConnectionString = ConnectionString, Table = "orders", Schema = Order.Schema, CreateTable = false }), "bench")
            .RunAsync();
        return result.RowsInserted;
    }
}
