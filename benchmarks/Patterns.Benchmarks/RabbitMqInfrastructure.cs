using System.Text.Json;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using MassTransit;
using RabbitMQ.Client;

namespace Patterns.Benchmarks;

/// <summary>A pub/sub message for the RabbitMQ benchmarks: a small record that travels as JSON.</summary>
[global::Patterns.Messaging.MessageName("bench.tick")]
public sealed record Tick(int Sequence);

/// <summary>What every side of the RabbitMQ benchmarks shares, so they run with the same settings.</summary>
public static class RabbitMqBench
{
    /// <summary>Unacknowledged messages the broker pushes to each consumer, on every side.</summary>
    public const ushort Prefetch = 256;

    /// <summary>Publishes in flight at once (each awaits its publisher confirm), on every side.</summary>
    public const int Window = 128;

    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>Gets the broker, from PATTERNS_RABBITMQ.</summary>
    public static Uri Uri => new(Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/");

    /// <summary>A name prefix unique to one run, so runs never see each other's messages.</summary>
    public static string NewPrefix(string side) => $"bench.{side}.{Guid.NewGuid():N}"[..(side.Length + 15)] + ".";

    /// <summary>Calls <paramref name="publish"/> for 0..count-1 with at most <see cref="Window"/> calls in flight.</summary>
    public static async Task PublishWindowedAsync(int count, Func<int, Task> publish)
    {
        var window = new Task[Window];
        var inFlight = 0;
        for (var i = 0; i < count; i++)
        {
            window[inFlight++] = publish(i);
            if (inFlight == window.Length)
            {
                await Task.WhenAll(window);
                inFlight = 0;
            }
        }

        await Task.WhenAll(window.AsSpan(0, inFlight).ToArray());
    }

    /// <summary>Points MassTransit at the broker with confirms on (the default, set anyway so it shows).</summary>
    public static void Host(IRabbitMqBusFactoryConfigurator cfg)
    {
        var uri = Uri;
        var user = Uri.UnescapeDataString(uri.UserInfo.Split(':')[0]);
        var password = Uri.UnescapeDataString(uri.UserInfo.Split(':').ElementAtOrDefault(1) ?? string.Empty);
        var vhost = uri.AbsolutePath.Length <= 1 ? "/" : Uri.UnescapeDataString(uri.AbsolutePath[1..]);
        cfg.Host(uri.Host, (ushort)(uri.IsDefaultPort ? 5672 : uri.Port), vhost, h =>
        {
            h.Username(user.Length == 0 ? "guest" : user);
            h.Password(password.Length == 0 ? "guest" : password);
            h.PublisherConfirmation = true;
        });
        cfg.PrefetchCount = Prefetch;
    }

    /// <summary>Deletes queues and exchanges left by a run.</summary>
    public static async Task DeleteAsync(IEnumerable<string> queues, IEnumerable<string> exchanges)
    {
        await using var connection = await new ConnectionFactory { Uri = Uri }.CreateConnectionAsync();
        foreach (var queue in queues)
        {
            await using var channel = await connection.CreateChannelAsync();
            await channel.QueueDeleteAsync(queue, ifUnused: false, ifEmpty: false);
        }

        foreach (var exchange in exchanges)
        {
            await using var channel = await connection.CreateChannelAsync();
            await channel.ExchangeDeleteAsync(exchange);
        }
    }
}

/// <summary>The shared configuration plus latency percentiles (P50, P95 and P99).</summary>
public sealed class LatencyConfig : ManualConfig
{
    public LatencyConfig()
    {
        Add(new BenchmarkConfig());
        AddColumn(StatisticColumn.P50, StatisticColumn.P95, new P99Column());
    }
}

/// <summary>The 99th percentile of the measured iterations; with one request per iteration, the p99 request latency.</summary>
public sealed class P99Column : IColumn
{
    public string Id => nameof(P99Column);

    public string ColumnName => "P99";

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Statistics;

    public int PriorityInCategory => 10;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Time;

    public string Legend => "99th percentile of all measured iterations (one request each)";

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var statistics = summary[benchmarkCase]?.ResultStatistics;
        if (statistics is null)
        {
            return "NA";
        }

        return $"{statistics.Percentiles.Percentile(99) / 1_000_000:N3} ms";
    }

    public bool IsAvailable(Summary summary) => true;

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
}
