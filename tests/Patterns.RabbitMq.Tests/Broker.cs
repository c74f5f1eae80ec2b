using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Patterns.Storage;
using Patterns.Transport;
using RabbitMQ.Client;

namespace Patterns.RabbitMq.Tests;

/// <summary>The local RabbitMQ broker the tests run against (PATTERNS_RABBITMQ), found once per test run.</summary>
internal static class Broker
{
    private static readonly Lazy<Task<string?>> Problem = new(FindProblemAsync);

    public static string Address => Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/";

    public static Uri Uri => new(Address);

    /// <summary>Logs to the console when PATTERNS_TEST_LOG=1, for looking into a failure.</summary>
    public static ILoggerFactory LoggerFactory { get; } = Environment.GetEnvironmentVariable("PATTERNS_TEST_LOG") == "1"
        ? Microsoft.Extensions.Logging.LoggerFactory.Create(b => b.AddSimpleConsole().SetMinimumLevel(LogLevel.Debug))
        : NullLoggerFactory.Instance;

    /// <summary>Skips the calling test, with the reason, when no broker answers.</summary>
    public static async Task RequireAsync()
    {
        if (await Problem.Value is { } problem)
        {
            Assert.Skip($"RabbitMQ is not reachable at {RabbitMqConnection.Describe(Uri)}: {problem}");
        }
    }

    /// <summary>Options for a test: a name prefix of its own, so tests never share queues and can run in parallel.</summary>
    public static RabbitMqTransportOptions Options(string test, Action<RabbitMqTransportOptions>? configure = null)
    {
        var options = new RabbitMqTransportOptions();
        Apply(options, Prefix(test));
        configure?.Invoke(options);
        return options;
    }

    /// <summary>A name prefix unique to one test.</summary>
    public static string Prefix(string test) => $"test.{test}.{Guid.NewGuid():N}"[..(test.Length + 14)] + ".";

    /// <summary>Points options at the test broker with the given prefix and quick reconnects.</summary>
    public static void Apply(RabbitMqTransportOptions options, string prefix)
    {
        options.Uri = Uri;
        options.NamePrefix = prefix;
        options.NetworkRecoveryInterval = TimeSpan.FromMilliseconds(500);
        options.ReconnectTimeout = TimeSpan.FromSeconds(60);
    }

    public static MessageTransport Create(RabbitMqTransportOptions options) =>
        RabbitMqTransport.Create(options, loggerFactory: LoggerFactory);

    /// <summary>Creates a transport for a test once the broker answers, and adds it to the ones the test disposes (and whose topology it deletes).</summary>
    public static async Task<MessageTransport> CreateAsync(ICollection<MessageTransport> owned, string test, Action<RabbitMqTransportOptions>? configure)
    {
        await RequireAsync();
        var transport = Create(Options(test, configure));
        owned.Add(transport);
        return transport;
    }

    /// <summary>Deletes every queue and exchange a transport declared, so test runs leave the broker as they found it.</summary>
    public static async Task DeleteTopologyAsync(MessageTransport? transport)
    {
        if (transport is not RabbitMqMessageTransport rabbit || rabbit.Topology.Created.IsEmpty)
        {
            return;
        }

        await DeleteAsync(rabbit.Topology.Created);
    }

    public static async Task DeleteAsync(IEnumerable<KeyValuePair<string, bool>> names)
    {
        await using var connection = await new ConnectionFactory { Uri = Uri }.CreateConnectionAsync();
        foreach (var (name, isExchange) in names)
        {
            await using var channel = await connection.CreateChannelAsync();
            if (isExchange)
            {
                // Every name carries the test's own prefix, the topic exchange's too.
                await channel.ExchangeDeleteAsync(name);
            }
            else
            {
                await channel.QueueDeleteAsync(name, ifUnused: false, ifEmpty: false);
            }
        }
    }

    /// <summary>A raw client connection, for looking at the broker from outside the transport.</summary>
    public static Task<IConnection> ConnectAsync() => new ConnectionFactory { Uri = Uri }.CreateConnectionAsync();

    private static async Task<string?> FindProblemAsync()
    {
        try
        {
            // A server that is there answers at once unless the machine is overloaded (CI runs every test assembly at once on
            // two cores), and CI counts a skip as a failure: wait long before deciding it is not there. An absent server refuses
            // the connection at once anyway.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await using var connection = await new ConnectionFactory { Uri = Uri }.CreateConnectionAsync(timeout.Token);
            return null;
        }
        catch (Exception ex)
        {
            return ex.InnerException?.Message ?? ex.Message;
        }
    }
}
