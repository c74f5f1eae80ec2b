using System.Threading.Channels;
using BenchmarkDotNet.Attributes;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.PubSub;
using Rebus.Activation;
using Rebus.Config;
using Rebus.Transport.InMem;
using Wolverine;

namespace Patterns.Benchmarks;

/// <summary>
/// Publish one message to one in-process subscriber and wait until it is handled. One operation is one
/// message published and handled: each invocation publishes a batch and waits for the whole batch.
/// The message is a small class allocated per publish, so every row allocates at least that (24 B).
/// </summary>
[Config(typeof(BenchmarkConfig))]
public class PubSubBenchmarks
{
    /// <summary>Messages per invocation for the channel and Patterns.</summary>
    public const int Messages = 100_000;

    /// <summary>Messages per invocation for MassTransit, which is much slower.</summary>
    public const int MassTransitMessages = 10_000;

    /// <summary>Messages per invocation for Wolverine and Rebus.</summary>
    public const int PeerMessages = 20_000;

    private const string Topic = "ping";

    private readonly BatchSignal _signal = new();

    private Channel<Ping>? _channel;
    private Task? _channelReader;

    private ServiceProvider? _patternsServices;
    private IPublisher? _publisher;

    private ServiceProvider? _massTransitServices;
    private IBus? _bus;
    private BatchSignal? _massTransitSignal;

    private WolverineSession? _wolverine;

    private BuiltinHandlerActivator? _rebusActivator;
    private Rebus.Bus.IBus? _rebusBus;

    [GlobalSetup(Target = nameof(ChannelRaw))]
    public void SetupChannel()
    {
        _channel = Channel.CreateBounded<Ping>(new BoundedChannelOptions(1024)
        {
            SingleReader = true,
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait,
        });
        var reader = _channel.Reader;
        var signal = _signal;
        _channelReader = Task.Run(async () =>
        {
            while (await reader.WaitToReadAsync())
            {
                while (reader.TryRead(out _))
                {
                    signal.Signal();
                }
            }
        });
    }

    [GlobalCleanup(Target = nameof(ChannelRaw))]
    public async Task CleanupChannel()
    {
        _channel?.Writer.TryComplete();
        if (_channelReader is not null)
        {
            await _channelReader;
        }
    }

    [GlobalSetup(Target = nameof(Patterns))]
    public async Task SetupPatterns()
    {
        var signal = _signal;
        var services = new ServiceCollection();
        services.AddPubSub(ps => ps.Subscribe<Ping>(
            (message, context, cancellationToken) =>
            {
                signal.Signal();
                return ValueTask.CompletedTask;
            },
            topic: Topic,
            configure: o => o.ConsumerGroup = "bench"));
        _patternsServices = services.BuildServiceProvider();
        await Hosting.StartAsync(_patternsServices);
        _publisher = _patternsServices.GetRequiredService<IPublisher>();
    }

    [GlobalCleanup(Target = nameof(Patterns))]
    public Task CleanupPatterns() => Hosting.StopAndDisposeAsync(_patternsServices);

    [GlobalSetup(Target = nameof(MassTransitInMemory))]
    public async Task SetupMassTransit()
    {
        var services = new ServiceCollection();
        services.AddLogging(); // MassTransit's hosted service and health checks need ILogger<T>; no providers, so nothing is written.
        services.AddSingleton<BatchSignal>();
        services.AddMassTransit(x =>
        {
            x.AddConsumer<PingConsumer>();
            x.UsingInMemory((context, cfg) => cfg.ConfigureEndpoints(context));
        });
        _massTransitServices = services.BuildServiceProvider();
        await Hosting.StartAsync(_massTransitServices);
        _bus = _massTransitServices.GetRequiredService<IBus>();
        _massTransitSignal = _massTransitServices.GetRequiredService<BatchSignal>();
    }

    [GlobalCleanup(Target = nameof(MassTransitInMemory))]
    public Task CleanupMassTransit() => Hosting.StopAndDisposeAsync(_massTransitServices);

    [GlobalSetup(Target = nameof(WolverineLocalQueue))]
    public async Task SetupWolverine() => _wolverine = await WolverineSession.StartAsync(typeof(WolverinePingHandler), o => o.PublishMessage<Ping>().ToLocalQueue("pings"), _signal);

    [GlobalCleanup(Target = nameof(WolverineLocalQueue))]
    public async Task CleanupWolverine()
    {
        if (_wolverine is not null)
        {
            await _wolverine.DisposeAsync();
        }
    }

    [GlobalSetup(Target = nameof(RebusInMemory))]
    public async Task SetupRebus()
    {
        var signal = _signal;
        _rebusActivator = new BuiltinHandlerActivator();
        _rebusActivator.Handle<Ping>(_ =>
        {
            signal.Signal();
            return Task.CompletedTask;
        });
        _rebusBus = Configure.With(_rebusActivator)
            .Logging(l => l.None())
            // The in-memory transport keeps subscriptions itself (it registers Rebus' subscription storage).
            .Transport(t => t.UseInMemoryTransport(new InMemNetwork(), "pings"))
            .Start();
        await _rebusBus.Subscribe<Ping>();
    }

    [GlobalCleanup(Target = nameof(RebusInMemory))]
    public void CleanupRebus() => _rebusActivator?.Dispose();

    /// <summary>The floor: a bounded channel (capacity 1024) with one reader task counting messages.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Messages)]
    public async Task ChannelRaw()
    {
        var done = _signal.Reset(Messages);
        var writer = _channel!.Writer;
        for (var i = 0; i < Messages; i++)
        {
            await writer.WriteAsync(new Ping(i));
        }

        await done;
    }

    /// <summary>Patterns pub/sub on the in-memory transport, one delegate subscriber.</summary>
    [Benchmark(OperationsPerInvoke = Messages)]
    public async Task Patterns()
    {
        var done = _signal.Reset(Messages);
        var publisher = _publisher!;
        for (var i = 0; i < Messages; i++)
        {
            await publisher.PublishAsync(Topic, new Ping(i));
        }

        await done;
    }

    /// <summary>MassTransit's in-memory bus, one consumer.</summary>
    [Benchmark(OperationsPerInvoke = MassTransitMessages)]
    public async Task MassTransitInMemory()
    {
        var done = _massTransitSignal!.Reset(MassTransitMessages);
        var bus = _bus!;
        for (var i = 0; i < MassTransitMessages; i++)
        {
            await bus.Publish(new Ping(i));
        }

        await done;
    }

    /// <summary>Wolverine 6.64.2: <c>IMessageBus.PublishAsync</c> to a local queue (in memory, not durable; default parallelism), one static handler.</summary>
    [Benchmark(OperationsPerInvoke = PeerMessages)]
    public async Task WolverineLocalQueue()
    {
        var done = _signal.Reset(PeerMessages);
        var bus = _wolverine!.Bus;
        for (var i = 0; i < PeerMessages; i++)
        {
            await bus.PublishAsync(new Ping(i));
        }

        await done;
    }

    /// <summary>Rebus 8.10.0: <c>IBus.Publish</c> on its in-memory transport (messages serialized), one subscriber (default workers and parallelism).</summary>
    [Benchmark(OperationsPerInvoke = PeerMessages)]
    public async Task RebusInMemory()
    {
        var done = _signal.Reset(PeerMessages);
        var bus = _rebusBus!;
        for (var i = 0; i < PeerMessages; i++)
        {
            await bus.Publish(new Ping(i));
        }

        await done;
    }
}

/// <summary>The MassTransit consumer of <see cref="Ping"/>: counts it.</summary>
public sealed class PingConsumer(BatchSignal signal) : IConsumer<Ping>
{
    public Task Consume(ConsumeContext<Ping> context)
    {
        signal.Signal();
        return Task.CompletedTask;
    }
}
