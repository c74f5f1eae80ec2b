using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Patterns.Storage;
using Patterns.Transport;
using RabbitMQ.Client;

namespace Patterns.RabbitMq.Tests;

/// <summary>The local RabbitMQ broker the tests run against (PATTERNS_RABBITMQ), found once per test run.</summary>
internal static class Broker
{
    private static readonly Lazy<Task<string?>> Problem = new(() => FindProblemAsync(SharedAddress));

    private static readonly Lazy<Task<string?>> FaultsProblem = new(() => FindProblemAsync(FaultsAddress!));

    private static readonly AsyncLocal<bool> OnFaultsBroker = new();

    private static string SharedAddress => Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/";

    /// <summary>
    /// A broker of its own for the tests that stop it (PATTERNS_RABBITMQ_FAULTS, with its node name in
    /// PATTERNS_RABBITMQ_FAULTS_NODE for rabbitmqctl), so stopping it never fails tests of other assemblies that run at
    /// the same time against the shared broker. CI starts one; without it those tests use the shared broker.
    /// </summary>
    private static string? FaultsAddress => Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ_FAULTS") is { Length: > 0 } uri ? uri : null;

    /// <summary>The node rabbitmqctl talks to in the calling test: the faults broker's, or the default node.</summary>
    public static string? Node => OnFaultsBroker.Value && Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ_FAULTS_NODE") is { Length: > 0 } node ? node : null;

    public static string Address => OnFaultsBroker.Value && FaultsAddress is { } faults ? faults : SharedAddress;

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

    /// <summary>
    /// Points the calling test (its async flow) at the faults broker when one is configured, then skips, with the reason,
    /// when that broker does not answer. For tests that stop the broker.
    /// </summary>
    public static Task RequireFaultsBrokerAsync()
    {
        if (FaultsAddress is null)
        {
            return RequireAsync();
        }

        if (Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ_FAULTS_NODE") is not { Length: > 0 })
        {
            throw new InvalidOperationException("PATTERNS_RABBITMQ_FAULTS is set without PATTERNS_RABBITMQ_FAULTS_NODE, the node name rabbitmqctl stops and starts.");
        }

        // Set here, outside an async method: a value set inside one would not flow back to the calling test.
        OnFaultsBroker.Value = true;
        return SkipUnlessFaultsBrokerAnswersAsync();
    }

    private static async Task SkipUnlessFaultsBrokerAnswersAsync()
    {
        if (await FaultsProblem.Value is { } problem)
        {
            Assert.Skip($"The RabbitMQ broker for fault tests is not reachable at {RabbitMqConnection.Describe(Uri)}: {problem}");
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

    private static async Task<string?> FindProblemAsync(string address)
    {
        try
        {
            // A server that is there answers at once unless the machine is overloaded (CI runs every test assembly at once on
            // two cores), and CI counts a skip as a failure: wait long before deciding it is not there. An absent server refuses
            // the connection at once anyway.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await using var connection = await new ConnectionFactory { Uri = new Uri(address) }.CreateConnectionAsync(timeout.Token);
            return null;
        }
        catch (Exception ex)
        {
            return ex.InnerException?.Message ?? ex.Message;
        }
    }
}
