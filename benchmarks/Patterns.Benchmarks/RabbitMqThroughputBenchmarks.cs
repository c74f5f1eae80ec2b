using System.Text.Json;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Patterns.PubSub;
using Patterns.RabbitMq;
using RabbitMQ.Client;
using Wolverine;
using Wolverine.RabbitMQ;

namespace Patterns.Benchmarks;

/// <summary>
/// Publish persistent messages to a topic through a local RabbitMQ broker, with publisher confirms, and consume
/// them from one durable queue with one consumer (prefetch 256, one message handled at a time, acknowledged after
/// it is handled). One operation is one message published, confirmed, delivered, deserialized and acknowledged.
/// Every side publishes with 128 confirms in flight and serializes the same record as JSON.
/// </summary>
[Config(typeof(BenchmarkConfig))]
[SimpleJob(RunStrategy.Monitoring, launchCount: 1, warmupCount: 1, iterationCount: 5, invocationCount: 1)]
public class RabbitMqThroughputBenchmarks
{
    /// <summary>Messages per invocation.</summary>
    public const int Messages = 100_000;

    private readonly BatchSignal _signal = new();

    // RabbitMQ.Client directly.
    private IConnection? _rawPublishConnection;
    private IConnection? _rawConsumeConnection;
    private IChannel? _rawPublishChannel;
    private IChannel? _rawConsumeChannel;
    private string _rawExchange = string.Empty;
    private string _rawQueue = string.Empty;

    // Patterns.
    private ServiceProvider? _patternsServices;
    private IPublisher? _publisher;
    private string _patternsPrefix = string.Empty;

    // MassTransit.
    private ServiceProvider? _massTransitServices;
    private IBus? _bus;
    private string _massTransitQueue = string.Empty;

    // Wolverine.
    private WolverineSession? _wolverine;
    private string _wolverineExchange = string.Empty;
    private string _wolverineQueue = string.Empty;

    [GlobalSetup(Target = nameof(RawClient))]
    public async Task SetupRaw()
    {
        var prefix = RabbitMqBench.NewPrefix("raw");
        _rawExchange = prefix + "topics";
        _rawQueue = prefix + "ticks";
        var factory = new ConnectionFactory { Uri = RabbitMqBench.Uri };
        _rawPublishConnection = await factory.CreateConnectionAsync();
        _rawConsumeConnection = await factory.CreateConnectionAsync();
        _rawPublishChannel = await _rawPublishConnection.CreateChannelAsync(
            new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true, outstandingPublisherConfirmationsRateLimiter: null));
        await _rawPublishChannel.ExchangeDeclareAsync(_rawExchange, RabbitMQ.Client.ExchangeType.Topic, durable: true, autoDelete: false);
        await _rawPublishChannel.QueueDeclareAsync(_rawQueue, durable: true, exclusive: false, autoDelete: false);
        await _rawPublishChannel.QueueBindAsync(_rawQueue, _rawExchange, "ticks");

        _rawConsumeChannel = await _rawConsumeConnection.CreateChannelAsync();
        await _rawConsumeChannel.BasicQosAsync(0, RabbitMqBench.Prefetch, global: false);
        await _rawConsumeChannel.BasicConsumeAsync(_rawQueue, autoAck: false, new RawTickConsumer(_rawConsumeChannel, _signal));
    }

    [GlobalCleanup(Target = nameof(RawClient))]
    public async Task CleanupRaw()
    {
        await _rawConsumeChannel!.CloseAsync();
        await _rawPublishChannel!.CloseAsync();
        await _rawConsumeConnection!.CloseAsync();
        await _rawPublishConnection!.CloseAsync();
        await RabbitMqBench.DeleteAsync([_rawQueue], [_rawExchange]);
    }

    [GlobalSetup(Target = nameof(Patterns))]
    public async Task SetupPatterns()
    {
        var signal = _signal;
        _patternsPrefix = RabbitMqBench.NewPrefix("patterns");
        var services = new ServiceCollection();
        services.AddPatterns(p => p.UseRabbitMq(o =>
        {
            o.Uri = RabbitMqBench.Uri;
            o.NamePrefix = _patternsPrefix;
            o.PrefetchCount = RabbitMqBench.Prefetch;
        }));
        services.AddPubSub(ps => ps.Subscribe<Tick>(
            (message, context, cancellationToken) =>
            {
                signal.Signal();
                return ValueTask.CompletedTask;
            },
            topic: "ticks",
            configure: o => o.ConsumerGroup = "ticks"));
        _patternsServices = services.BuildServiceProvider();
        await Hosting.StartAsync(_patternsServices);
        _publisher = _patternsServices.GetRequiredService<IPublisher>();
    }

    [GlobalCleanup(Target = nameof(Patterns))]
    public async Task CleanupPatterns()
    {
        await Hosting.StopAndDisposeAsync(_patternsServices);
        await RabbitMqBench.DeleteAsync(
            [_patternsPrefix + "ticks", _patternsPrefix + "ticks.dlq"],
            [_patternsPrefix + "ticks.dlx", _patternsPrefix + "patterns.topics"]);
    }

    [GlobalSetup(Target = nameof(MassTransit))]
    public async Task SetupMassTransit()
    {
        _massTransitQueue = RabbitMqBench.NewPrefix("masstransit") + "ticks";
        var services = new ServiceCollection();
        services.AddLogging(); // MassTransit's hosted service and health checks need ILogger<T>; no providers, so nothing is written.
        services.Configure<MassTransitHostOptions>(o => o.WaitUntilStarted = true); // measure a started bus, not its start-up
        services.AddSingleton(_signal);
        services.AddMassTransit(x =>
        {
            x.AddConsumer<TickConsumer>();
            x.UsingRabbitMq((context, cfg) =>
            {
                RabbitMqBench.Host(cfg);
                cfg.ReceiveEndpoint(_massTransitQueue, e =>
                {
                    e.Durable = true;
                    e.PrefetchCount = RabbitMqBench.Prefetch;
                    e.ConcurrentMessageLimit = 1;
                    e.ConfigureConsumer<TickConsumer>(context);
                });
            });
        });
        _massTransitServices = services.BuildServiceProvider();
        await Hosting.StartAsync(_massTransitServices);
        _bus = _massTransitServices.GetRequiredService<IBus>();
    }

    [GlobalCleanup(Target = nameof(MassTransit))]
    public async Task CleanupMassTransit()
    {
        await Hosting.StopAndDisposeAsync(_massTransitServices);
        await RabbitMqBench.DeleteAsync([_massTransitQueue], [_massTransitQueue, "Patterns.Benchmarks:Tick"]);
    }

    [GlobalSetup(Target = nameof(WolverineRabbitMq))]
    public async Task SetupWolverine()
    {
        var prefix = RabbitMqBench.NewPrefix("wolverine");
        _wolverineExchange = prefix + "topics";
        _wolverineQueue = prefix + "ticks";
        var exchange = _wolverineExchange;
        var queue = _wolverineQueue;
        _wolverine = await WolverineSession.StartAsync(
            typeof(WolverineTickHandler),
            o =>
            {
                // Wolverine's RabbitMQ transport as its docs set it up: a topic exchange bound to a durable queue, both
                // declared at start. Sends are persistent; its one listener handles a message at a time and acknowledges
                // it after the handler (inline processing), with the same prefetch as the other sides. Its dead-letter
                // and reply queues are not declared, so nothing is left on the broker.
                o.UseRabbitMq(RabbitMqBench.Uri)
                    .AutoProvision()
                    .DisableDeadLetterQueueing()
                    .DisableSystemRequestReplyQueueDeclaration()
                    .DeclareExchange(exchange, e =>
                    {
                        e.ExchangeType = global::Wolverine.RabbitMQ.ExchangeType.Topic;
                        e.BindQueue(queue, "ticks");
                    });
                o.PublishMessage<Tick>().ToRabbitTopic("ticks", exchange);
                o.ListenToRabbitQueue(queue).PreFetchCount(RabbitMqBench.Prefetch).ProcessInline();
            },
            _signal);
    }

    [GlobalCleanup(Target = nameof(WolverineRabbitMq))]
    public async Task CleanupWolverine()
    {
        if (_wolverine is not null)
        {
            await _wolverine.DisposeAsync();
        }

        await RabbitMqBench.DeleteAsync([_wolverineQueue], [_wolverineExchange]);
    }

    /// <summary>The baseline: RabbitMQ.Client 7.1.2 directly, a topic exchange bound to a durable queue, JSON by hand.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Messages)]
    public async Task RawClient()
    {
        var done = _signal.Reset(Messages);
        var channel = _rawPublishChannel!;
        var exchange = _rawExchange;
        await RabbitMqBench.PublishWindowedAsync(Messages, i =>
        {
            var properties = new BasicProperties
            {
                Persistent = true,
                MessageId = Guid.NewGuid().ToString(),
                Type = "bench.tick",
                ContentType = "application/json",
            };
            var body = JsonSerializer.SerializeToUtf8Bytes(new Tick(i), RabbitMqBench.Json);
            return channel.BasicPublishAsync(exchange, "ticks", mandatory: false, properties, body).AsTask();
        });
        await done;
    }

    /// <summary>Patterns: IPublisher.PublishAsync to a topic; a delegate subscription on the RabbitMQ transport.</summary>
    [Benchmark(OperationsPerInvoke = Messages)]
    public async Task Patterns()
    {
        var done = _signal.Reset(Messages);
        var publisher = _publisher!;
        await RabbitMqBench.PublishWindowedAsync(Messages, i => publisher.PublishAsync("ticks", new Tick(i)).AsTask());
        await done;
    }

    /// <summary>WolverineFx.RabbitMQ 6.64.2: IMessageBus.PublishAsync to a topic exchange; one inline listener on a durable queue.</summary>
    [Benchmark(OperationsPerInvoke = Messages)]
    public async Task WolverineRabbitMq()
    {
        var done = _signal.Reset(Messages);
        var bus = _wolverine!.Bus;
        await RabbitMqBench.PublishWindowedAsync(Messages, i => bus.PublishAsync(new Tick(i)).AsTask());
        await done;
    }

    /// <summary>MassTransit.RabbitMQ 8.5.12: IBus.Publish, one consumer on a durable receive endpoint.</summary>
    [Benchmark(OperationsPerInvoke = Messages)]
    public async Task MassTransit()
    {
        var done = _signal.Reset(Messages);
        var bus = _bus!;
        await RabbitMqBench.PublishWindowedAsync(Messages, i => bus.Publish(new Tick(i)));
        await done;
    }

    private sealed class RawTickConsumer(IChannel channel, BatchSignal signal) : AsyncDefaultBasicConsumer(channel)
    {
        public override async Task HandleBasicDeliverAsync(
            string consumerTag, ulong deliveryTag, bool redelivered, string exchange, string routingKey,
            IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> body, CancellationToken cancellationToken = default)
        {
            _ = JsonSerializer.Deserialize<Tick>(body.Span, RabbitMqBench.Json);
            signal.Signal();
            await Channel.BasicAckAsync(deliveryTag, multiple: false, cancellationToken);
        }
    }
}

/// <summary>The MassTransit consumer of <see cref="Tick"/>: counts it.</summary>
public sealed class TickConsumer(BatchSignal signal) : IConsumer<Tick>
{
    public Task Consume(ConsumeContext<Tick> context)
    {
        signal.Signal();
        return Task.CompletedTask;
    }
}

/// <summary>The Wolverine handler of <see cref="Tick"/>: counts it.</summary>
public static class WolverineTickHandler
{
    public static void Handle(Tick tick, BatchSignal signal) => signal.Signal();
}
