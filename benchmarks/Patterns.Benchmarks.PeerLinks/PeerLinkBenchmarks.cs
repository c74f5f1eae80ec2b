using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Patterns.Messaging;
using Patterns.PeerLinks;
using Patterns.Transport;

namespace Patterns.Benchmarks.PeerLinks;

/// <summary>Two linked nodes on loopback: node 0 sends, node 1 consumes.</summary>
internal sealed class Pair : IAsyncDisposable
{
    public PeerLinksTransport Sender { get; private set; } = null!;

    public PeerLinksTransport Receiver { get; private set; } = null!;

    public static async Task<Pair> StartAsync(bool mutualTls = false)
    {
        var ports = new[] { FreePort(), FreePort() };
        var pair = new Pair();
        pair.Sender = await PeerLinksTransport.StartAsync(Options(0, ports, mutualTls));
        pair.Receiver = await PeerLinksTransport.StartAsync(Options(1, ports, mutualTls));
        await pair.Sender.Membership.WaitForAllUpAsync();
        await pair.Receiver.Membership.WaitForAllUpAsync();
        return pair;
    }

    public async ValueTask DisposeAsync()
    {
        await Sender.DisposeAsync();
        await Receiver.DisposeAsync();
    }

    /// <summary>Starts node 0 (the sender) here and node 1 (the receiver, see <see cref="ChildNode"/>) in a child process.</summary>
    public static async Task<(PeerLinksTransport Sender, ChildNode Receiver)> StartTwoProcessesAsync(Func<PeerLinksTransport, Task> subscribe)
    {
        var ports = new[] { FreePort(), FreePort() };
        var sender = await PeerLinksTransport.StartAsync(Options(0, ports, mutualTls: false));
        await subscribe(sender);
        var receiver = await ChildNode.StartAsync(ports[1], ports[0]);
        await sender.Membership.WaitForAllUpAsync();
        return (sender, receiver);
    }

    internal static PeerLinksOptions Options(int index, int[] ports, bool mutualTls)
    {
        var scheme = mutualTls ? "https" : "http";
        var o = new PeerLinksOptions { NodeId = $"bench-{index}", ListenUri = new Uri($"{scheme}://127.0.0.1:{ports[index]}") };
        if (mutualTls)
        {
            // Both nodes present a certificate and accept only each other's (pinned by thumbprint).
            var certificate = MeshCertificate.Value;
            o.ServerCertificate = certificate;
            o.ClientCertificate = certificate;
            o.RequireClientCertificate = true;
            o.ValidateCertificate = (c, _, _) => c.Thumbprint == certificate.Thumbprint;
        }

        if (Environment.GetEnvironmentVariable("PEERLINKS_PREFETCH") is { } prefetch)
        {
            // For rough comparisons only (Program --rough); the reports use the default.
            o.Prefetch = int.Parse(prefetch, System.Globalization.CultureInfo.InvariantCulture);
        }

        o.Peers.Add(new Uri($"{scheme}://127.0.0.1:{ports[1 - index]}"));
        return o;
    }

    /// <summary>The one certificate both ends of a mutual-TLS pair present and pin.</summary>
    internal static X509Certificate2 Certificate => MeshCertificate.Value;

    private static readonly Lazy<X509Certificate2> MeshCertificate = new(() =>
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=bench-mesh", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], critical: false));
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pfx), null);
    });

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
    private RawGrpcPeer _rawTls = null!;
    private AkkaRemotePeer _akka = null!;
    private NatsPeer _nats = null!;
    private Pair _pair = null!;
    private Pair _tls = null!;
    private PeerLinksTransport _twoSender = null!;
    private ChildNode _twoReceiver = null!;
    private Counter _twoDone = new();
    private string _queue = null!;
    private int _handled;
    private TaskCompletionSource _done = new();

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _raw = await RawGrpcPeer.StartAsync();
        _rawTls = await RawGrpcPeer.StartAsync(Pair.Certificate);
        _akka = await AkkaRemotePeer.StartAsync();
        _nats = await NatsPeer.StartAsync();
        _queue = ChildNode.ThroughputQueue;
        _pair = await StartPairAsync(mutualTls: false);
        _tls = await StartPairAsync(mutualTls: true);
        (_twoSender, _twoReceiver) = await Pair.StartTwoProcessesAsync(async sender =>
        {
            // The child tells this node each time it has handled Messages.
            await sender.SubscribeAsync(
                new SubscriptionRequest { Address = TransportAddress.Queue(ChildNode.DoneQueue), ConsumerGroup = ChildNode.DoneQueue },
                (_, _) =>
                {
                    _twoDone.Hit();
                    return new(Settlement.Ack);
                });
            await sender.DeclareQueueAsync(_queue, new QueueSettings { Capacity = 8192 });
        });

        // Every case runs in its own process and starts cold: the first seconds of a link run at a quarter of its
        // later rate (rough runs: 14-18 us of CPU per message cold, 2.4-4.4 us later, plaintext or TLS), longer than
        // the short job's warm-up. Each link carries WarmUpMessages first, so no case is measured in those seconds.
        for (var sent = 0; sent < WarmUpMessages; sent += Messages)
        {
            await RawGrpc();
            await RawGrpcMutualTls();
            await Patterns();
            await PatternsMutualTls();
        }
    }

    /// <summary>Messages each link carries in the setup, before BenchmarkDotNet's own warm-up.</summary>
    public const int WarmUpMessages = 200_000;

    private async Task<Pair> StartPairAsync(bool mutualTls)
    {
        var pair = await Pair.StartAsync(mutualTls);
        await pair.Receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(_queue), ConsumerGroup = _queue, Concurrency = int.Parse(Environment.GetEnvironmentVariable("PEERLINKS_CONCURRENCY") ?? "256", System.Globalization.CultureInfo.InvariantCulture) },
            (e, _) =>
            {
                if (Interlocked.Increment(ref _handled) == Messages)
                {
                    _done.TrySetResult();
                }

                return new(Settlement.Ack);
            });
        await pair.Sender.DeclareQueueAsync(_queue, new QueueSettings { Capacity = 8192 });
        return pair;
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _raw.DisposeAsync();
        await _rawTls.DisposeAsync();
        await _akka.DisposeAsync();
        await _nats.DisposeAsync();
        await _pair.DisposeAsync();
        await _tls.DisposeAsync();
        await _twoSender.DisposeAsync();
        await _twoReceiver.DisposeAsync();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Messages)]
    public Task RawGrpc() => _raw.StreamAsync(_payload, Messages);

    /// <summary>The baseline over mutual TLS: what TLS costs gRPC itself, one message per write.</summary>
    [Benchmark(OperationsPerInvoke = Messages)]
    public Task RawGrpcMutualTls() => _rawTls.StreamAsync(_payload, Messages);

    [Benchmark(OperationsPerInvoke = Messages)]
    public Task AkkaRemote() => _akka.StreamAsync(_payload, Messages);

    [Benchmark(OperationsPerInvoke = Messages)]
    public Task Nats() => _nats.StreamAsync(_payload, Messages);

    [Benchmark(OperationsPerInvoke = Messages)]
    public Task Patterns() => SendAllAsync(_pair);

    /// <summary>The same over mutual TLS (target: at least 0.8 of <see cref="Patterns"/>).</summary>
    [Benchmark(OperationsPerInvoke = Messages)]
    public Task PatternsMutualTls() => SendAllAsync(_tls);

    /// <summary>The same with the receiving node in a child process (the other cases run both ends in this process).</summary>
    [Benchmark(OperationsPerInvoke = Messages)]
    public async Task PatternsTwoProcesses()
    {
        var done = _twoDone.Reset(1);
        for (var i = 0; i < Messages; i++)
        {
            await _twoSender.SendAsync(_queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "bench", Payload = _payload });
        }

        await done;
    }

    private async Task SendAllAsync(Pair pair)
    {
        _handled = 0;
        _done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        for (var i = 0; i < Messages; i++)
        {
            await pair.Sender.SendAsync(_queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "bench", Payload = _payload });
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
    private PeerLinksTransport _twoSender = null!;
    private ChildNode _twoReceiver = null!;
    private string _replies = null!;
    private TaskCompletionSource _reply = new();
    private TaskCompletionSource _replies64 = new();
    private int _outstanding;

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _raw = await RawGrpcPeer.StartAsync();
        _akka = await AkkaRemotePeer.StartAsync();
        _nats = await NatsPeer.StartAsync();
        _pair = await Pair.StartAsync();
        _replies = "bench.replies";
        await SubscribeEchoAsync(_pair.Receiver);
        await SubscribeRepliesAsync(_pair.Sender);
        (_twoSender, _twoReceiver) = await Pair.StartTwoProcessesAsync(SubscribeRepliesAsync);
    }

    /// <summary>The receiving node's echo: each request's payload goes back to its reply-to.</summary>
    internal static async Task SubscribeEchoAsync(PeerLinksTransport receiver) =>
        await receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(ChildNode.EchoQueue), ConsumerGroup = ChildNode.EchoQueue, Concurrency = 64 },
            async (e, _) =>
            {
                await receiver.SendAsync(e.ReplyTo!, new Envelope { MessageId = Guid.NewGuid(), MessageType = "reply", Payload = e.Payload, CorrelationId = e.MessageId });
                return Settlement.Ack;
            });

    private async Task SubscribeRepliesAsync(PeerLinksTransport sender) =>
        await sender.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(_replies), ConsumerGroup = _replies, Temporary = true },
            (e, _) =>
            {
                _reply.TrySetResult();
                if (Interlocked.Decrement(ref _outstanding) == 0)
                {
                    _replies64.TrySetResult();
                }

                return new(Settlement.Ack);
            });

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _raw.DisposeAsync();
        await _akka.DisposeAsync();
        await _nats.DisposeAsync();
        await _pair.DisposeAsync();
        await _twoSender.DisposeAsync();
        await _twoReceiver.DisposeAsync();
    }

    [Benchmark(Baseline = true)]
    public Task<byte[]> RawGrpc() => _raw.EchoAsync(_payload);

    [Benchmark]
    public Task<byte[]> AkkaRemote() => _akka.EchoAsync(_payload);

    [Benchmark]
    public Task<byte[]> Nats() => _nats.EchoAsync(_payload);

    [Benchmark]
    public Task Patterns() => RoundTripAsync(_pair.Sender);

    /// <summary>The same round trip with the echoing node in a child process.</summary>
    [Benchmark]
    public Task PatternsTwoProcesses() => RoundTripAsync(_twoSender);

    internal async Task RoundTripAsync(PeerLinksTransport sender)
    {
        _reply = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _outstanding = 1;
        await sender.SendAsync(ChildNode.EchoQueue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "echo", Payload = _payload, ReplyTo = _replies });
        await _reply.Task;
    }

    /// <summary>64 requests outstanding at once; the time reported is per request (the batch's time over 64).</summary>
    [Benchmark(OperationsPerInvoke = 64)]
    public async Task Patterns64Outstanding()
    {
        _replies64 = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _outstanding = 64;
        for (var i = 0; i < 64; i++)
        {
            await _pair.Sender.SendAsync(ChildNode.EchoQueue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "echo", Payload = _payload, ReplyTo = _replies });
        }

        await _replies64.Task;
    }

    private sealed class Config : ManualConfig
    {
        public Config()
        {
            AddColumn(StatisticColumn.P50, StatisticColumn.P95, new P99Column(), StatisticColumn.Max);
        }
    }
}

/// <summary>
/// The control stream's round trip (a ping and its pong on one link) when the link is idle and while its bulk stream is
/// saturated with 1 MiB messages (target: p99 under bulk at most 3 times idle).
/// </summary>
[MemoryDiagnoser]
[Config(typeof(Config))]
public class PeerLinkControlStreamBenchmarks
{
    private readonly byte[] _bulk = new byte[1024 * 1024];
    private Pair _pair = null!;
    private CancellationTokenSource _stop = new();
    private Task _pump = Task.CompletedTask;
    private long _bulkDelivered;

    [GlobalSetup(Target = nameof(Idle))]
    public async Task SetupIdleAsync() => _pair = await Pair.StartAsync();

    [GlobalSetup(Target = nameof(BulkSaturated))]
    public async Task SetupBulkAsync()
    {
        _pair = await Pair.StartAsync();
        const string queue = "bench.bulk";
        await _pair.Receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue, Concurrency = 16 },
            (_, _) =>
            {
                Interlocked.Increment(ref _bulkDelivered);
                return new(Settlement.Ack);
            });
        await _pair.Sender.DeclareQueueAsync(queue, new QueueSettings { Capacity = 64 });
        _stop = new CancellationTokenSource();
        var token = _stop.Token;

        // Sends 1 MiB messages for as long as the benchmark runs: the link's window and the queue keep the bulk stream full.
        _pump = Task.Run(async () =>
        {
            while (!token.IsCancellationRequested)
            {
                await _pair.Sender.SendAsync(queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "bulk", Payload = _bulk }, token);
            }
        });
        while (Interlocked.Read(ref _bulkDelivered) < 8)
        {
            await Task.Delay(10);
        }
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _stop.CancelAsync();
        await _pump.ContinueWith(static _ => { }, TaskScheduler.Default);
        Console.WriteLine($"// bulk messages of 1 MiB delivered during the run: {Interlocked.Read(ref _bulkDelivered)}");
        PrintRoundTrips();
        await _pair.DisposeAsync();
        _stop.Dispose();
    }

    internal Patterns.PeerLinks.Links.PeerLink Link => _pair.Sender.Links[0];

    [Benchmark(Baseline = true)]
    public Task<TimeSpan> Idle() => ProbeAsync();

    [Benchmark]
    public Task<TimeSpan> BulkSaturated() => ProbeAsync();

    // BenchmarkDotNet's statistics (and so the P99 column) are over iterations, each the mean of many pings: with the
    // short job, three of them. Each ping's own round trip is kept here and its percentiles printed at cleanup.
    private readonly List<double> _roundTrips = [];

    private async Task<TimeSpan> ProbeAsync()
    {
        var roundTrip = await _pair.Sender.Links[0].ProbeControlAsync();
        _roundTrips.Add(roundTrip.TotalMicroseconds);
        return roundTrip;
    }

    private void PrintRoundTrips()
    {
        if (_roundTrips.Count == 0)
        {
            return;
        }

        var sorted = _roundTrips.ToArray();
        Array.Sort(sorted);
        double At(double q) => sorted[Math.Min(sorted.Length - 1, (int)(sorted.Length * q))];
        Console.WriteLine($"// control pings of this process (pilot, warm-up and measured), each its own round trip: {sorted.Length:N0}, p50 {At(0.5):N1} us, p90 {At(0.9):N1} us, p99 {At(0.99):N1} us, p99.9 {At(0.999):N1} us");
    }

    private sealed class Config : ManualConfig
    {
        public Config()
        {
            AddColumn(StatisticColumn.P50, StatisticColumn.P95, new P99Column(), StatisticColumn.Max);
        }
    }
}

/// <summary>The 99th percentile of the measured operation times.</summary>
internal sealed class P99Column : IColumn
{
    public string Id => "P99";

    public string ColumnName => "P99 (us)";

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Statistics;

    public int PriorityInCategory => 0;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => "99th percentile of the operation times, in microseconds";

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) =>
        summary[benchmarkCase]?.ResultStatistics is { } statistics
            ? (statistics.Percentiles.Percentile(99) / 1000.0).ToString("N1", style.CultureInfo)
            : "-";

    public bool IsAvailable(Summary summary) => true;

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
}
