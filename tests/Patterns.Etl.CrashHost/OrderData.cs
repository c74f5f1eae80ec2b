using System.Globalization;
using System.Text;
using Patterns.Etl;

namespace Patterns.Etl.Samples;

/// <summary>The order record of the ETL tests, benchmarks and sample: 12 columns (int, long, decimal, timestamp, six strings).</summary>
public sealed record Order(int Id, long CustomerId, decimal Amount, DateTime PlacedAt, string Status, string Region, string Product, string Channel, string? Note, string Email)
    : IEtlRecord<Order>
{
    public static EtlSchema<Order> Schema { get; } =
        EtlSchema.For(r => new Order(r.Int32(0), r.Int64(1), r.Decimal(2), r.DateTime(3), r.String(4), r.String(5), r.String(6), r.String(7), r.NullableString(8), r.String(9)))
            .Column("id", o => o.Id)
            .Column("customer_id", o => o.CustomerId)
            .Column("amount", o => o.Amount)
            .Column("placed_at", o => o.PlacedAt)
            .Column("status", o => o.Status)
            .Column("region", o => o.Region)
            .Column("product", o => o.Product)
            .Column("channel", o => o.Channel)
            .Column("note", o => o.Note)
            .Column("email", o => o.Email);
}

/// <summary>Generates order CSV files with a fixed seed: 5% of string fields quoted (with a comma or a quote inside), optionally a share of malformed rows.</summary>
public static class OrderData
{
    private static readonly string[] Statuses = ["new", "paid", "shipped", "delivered", "cancelled", "returned"];
    private static readonly string[] Regions = ["north", "south", "east", "west", "central"];
    private static readonly string[] Channels = ["web", "mobile", "store", "phone"];

    public static readonly string Header = "id,customer_id,amount,placed_at,status,region,product,channel,note,email";

    /// <summary>Writes <paramref name="rows"/> orders with ids <paramref name="firstId"/>...; every <paramref name="badEvery"/>th row (if set) is malformed. Returns the line numbers (1-based, header is line 1) of malformed rows.</summary>
    public static List<long> Write(string path, int rows, int seed = 42, int firstId = 1, int badEvery = 0, Func<int, int, Order, Order?>? change = null)
    {
        var random = new Random(seed);
        var bad = new List<long>();
        using var writer = new StreamWriter(path, false, new UTF8Encoding(false), 1 << 16);
        writer.Write(Header);
        writer.Write('\n');
        var text = new StringBuilder(256);
        long line = 1;
        for (var i = 0; i < rows; i++)
        {
            var order = Make(random, firstId + i);
            if (change is not null)
            {
                var changed = change(i, firstId + i, order);
                if (changed is null)
                {
                    continue;
                }

                order = changed;
            }

            text.Clear();
            if (badEvery > 0 && i % badEvery == badEvery - 1)
            {
                // Three kinds of bad row: a non-numeric amount, a missing field, a bad timestamp.
                switch (i / badEvery % 3)
                {
                    case 0:
                        text.Append(Line(order).Replace($",{order.Amount.ToString(CultureInfo.InvariantCulture)},", ",12.x4,", StringComparison.Ordinal));
                        break;
                    case 1:
                        text.Append(CultureInfo.InvariantCulture, $"{order.Id},{order.CustomerId},{order.Amount}");
                        break;
                    default:
                        text.Append(Line(order).Replace(order.PlacedAt.ToString("O", CultureInfo.InvariantCulture), "2024-13-45T99:00:00Z", StringComparison.Ordinal));
                        break;
                }

                bad.Add(line + 1);
            }
            else
            {
                text.Append(Line(order));
            }

            writer.Write(text);
            writer.Write('\n');
            line++;
        }

        return bad;
    }

    public static Order Make(Random random, int id)
    {
        var note = random.Next(20) == 0 ? $"gift, wrap \"{random.Next(100)}\"" : random.Next(3) == 0 ? null : "note " + random.Next(1000).ToString(CultureInfo.InvariantCulture);
        var product = random.Next(40) == 0 ? $"widget, size {random.Next(10)}" : "product-" + random.Next(500).ToString(CultureInfo.InvariantCulture);
        return new Order(
            id,
            random.NextInt64(1, 1_000_000),
            Math.Round((decimal)random.NextDouble() * 1000m, 2),
            new DateTime(2024, 1, 1, 0, 0, 0, DateTimeKind.Utc).AddSeconds(random.Next(0, 31_536_000)),
            Statuses[random.Next(Statuses.Length)],
            Regions[random.Next(Regions.Length)],
            product,
            Channels[random.Next(Channels.Length)],
            note,
            $"user{random.Next(100_000)}@example.com");
    }

    public static string Line(Order o) => string.Join(
        ',',
        o.Id.ToString(CultureInfo.InvariantCulture),
        o.CustomerId.ToString(CultureInfo.InvariantCulture),
        o.Amount.ToString(CultureInfo.InvariantCulture),
        o.PlacedAt.ToString("O", CultureInfo.InvariantCulture),
        Field(o.Status),
        Field(o.Region),
        Field(o.Product),
        Field(o.Channel),
        Field(o.Note),
        Field(o.Email));

    private static string Field(string? value) =>
        value is null ? string.Empty : value.AsSpan().IndexOfAny(",\"\n") >= 0 ? "\"" + value.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : value;
}
