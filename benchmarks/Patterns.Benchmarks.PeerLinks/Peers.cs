using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Akka.Actor;
using Akka.Configuration;
using NATS.Client.Core;

namespace Patterns.Benchmarks.PeerLinks;

/// <summary>Counts messages and completes when the expected number arrived (reset before each run).</summary>
internal sealed class Counter
{
    private int _expected;
    private int _count;
    private TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Task Reset(int expected)
    {
        _expected = expected;
        _done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _count, 0);
        return _done.Task;
    }

    public void Hit()
    {
        if (Interlocked.Increment(ref _count) == _expected)
        {
            _done.TrySetResult();
        }
    }
}

/// <summary>
/// Akka.Remote 1.5: two actor systems, each with its own TCP endpoint on loopback (DotNetty); system "a" tells a sink
/// actor on system "b" (throughput) or asks an echo actor there (latency). Akka.Remote has no back-pressure: tells never wait.
/// </summary>
internal sealed class AkkaRemotePeer : IAsyncDisposable
{
    private const string Config = """
        akka {
          loglevel = WARNING
          stdout-loglevel = WARNING
          actor.provider = remote
          remote.dot-netty.tcp { hostname = "127.0.0.1", port = 0 }
        }
        """;

    private ActorSystem _a = null!;
    private ActorSystem _b = null!;

    public Counter Counter { get; } = new();

    public IActorRef Sink { get; private set; } = ActorRefs.Nobody;

    public IActorRef Echo { get; private set; } = ActorRefs.Nobody;

    public static async Task<AkkaRemotePeer> StartAsync()
    {
        var peer = new AkkaRemotePeer();
        var config = ConfigurationFactory.ParseString(Config);
        peer._a = ActorSystem.Create("a", config);
        peer._b = ActorSystem.Create("b", config);
        peer._b.ActorOf(Props.Create(() => new SinkActor(peer.Counter)), "sink");
        peer._b.ActorOf(Props.Create<EchoActor>(), "echo");
        var address = ((ExtendedActorSystem)peer._b).Provider.DefaultAddress;
        var timeout = TimeSpan.FromSeconds(10);
        peer.Sink = await peer._a.ActorSelection(new RootActorPath(address) / "user" / "sink").ResolveOne(timeout);
        peer.Echo = await peer._a.ActorSelection(new RootActorPath(address) / "user" / "echo").ResolveOne(timeout);
        return peer;
    }

    /// <summary>Tells <paramref name="count"/> messages to the remote sink and waits until it counted them all.</summary>
    public Task StreamAsync(byte[] payload, int count)
    {
        var done = Counter.Reset(count);
        for (var i = 0; i < count; i++)
        {
            Sink.Tell(payload, ActorRefs.NoSender);
        }

        return done;
    }

    public Task<byte[]> EchoAsync(byte[] payload) => Echo.Ask<byte[]>(payload, TimeSpan.FromSeconds(10));

    public async ValueTask DisposeAsync()
    {
        await _a.Terminate();
        await _b.Terminate();
    }

    private sealed class SinkActor(Counter counter) : UntypedActor
    {
        protected override void OnReceive(object message) => counter.Hit();
    }

    private sealed class EchoActor : UntypedActor
    {
        protected override void OnReceive(object message) => Sender.Tell(message);
    }
}

/// <summary>
/// NATS (the broker reference): a nats-server from Debian started on a free loopback port, a publishing connection
/// and a subscribing connection (NATS.Net 3). The subscriber's buffer waits instead of dropping, so every message counts.
/// </summary>
internal sealed class NatsPeer : IAsyncDisposable
{
    private const string Subject = "bench.throughput";
    private Process? _server;
    private NatsConnection _publisher = null!;
    private NatsConnection _subscriber = null!;
    private readonly CancellationTokenSource _stop = new();
    private Task _reading = Task.CompletedTask;
    private Task _echoing = Task.CompletedTask;

    public Counter Counter { get; } = new();

    public static async Task<NatsPeer> StartAsync()
    {
        var peer = new NatsPeer();
        var port = FreePort();
        peer._server = Process.Start(new ProcessStartInfo("nats-server", $"-a 127.0.0.1 -p {port}") { RedirectStandardError = true, RedirectStandardOutput = true })
            ?? throw new InvalidOperationException("nats-server did not start (apt-get install -y nats-server).");
        peer._server.ErrorDataReceived += static (_, _) => { };
        peer._server.OutputDataReceived += static (_, _) => { };
        peer._server.BeginErrorReadLine();
        peer._server.BeginOutputReadLine();
        var url = $"nats://127.0.0.1:{port}";
        var opts = new NatsOpts { Url = url, SubPendingChannelFullMode = BoundedChannelFullMode.Wait, SubPendingChannelCapacity = 65_536 };
        peer._publisher = new NatsConnection(opts);
        peer._subscriber = new NatsConnection(opts);
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                await peer._publisher.ConnectAsync();
                await peer._subscriber.ConnectAsync();
                break;
            }
            catch (NatsException) when (deadline.Elapsed < TimeSpan.FromSeconds(10))
            {
                await Task.Delay(50);
            }
        }

        var sink = await peer._subscriber.SubscribeCoreAsync<byte[]>(Subject, cancellationToken: peer._stop.Token);
        peer._reading = peer.ReadAsync(sink);
        var echo = await peer._subscriber.SubscribeCoreAsync<byte[]>("bench.echo", cancellationToken: peer._stop.Token);
        peer._echoing = EchoAsync(echo, peer._stop.Token);
        await peer._subscriber.PingAsync();
        return peer;
    }

    /// <summary>Publishes <paramref name="count"/> messages and waits until the subscriber counted them all.</summary>
    public async Task StreamAsync(byte[] payload, int count)
    {
        var done = Counter.Reset(count);
        for (var i = 0; i < count; i++)
        {
            await _publisher.PublishAsync(Subject, payload);
        }

        await done;
    }

    public async Task<byte[]> EchoAsync(byte[] payload) =>
        (await _publisher.RequestAsync<byte[], byte[]>("bench.echo", payload)).Data!;

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _publisher.DisposeAsync();
        await _subscriber.DisposeAsync();
        await Quietly(_reading);
        await Quietly(_echoing);
        if (_server is { HasExited: false })
        {
            _server.Kill();
            await _server.WaitForExitAsync();
        }

        _server?.Dispose();
        _stop.Dispose();
    }

    private async Task ReadAsync(INatsSub<byte[]> sink)
    {
        await foreach (var _ in sink.Msgs.ReadAllAsync(_stop.Token))
        {
            Counter.Hit();
        }
    }

    private static async Task EchoAsync(INatsSub<byte[]> requests, CancellationToken cancellationToken)
    {
        await foreach (var msg in requests.Msgs.ReadAllAsync(cancellationToken))
        {
            await msg.ReplyAsync(msg.Data, cancellationToken: cancellationToken);
        }
    }

    private static async Task Quietly(Task task)
    {
        try
        {
            await task;
        }
        catch (Exception ex) when (ex is OperationCanceledException or NatsException or ObjectDisposedException)
        {
            // Stopping.
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
