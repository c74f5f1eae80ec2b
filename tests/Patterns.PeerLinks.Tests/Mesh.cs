using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Patterns.Messaging;
using Patterns.PeerLinks;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>Nodes linked in a full mesh on loopback, each on its own ephemeral port, in this process.</summary>
internal sealed class Mesh : IAsyncDisposable
{
    private Mesh(PeerLinksTransport[] nodes) => Nodes = nodes;

    public PeerLinksTransport[] Nodes { get; }

    /// <summary>Console logs when PATTERNS_TEST_LOG is set, for diagnosing a failure; nothing otherwise.</summary>
    public static ILoggerFactory Logs { get; } = Environment.GetEnvironmentVariable("PATTERNS_TEST_LOG") is null
        ? NullLoggerFactory.Instance
        : LoggerFactory.Create(b => b.AddProvider(new FileLogs(Environment.GetEnvironmentVariable("PATTERNS_TEST_LOG")!)).SetMinimumLevel(LogLevel.Debug));

    public static async Task<Mesh> StartAsync(int count, Action<int, PeerLinksOptions>? configure = null)
    {
        var ports = Enumerable.Range(0, count).Select(_ => FreePort()).ToArray();
        var nodes = new PeerLinksTransport[count];
        for (var i = 0; i < count; i++)
        {
            nodes[i] = await PeerLinksTransport.StartAsync(Options(i, ports, configure), loggerFactory: Logs);
        }

        var mesh = new Mesh(nodes);
        await mesh.WaitUpAsync();
        return mesh;
    }

    public static PeerLinksOptions Options(int index, int[] ports, Action<int, PeerLinksOptions>? configure = null)
    {
        var options = new PeerLinksOptions
        {
            NodeId = $"node-{index}",
            ListenUri = new Uri($"http://127.0.0.1:{ports[index]}"),
            SharedSecret = "mesh-secret",
            MaxReconnectDelay = TimeSpan.FromMilliseconds(250),
        };
        for (var j = 0; j < ports.Length; j++)
        {
            if (j != index)
            {
                options.Peers.Add(new Uri($"http://127.0.0.1:{ports[j]}"));
            }
        }

        configure?.Invoke(index, options);
        return options;
    }

    /// <summary>Sets a host's options (configured through <c>UsePeerLinks</c>) as <see cref="Options"/> would, with other peers if given.</summary>
    public static void Apply(PeerLinksOptions target, int index, int[] ports, IEnumerable<Uri>? peers = null)
    {
        var options = Options(index, ports);
        target.NodeId = options.NodeId;
        target.ListenUri = options.ListenUri;
        target.SharedSecret = options.SharedSecret;
        target.MaxReconnectDelay = options.MaxReconnectDelay;
        foreach (var peer in peers ?? options.Peers)
        {
            target.Peers.Add(peer);
        }
    }

    public async Task WaitUpAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        foreach (var node in Nodes)
        {
            await node.Membership.WaitForAllUpAsync(timeout.Token);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var node in Nodes)
        {
            // Stopping a node is bounded; a stop that hangs fails the test rather than the whole run.
            await node.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(60));
        }
    }

    /// <summary>
    /// Polls until <paramref name="condition"/> holds; fails the test instead of hanging when it does not within a minute,
    /// and stops at once when the test is cancelled (its own timeout may be shorter than the minute).
    /// </summary>
    /// <remarks>
    /// The conditions have no signal of their own (a counter, a link's state), so this looks again after a pause that
    /// doubles from 1 ms up to 10 ms: no timing is assumed, the pause only keeps the poll from spinning on a core that
    /// the nodes under test need (a loop on <c>Task.Yield</c> did, on a 2-core machine). Every condition waited on holds
    /// once it holds (counts that only grow, a state kept until the test moves on), so no pause can miss it.
    /// </remarks>
    public static async Task UntilAsync(Func<bool> condition, string what)
    {
        var waited = Stopwatch.StartNew();
        var pause = 1;
        while (!condition())
        {
            if (waited.Elapsed > TimeSpan.FromSeconds(60))
            {
                throw new TimeoutException($"Waited a minute for {what}.");
            }

            await Task.Delay(pause, TestContext.Current.CancellationToken);
            pause = Math.Min(pause * 2, 10);
        }
    }

    // A port the system hands out for port 0 comes from its ephemeral range (32768-60999 on Linux), which every outgoing
    // connection of every process also draws from: one could take it between this check and the node's bind ("address
    // already in use" under parallel test runs). So the ports come from below that range, in turn from a random start,
    // each checked free: only another process choosing the same port in that moment could take it.
    private const int FirstPort = 20_000;
    private const int PortCount = 12_000;
    private static int _nextPort = Random.Shared.Next(PortCount);

    public static int FreePort()
    {
        for (var attempt = 0; attempt < PortCount; attempt++)
        {
            var port = FirstPort + (int)((uint)Interlocked.Increment(ref _nextPort) % PortCount);
            try
            {
                using var listener = new TcpListener(IPAddress.Loopback, port);
                listener.Start();
                return port;
            }
            catch (SocketException)
            {
                // In use: the next one.
            }
        }

        throw new InvalidOperationException($"No free port between {FirstPort} and {FirstPort + PortCount}.");
    }
}

/// <summary>
/// The three-node mesh seen as one transport, for the unchanged conformance suite: sends and publishes leave from
/// node 0, subscriptions alternate between nodes 1 and 2, and node 0 (where the queues are) answers for dead letters.
/// Every message the suite checks therefore crosses a link.
/// </summary>
internal sealed class MeshTransport(Mesh mesh) : MessageTransport
{
    private int _next;

    private PeerLinksTransport Sender => mesh.Nodes[0];

    public override string SystemName => Sender.SystemName;

    public override bool IsInProcess => false;

    public override int MaxPayloadBytes => Sender.MaxPayloadBytes;

    public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) =>
        Sender.DeclareQueueAsync(queue, settings, cancellationToken);

    public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default) =>
        Sender.SendAsync(queue, envelope, cancellationToken);

    public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default) =>
        Sender.PublishAsync(topic, envelope, cancellationToken);

    public override ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
        mesh.Nodes[1 + (Interlocked.Increment(ref _next) % (mesh.Nodes.Length - 1))].SubscribeAsync(request, handler, cancellationToken);

    public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
        Sender.PeekDeadLettersAsync(queue, maxCount, cancellationToken);

    public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
        Sender.ReplayDeadLettersAsync(queue, maxCount, cancellationToken);

    public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) =>
        Sender.PurgeDeadLettersAsync(queue, cancellationToken);

    public override ValueTask DisposeAsync() => mesh.DisposeAsync();
}

/// <summary>Appends every log line to one file (diagnostics only).</summary>
internal sealed class FileLogs(string path) : ILoggerProvider, ILogger
{
    private readonly Lock _gate = new();

    public ILogger CreateLogger(string categoryName) => this;

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_gate)
        {
            File.AppendAllText(path, $"{DateTime.UtcNow:HH:mm:ss.fff} {logLevel} {formatter(state, exception)} {exception?.GetType().Name} {exception?.Message}\n");
        }
    }

    public void Dispose()
    {
    }
}
