using System.Threading.Channels;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Queues;
using Wolverine;

namespace Patterns.Benchmarks;

/// <summary>
/// Send messages to a queue with four competing workers and wait until all are handled. One operation is
/// one message sent and handled. The message is a small class allocated per send.
/// </summary>
[Config(typeof(BenchmarkConfig))]
public class QueueBenchmarks
{
    /// <summary>Messages per invocation.</summary>
    public const int Messages = 100_000;

    /// <summary>Competing workers.</summary>
    public const int Workers = 4;

    /// <summary>Messages per invocation for Wolverine.</summary>
    public const int PeerMessages = 20_000;

    private const string Queue = "jobs";

    private readonly BatchSignal _signal = new();

    private Channel<Job>? _channel;
    private Task[] _channelReaders = [];

    private ServiceProvider? _patternsServices;
    private IQueueSender? _sender;

    private WolverineSession? _wolverine;

    [GlobalSetup(Target = nameof(ChannelRaw))]
    public void SetupChannel()
    {
        _channel = Channel.CreateBounded<Job>(new BoundedChannelOptions(1024)
        {
            SingleReader = false,
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait,
        });
        var reader = _channel.Reader;
        var signal = _signal;
        _channelReaders = new Task[Workers];
        for (var w = 0; w < Workers; w++)
        {
            _channelReaders[w] = Task.Run(async () =>
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
    }

    [GlobalCleanup(Target = nameof(ChannelRaw))]
    public async Task CleanupChannel()
    {
        _channel?.Writer.TryComplete();
        await Task.WhenAll(_channelReaders);
    }

    [GlobalSetup(Target = nameof(Patterns))]
    public async Task SetupPatterns()
    {
        var signal = _signal;
        var services = new ServiceCollection();
        services.AddMessageQueue(q => q
            .AddQueue(Queue, o => o.Capacity = 1024)
            .AddConsumer<Job>(
                Queue,
                (message, context, cancellationToken) =>
                {
                    signal.Signal();
                    return ValueTask.CompletedTask;
                },
                o => o.Concurrency = Workers));
        _patternsServices = services.BuildServiceProvider();
        await Hosting.StartAsync(_patternsServices);
        _sender = _patternsServices.GetRequiredService<IQueueSender>();
    }

    [GlobalCleanup(Target = nameof(Patterns))]
    public Task CleanupPatterns() => Hosting.StopAndDisposeAsync(_patternsServices);

    [GlobalSetup(Target = nameof(WolverineLocalQueue))]
    public async Task SetupWolverine() => _wolverine = await WolverineSession.StartAsync(typeof(WolverineJobHandler), o =>
        {
            o.PublishMessage<Job>().ToLocalQueue(Queue);
            o.LocalQueue(Queue).MaximumParallelMessages(Workers);
        }, _signal);

    [GlobalCleanup(Target = nameof(WolverineLocalQueue))]
    public async Task CleanupWolverine()
    {
        if (_wolverine is not null)
        {
            await _wolverine.DisposeAsync();
        }
    }

    /// <summary>The floor: a bounded channel (capacity 1024) read by four competing reader tasks.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Messages)]
    public async Task ChannelRaw()
    {
        var done = _signal.Reset(Messages);
        var writer = _channel!.Writer;
        for (var i = 0; i < Messages; i++)
        {
            await writer.WriteAsync(new Job(i));
        }

        await done;
    }

    /// <summary>A Patterns queue with one consumer of concurrency 4, in-process.</summary>
    [Benchmark(OperationsPerInvoke = Messages)]
    public async Task Patterns()
    {
        var done = _signal.Reset(Messages);
        var sender = _sender!;
        for (var i = 0; i < Messages; i++)
        {
            await sender.SendAsync(Queue, new Job(i));
        }

        await done;
    }

    /// <summary>Wolverine 6.64.2: <c>IMessageBus.SendAsync</c> to a local queue with 4 parallel messages (in memory, not durable).</summary>
    [Benchmark(OperationsPerInvoke = PeerMessages)]
    public async Task WolverineLocalQueue()
    {
        var done = _signal.Reset(PeerMessages);
        var bus = _wolverine!.Bus;
        for (var i = 0; i < PeerMessages; i++)
        {
            await bus.SendAsync(new Job(i));
        }

        await done;
    }
}
