using System.Net;
using System.Net.Sockets;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using Patterns.Messaging;
using Patterns.PeerLinks;
using Patterns.Transport;

namespace Patterns.Benchmarks.PeerLinks;

/// <summary>Two linked nodes on loopback: node 0 sends, node 1 consumes.</summary>
internal sealed class Pair : IAsyncDisposable
{
    public PeerLinksTransport Sender { get; private set; } = null!;

    public PeerLinksTransport Receiver { get; private set; } = null!;

    public static async Task<Pair> StartAsync()
    {
        var ports = new[] { FreePort(), FreePort() };
        var pair = new Pair();
        pair.Sender = await PeerLinksTransport.StartAsync(Options(0, ports));
        pair.Receiver = await PeerLinksTransport.StartAsync(Options(1, ports));
        await pair.Sender.Membership.WaitForAllUpAsync();
        await pair.Receiver.Membership.WaitForAllUpAsync();
        return pair;
    }

    public async ValueTask DisposeAsync()
    {
        await Sender.DisposeAsync();
        await Receiver.DisposeAsync();
    }

    private static PeerLinksOptions Options(int index, int[] ports)
    {
        var o = new PeerLinksOptions { NodeId = $"bench-{index}", ListenUri = new Uri($"http://127.0.0.1:{ports[index]}") };
        if (Environment.GetEnvironmentVariable("PEERLINKS_PREFETCH") is { } prefetch)
        {
            // For rough comparisons only (Program --rough); the reports use the default.
            o.Prefetch = int.Parse(prefetch, System.Globalization.CultureInfo.InvariantCulture);
        }

        o.Peers.Add(new Uri($"http://127.0.0.1:{ports[1 - index]}"));
        return o;
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary>
/// Messages per second on one link, 100-byte payloads: raw gRPC (one message per write), peer links, Akka.Remote (two
/// actor systems) and NATS (a local nats-server, the broker reference). Each endpoint pair talks over loopback TCP.
/// </summary>
[MemoryDiagnoser]
[Config(typeof(Config))]
public class PeerLinkThroughputBenchmarks
{
    public const int Messages = 20_000;
    private readonly byte[] _payload = new byte[100];
    private RawGrpcPeer _raw = null!;
    private AkkaRemotePeer _akka = null!;
    private NatsPeer _nats = null!;
    private Pair _pair = null!;
    private string _queue = null!;
    private int _handled;
    private TaskCompletionSource _done = new();

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _raw = await RawGrpcPeer.StartAsync();
        _akka = await AkkaRemotePeer.StartAsync();
        _nats = await NatsPeer.StartAsync();
        _pair = await Pair.StartAsync();
        _queue = "bench.throughput";
        await _pair.Receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(_queue), ConsumerGroup = _queue, Concurrency = int.Parse(Environment.GetEnvironmentVariable("PEERLINKS_CONCURRENCY") ?? "256", System.Globalization.CultureInfo.InvariantCulture) },
            (e, _) =>
            {
                if (Interlocked.Increment(ref _handled) == Messages)
                {
                    _done.TrySetResult();
                }

                return new(Settlement.Ack);
            });
        await _pair.Sender.DeclareQueueAsync(_queue, new QueueSettings { Capacity = 8192 });
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _raw.DisposeAsync();
        await _akka.DisposeAsync();
        await _nats.DisposeAsync();
        await _pair.DisposeAsync();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Messages)]
    public Task RawGrpc() => _raw.StreamAsync(_payload, Messages);

    [Benchmark(OperationsPerInvoke = Messages)]
    public Task AkkaRemote() => _akka.StreamAsync(_payload, Messages);

    [Benchmark(OperationsPerInvoke = Messages)]
    public Task Nats() => _nats.StreamAsync(_payload, Messages);

    [Benchmark(OperationsPerInvoke = Messages)]
    public async Task Patterns()
    {
        _handled = 0;
        _done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        for (var i = 0; i < Messages; i++)
        {
            await _pair.Sender.SendAsync(_queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "bench", Payload = _payload });
        }

        await _done.Task;
    }

    private sealed class Config : ManualConfig
    {
        public Config()
        {
            AddColumn(StatisticColumn.OperationsPerSecond);
        }
    }
}

/// <summary>Request-reply with one request outstanding, 64-byte payloads: a raw gRPC unary call, a peer-link round trip, an Akka.Remote ask and a NATS request.</summary>
[MemoryDiagnoser]
[Config(typeof(Config))]
public class PeerLinkLatencyBenchmarks
{
    private readonly byte[] _payload = new byte[64];
    private RawGrpcPeer _raw = null!;
    private AkkaRemotePeer _akka = null!;
    private NatsPeer _nats = null!;
    private Pair _pair = null!;
    private string _replies = null!;
    private TaskCompletionSource _reply = new();

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _raw = await RawGrpcPeer.StartAsync();
        _akka = await AkkaRemotePeer.StartAsync();
        _nats = await NatsPeer.StartAsync();
        _pair = await Pair.StartAsync();
        _replies = "bench.replies";
        var receiver = _pair.Receiver;
        await receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue("bench.echo"), ConsumerGroup = "bench.echo", Concurrency = 64 },
            async (e, _) =>
            {
                await receiver.SendAsync(e.ReplyTo!, new Envelope { MessageId = Guid.NewGuid(), MessageType = "reply", Payload = e.Payload, CorrelationId = e.MessageId });
                return Settlement.Ack;
            });
        await _pair.Sender.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(_replies), ConsumerGroup = _replies, Temporary = true },
            (e, _) =>
            {
                _reply.TrySetResult();
                return new(Settlement.Ack);
            });
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _raw.DisposeAsync();
        await _akka.DisposeAsync();
        await _nats.DisposeAsync();
        await _pair.DisposeAsync();
    }

    [Benchmark(Baseline = true)]
    public Task<byte[]> RawGrpc() => _raw.EchoAsync(_payload);

    [Benchmark]
    public Task<byte[]> AkkaRemote() => _akka.EchoAsync(_payload);

    [Benchmark]
    public Task<byte[]> Nats() => _nats.EchoAsync(_payload);

    [Benchmark]
    public async Task Patterns()
    {
        _reply = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await _pair.Sender.SendAsync("bench.echo", new Envelope { MessageId = Guid.NewGuid(), MessageType = "echo", Payload = _payload, ReplyTo = _replies });
        await _reply.Task;
    }

    private sealed class Config : ManualConfig
    {
        public Config()
        {
            AddColumn(StatisticColumn.P50, StatisticColumn.P95, StatisticColumn.Max);
        }
    }
}
