using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Patterns.RabbitMq;
using Patterns.Serialization;
using Patterns.Transport;
using RabbitMQ.Client;

namespace Patterns.Orchestration.Tests;

public enum TransportKind
{
    InMemory,
    RabbitMq,
}

/// <summary>
/// The RabbitMQ broker (env PATTERNS_RABBITMQ); tests skip with the reason when it does not answer. Each test uses a name
/// prefix of its own (several hosts of one test share it, standing in for processes on one broker), and deletes every
/// queue and exchange its transports declared when it ends, so runs leave the broker as they found it.
/// </summary>
internal sealed class Rabbit : IAsyncDisposable
{
    private static readonly Lazy<Task<string?>> Problem = new(FindProblemAsync);
    private readonly ConcurrentBag<RabbitMqMessageTransport> _transports = [];

    private Rabbit(string prefix) => Prefix = prefix;

    public static string Address => Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/";

    /// <summary>Gets the name prefix of every queue and exchange of this test.</summary>
    public string Prefix { get; }

    /// <summary>Skips the calling test, with the reason, when no broker answers; otherwise returns a new prefix for it.</summary>
    public static async Task<Rabbit> RequireAsync(string test)
    {
        if (await Problem.Value is { } problem)
        {
            Assert.Skip($"RabbitMQ is not reachable at {RabbitMqConnection.Describe(new Uri(Address))} (set PATTERNS_RABBITMQ): {problem}");
        }

        return new Rabbit($"test.{test}.{Guid.NewGuid():N}"[..(test.Length + 14)] + ".");
    }

    /// <summary>A transport factory for <see cref="TestHost.StartAsync"/>: a RabbitMQ transport on this test's prefix, on the system clock.</summary>
    public Func<IServiceProvider, MessageTransport> Transport(Action<RabbitMqTransportOptions>? configure = null) => sp =>
    {
        var options = new RabbitMqTransportOptions
        {
            Uri = new Uri(Address),
            NamePrefix = Prefix,
            NetworkRecoveryInterval = TimeSpan.FromMilliseconds(500),
            ReconnectTimeout = TimeSpan.FromSeconds(60),
        };
        configure?.Invoke(options);
        var transport = (RabbitMqMessageTransport)RabbitMqTransport.Create(options, sp.GetRequiredService<IMessageSerializer>());
        _transports.Add(transport);
        return transport;
    };

    /// <summary>Deletes every queue and exchange this test's transports declared; call once every host of the test has stopped.</summary>
    public async ValueTask DisposeAsync()
    {
        var names = _transports.SelectMany(t => t.Topology.Created).DistinctBy(n => n.Key).ToList();
        if (names.Count == 0)
        {
            return;
        }

        await using var connection = await new ConnectionFactory { Uri = new Uri(Address) }.CreateConnectionAsync();
        foreach (var (name, isExchange) in names)
        {
            await using var channel = await connection.CreateChannelAsync();
            if (isExchange)
            {
                await channel.ExchangeDeleteAsync(name);
            }
            else
            {
                await channel.QueueDeleteAsync(name, ifUnused: false, ifEmpty: false);
            }
        }
    }

    private static async Task<string?> FindProblemAsync()
    {
        try
        {
            // As in the RabbitMQ transport's tests: a loaded CI machine answers slowly, and CI counts a skip as a failure.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await using var connection = await new ConnectionFactory { Uri = new Uri(Address) }.CreateConnectionAsync(timeout.Token);
            return null;
        }
        catch (Exception ex)
        {
            return ex.InnerException?.Message ?? ex.Message;
        }
    }
}
