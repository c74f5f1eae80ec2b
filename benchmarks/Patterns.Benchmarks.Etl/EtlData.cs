using System.Globalization;
using Patterns.Etl.Samples;

namespace Patterns.Benchmarks.Etl;

/// <summary>The benchmark data: a generated CSV of orders with a fixed seed (12 columns... see OrderData), cached under /tmp by row count.</summary>
internal static class EtlData
{
    public const int Seed = 20261206;

    /// <summary>Gets the rows of the load benchmarks: PATTERNS_ETL_ROWS, or 1,000,000.</summary>
    public static int Rows =>
        int.TryParse(Environment.GetEnvironmentVariable("PATTERNS_ETL_ROWS"), CultureInfo.InvariantCulture, out var rows) && rows > 0 ? rows : 1_000_000;

    public static string PostgresConnectionString =>
        Environment.GetEnvironmentVariable("PATTERNS_POSTGRES") is { Length: > 0 } configured ? configured : "Host=127.0.0.1;Port=5432;Username=postgres;Password=postgres;Database=patterns_tests";

    public static string Csv(int rows)
    {
        var path = Path.Combine(Path.GetTempPath(), $"patterns-etl-orders-{rows}-{Seed}.csv");
        if (!File.Exists(path))
        {
            var temporary = path + ".tmp";
            OrderData.Write(temporary, rows, Seed);
            File.Move(temporary, path, overwrite: true);
        }

        return path;
    }
}

/// <summary>
/// The order as CsvHelper 34 maps it. CsvHelper 34.0.0 has no reflection mapping any more: its docs map a
/// [CsvRecord] partial type with a source generator, so that is the peer measured.
/// </summary>
[CsvHelper.CsvRecord]
public sealed partial class OrderPoco
{
    [CsvHelper.CsvColumn("id")]
    public int Id { get; set; }

    [CsvHelper.CsvColumn("customer_id")]
    public long CustomerId { get; set; }

    [CsvHelper.CsvColumn("amount")]
    public decimal Amount { get; set; }

    [CsvHelper.CsvColumn("placed_at")]
    public DateTime PlacedAt { get; set; }

    [CsvHelper.CsvColumn("status")]
    public string Status { get; set; } = "";

    [CsvHelper.CsvColumn("region")]
    public string Region { get; set; } = "";

    [CsvHelper.CsvColumn("product")]
    public string Product { get; set; } = "";

    [CsvHelper.CsvColumn("channel")]
    public string Channel { get; set; } = "";

    [CsvHelper.CsvColumn("note")]
    public string? Note { get; set; }

    [CsvHelper.CsvColumn("email")]
    public string Email { get; set; } = "";
}
