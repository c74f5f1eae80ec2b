using System.Net.Sockets;
using Npgsql;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Hosting;
using RabbitMQ.Client;

namespace Patterns.Compare;

/// <summary>The servers rows may need, found through PATTERNS_RABBITMQ and PATTERNS_POSTGRES (defaults: the local ones).</summary>
public static class Servers
{
    /// <summary>Gets the RabbitMQ broker.</summary>
    public static Uri RabbitMq => new(Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/");

    /// <summary>Gets the PostgreSQL connection string.</summary>
    public static string Postgres => Environment.GetEnvironmentVariable("PATTERNS_POSTGRES") is { Length: > 0 } cs
        ? cs
        : "Host=127.0.0.1;Port=5432;Username=postgres;Password=postgres;Database=patterns_tests";

    /// <summary>Returns null when the server answers within a few seconds, or why it cannot be used.</summary>
    public static async Task<string?> CheckAsync(Requirement requirement)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            switch (requirement)
            {
                case Requirement.RabbitMq:
                    var factory = new ConnectionFactory { Uri = RabbitMq, RequestedConnectionTimeout = TimeSpan.FromSeconds(3) };
                    await using (var connection = await factory.CreateConnectionAsync(timeout.Token))
                    {
                        return null;
                    }

                case Requirement.Postgres:
                    var builder = new NpgsqlConnectionStringBuilder(Postgres) { Timeout = 3 };
                    await using (var connection = new NpgsqlConnection(builder.ConnectionString))
                    {
                        await connection.OpenAsync(timeout.Token);
                        return null;
                    }

                default:
                    return null;
            }
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException or NpgsqlException or RabbitMQ.Client.Exceptions.BrokerUnreachableException or TimeoutException or IOException)
        {
            return $"{requirement} unreachable ({ex.GetType().Name}: {ex.Message.Split('\n')[0]})";
        }
    }

    /// <summary>Chooses the RabbitMQ transport with the launch's name prefix and the comparison's settings.</summary>
    public static void UseRabbitMq(PatternsBuilder patterns, RunContext context) => patterns.UseRabbitMq(o =>
    {
        o.Uri = RabbitMq;
        o.NamePrefix = context.Prefix + ".";
        o.PrefetchCount = 256;
        o.ClientName = "patterns-compare";
    });

    /// <summary>Drops a launch's PostgreSQL schema and everything in it.</summary>
    public static async Task DropSchemaAsync(string schema)
    {
        await using var dataSource = NpgsqlDataSource.Create(Postgres);
        await using var drop = dataSource.CreateCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        await drop.ExecuteNonQueryAsync();
    }

    /// <summary>Chooses peer links for node <paramref name="index"/> (0 or 1) of two on 127.0.0.1, listening on <c>ports[index]</c> and linked to the other.</summary>
    public static void UsePeerLinks(PatternsBuilder patterns, int index, int[] ports) => patterns.UsePeerLinks(o =>
    {
        o.NodeId = $"compare-{index}";
        o.ListenUri = new Uri($"http://127.0.0.1:{ports[index]}");
        o.Peers.Add(new Uri($"http://127.0.0.1:{ports[1 - index]}"));
        o.MaxReconnectDelay = TimeSpan.FromMilliseconds(250);
    });

    /// <summary>Returns a TCP port free on the loopback interface.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Deletes the queues and exchanges a launch declared (names that do not exist are ignored).</summary>
    public static async Task DeleteRabbitMqAsync(RunContext context, IEnumerable<string> queues)
    {
        var prefix = context.Prefix + ".";
        try
        {
            var factory = new ConnectionFactory { Uri = RabbitMq, RequestedConnectionTimeout = TimeSpan.FromSeconds(3) };
            await using var connection = await factory.CreateConnectionAsync();
            foreach (var queue in queues)
            {
                foreach (var name in new[] { queue, queue + ".dlq" })
                {
                    await using var channel = await connection.CreateChannelAsync();
                    await channel.QueueDeleteAsync(prefix + name, ifUnused: false, ifEmpty: false);
                }

                await using var exchanges = await connection.CreateChannelAsync();
                await exchanges.ExchangeDeleteAsync(prefix + queue + ".dlx");
            }

            await using var topics = await connection.CreateChannelAsync();
            await topics.ExchangeDeleteAsync(prefix + "patterns.topics");
        }
        catch (Exception ex) when (ex is RabbitMQ.Client.Exceptions.OperationInterruptedException or IOException or RabbitMQ.Client.Exceptions.BrokerUnreachableException)
        {
            Console.Error.WriteLine($"cleanup of {prefix}* on RabbitMQ failed: {ex.Message}");
        }
    }
}

/// <summary>Where a messaging row's messages travel.</summary>
public enum TransportKind
{
    /// <summary>The in-memory transport (the default): in-process, nothing survives the process.</summary>
    InMemory,

    /// <summary>RabbitMQ: durable queues, persistent messages, publisher confirms, prefetch 256, acknowledged after the handler.</summary>
    RabbitMq,

    /// <summary>Peer links: two nodes in this process linked over loopback TCP (gRPC over HTTP/2); nothing durable.</summary>
    PeerLinks,
}

/// <summary>Where an event-sourcing row's events are stored.</summary>
public enum StoreKind
{
    /// <summary>The in-memory store.</summary>
    InMemory,

    /// <summary>A SQLite file (WAL, synchronous=FULL) in a fresh temporary directory.</summary>
    Sqlite,

    /// <summary>A schema of its own on the PostgreSQL server (synchronous commit as the server is configured).</summary>
    Postgres,
}
