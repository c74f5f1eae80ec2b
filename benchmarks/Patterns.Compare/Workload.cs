using System.Diagnostics;
using Patterns.Messaging;

namespace Patterns.Compare;

/// <summary>An address line of an order.</summary>
public sealed record Address(string Name, string Street, string City, string PostalCode, string Country);

/// <summary>One line of an order.</summary>
public sealed record OrderLine(string Sku, string Description, int Quantity, decimal UnitPrice);

/// <summary>
/// The one message every row carries: an order was placed. About 560 bytes as JSON (three lines, a shipping address),
/// the size of a typical business event. <see cref="SentAt"/> is the <see cref="Stopwatch"/> timestamp taken when the
/// producer created it, so the handler can measure end-to-end latency in the same process.
/// </summary>
[MessageName("compare.order-placed")]
public sealed record OrderPlaced(
    Guid OrderId,
    int Sequence,
    string CustomerId,
    string Region,
    DateTimeOffset PlacedAt,
    Address ShipTo,
    IReadOnlyList<OrderLine> Lines,
    string Currency,
    long SentAt);

/// <summary>The reply of the request-response rows.</summary>
[MessageName("compare.order-accepted")]
public sealed record OrderAccepted(Guid OrderId, decimal Total, long SentAt);

/// <summary>The read model of the event-sourcing rows: totals per customer.</summary>
public sealed record CustomerTotals(string CustomerId, int Orders, decimal Total);

/// <summary>Builds the workload's messages: the same 100,000 orders for every row.</summary>
public static class Orders
{
    /// <summary>Distinct customers (and so event streams and read-model documents).</summary>
    public const int Customers = 1_000;

    /// <summary>Distinct regions (the keys of the windowed stream).</summary>
    public const int Regions = 8;

    /// <summary>Event time between two consecutive orders (the windowed stream's clock).</summary>
    public static readonly TimeSpan Spacing = TimeSpan.FromMicroseconds(100);

    private static readonly DateTimeOffset Origin = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private static readonly string[] CustomerIds = Enumerable.Range(0, Customers).Select(i => $"customer-{i:D5}").ToArray();

    private static readonly string[] RegionNames = ["eu-west", "eu-north", "eu-central", "us-east", "us-west", "ap-south", "ap-east", "sa-east"];

    private static readonly Address[] Addresses = Enumerable.Range(0, 16)
        .Select(i => new Address($"Customer {i}", $"{100 + i} Harbour Street", "Rotterdam", $"30{i:D2} AB", "NL"))
        .ToArray();

    private static readonly OrderLine[][] Baskets = Enumerable.Range(0, 16)
        .Select(i => new[]
        {
            new OrderLine($"SKU-{1000 + i}", "Stainless steel water bottle, 750 ml", 1 + (i % 3), 18.95m),
            new OrderLine($"SKU-{2000 + i}", "Merino wool hiking socks, pair", 2, 14.50m),
            new OrderLine($"SKU-{3000 + i}", "Waterproof trail map case", 1, 9.99m),
        })
        .ToArray();

    /// <summary>Creates order <paramref name="sequence"/>, stamped with the current time.</summary>
    public static OrderPlaced Create(int sequence) => new(
        new Guid(sequence, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        sequence,
        CustomerIds[sequence % Customers],
        RegionNames[sequence % Regions],
        Origin + (Spacing * sequence),
        Addresses[sequence & 15],
        Baskets[sequence & 15],
        "EUR",
        Stopwatch.GetTimestamp());

    /// <summary>The stream an order's event is appended to.</summary>
    public static string StreamOf(OrderPlaced order) => "customer-" + (order.Sequence % Customers).ToString(System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>The handler code every row runs for every message: price the order (what a real handler would compute first).</summary>
public static class OrderHandler
{
    /// <summary>Returns the order's total.</summary>
    public static decimal Handle(OrderPlaced order)
    {
        var total = 0m;
        var lines = order.Lines;
        for (var i = 0; i < lines.Count; i++)
        {
            total += lines[i].Quantity * lines[i].UnitPrice;
        }

        return total;
    }
}

/// <summary>
/// Records one latency per handled message (lock-free, into a preallocated array) and completes when the expected
/// number of deliveries has been recorded.
/// </summary>
public sealed class Deliveries
{
    private readonly long[] _latencies;
    private TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _count;
    private int _expected = int.MaxValue;

    /// <summary>Creates a recorder for up to <paramref name="capacity"/> latencies.</summary>
    public Deliveries(int capacity) => _latencies = new long[capacity];

    /// <summary>Gets the task that completes when <see cref="Expect"/>'s count is reached.</summary>
    public Task Completion => _done.Task;

    /// <summary>Gets the number of deliveries recorded.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>Sets how many deliveries complete the run (call before the first).</summary>
    public void Expect(int deliveries)
    {
        Volatile.Write(ref _expected, deliveries);
        if (Count >= deliveries)
        {
            _done.TrySetResult();
        }
    }

    /// <summary>Records a delivery of a message created at <paramref name="sentAt"/> (a <see cref="Stopwatch"/> timestamp).</summary>
    public void Record(long sentAt)
    {
        var latency = Stopwatch.GetTimestamp() - sentAt;
        var index = Interlocked.Increment(ref _count) - 1;
        if (index < _latencies.Length)
        {
            _latencies[index] = latency;
        }

        if (index + 1 == Volatile.Read(ref _expected))
        {
            _done.TrySetResult();
        }
    }

    /// <summary>Records that one window result (or batch) covering messages up to <paramref name="sentAt"/> was emitted, counting <paramref name="messages"/> deliveries.</summary>
    public void RecordMany(long sentAt, int messages)
    {
        var latency = Stopwatch.GetTimestamp() - sentAt;
        var end = Interlocked.Add(ref _count, messages);
        var index = end - messages;
        if (index < _latencies.Length)
        {
            _latencies[index] = latency;
        }

        var expected = Volatile.Read(ref _expected);
        if (end >= expected && end - messages < expected)
        {
            _done.TrySetResult();
        }
    }

    /// <summary>Clears the recorder for the next run (after the warm-up, when every delivery of the warm-up is in).</summary>
    public void Reset()
    {
        _done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _expected, int.MaxValue);
        Volatile.Write(ref _count, 0);
        Array.Clear(_latencies);
    }

    /// <summary>Returns the recorded latencies in microseconds, sorted (zero entries, left by many-message records, excluded).</summary>
    public double[] SortedMicroseconds(bool sparse)
    {
        var count = Math.Min(Count, _latencies.Length);
        var values = new List<double>(count);
        for (var i = 0; i < count; i++)
        {
            if (!sparse || _latencies[i] != 0)
            {
                values.Add(_latencies[i] * 1_000_000.0 / Stopwatch.Frequency);
            }
        }

        values.Sort();
        return [.. values];
    }
}
