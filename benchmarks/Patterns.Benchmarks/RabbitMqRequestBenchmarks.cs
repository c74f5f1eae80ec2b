using System.Collections.Concurrent;
using System.Text.Json;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Patterns.RabbitMq;
using RabbitMQ.Client;

namespace Patterns.Benchmarks;

/// <summary>
/// Request-response round trips through a local RabbitMQ broker: the request is published persistent with a
/// confirm to a durable request queue, the handler (in the same process) publishes the response to the caller's
/// reply queue, and the caller waits for it. One operation is one round trip, one at a time; every iteration is
/// one request, so the P99 column is the 99th percentile request latency.
/// </summary>
[Config(typeof(LatencyConfig))]
[SimpleJob(RunStrategy.Monitoring, launchCount: 1, warmupCount: 50, iterationCount: 1000, invocationCount: 1)]
public class RabbitMqRequestBenchmarks
{
    private readonly Req _request = new(1);

    // RabbitMQ.Client directly.
    private RawRequestResponse? _raw;

    // Patterns.
    private ServiceProvider? _patternsServices;
    private global::Patterns.RequestResponse.IRequestClient? _client;
    private string _patternsPrefix = string.Empty;

    // MassTransit.
    private ServiceProvider? _massTransitServices;
    private IRequestClient<Req>? _massTransitClient;
    private string _massTransitQueue = string.Empty;

    /// <summary>Gets the last response id, so the calls cannot be optimized away.</summary>
    public int Sink { get; private set; }

    [GlobalSetup(Target = nameof(RawClient))]
    public async Task SetupRaw() => _raw = await RawRequestResponse.StartAsync(RabbitMqBench.NewPrefix("raw") + "requests");

    [GlobalCleanup(Target = nameof(RawClient))]
    public Task CleanupRaw() => _raw!.DisposeAsync().AsTask();

    [GlobalSetup(Target = nameof(Patterns))]
    public async Task SetupPatterns()
    {
        _patternsPrefix = RabbitMqBench.NewPrefix("patterns");
        var services = new ServiceCollection();
        services.AddPatterns(p => p.UseRabbitMq(o =>
        {
            o.Uri = RabbitMqBench.Uri;
            o.NamePrefix = _patternsPrefix;
            o.PrefetchCount = RabbitMqBench.Prefetch;
        }));
        services.AddRequestResponse(r => r.AddHandler<Req, Resp, EchoHandler>(lifetime: ServiceLifetime.Singleton));
        _patternsServices = services.BuildServiceProvider();
        await Hosting.StartAsync(_patternsServices);
        _client = _patternsServices.GetRequiredService<global::Patterns.RequestResponse.IRequestClient>();
    }

    [GlobalCleanup(Target = nameof(Patterns))]
    public async Task CleanupPatterns()
    {
        await Hosting.StopAndDisposeAsync(_patternsServices);
        var queue = _patternsPrefix + "requests." + new global::Patterns.Messaging.MessageTypeRegistry().GetName(typeof(Req));
        await RabbitMqBench.DeleteAsync([queue, queue + ".dlq"], [queue + ".dlx"]);
    }

    [GlobalSetup(Target = nameof(MassTransit))]
    public async Task SetupMassTransit()
    {
        _massTransitQueue = RabbitMqBench.NewPrefix("masstransit") + "requests";
        var services = new ServiceCollection();
        services.AddLogging(); // MassTransit's hosted service and health checks need ILogger<T>; no providers, so nothing is written.
        services.Configure<MassTransitHostOptions>(o => o.WaitUntilStarted = true); // measure a started bus, not its start-up
        services.AddMassTransit(x =>
        {
            x.AddConsumer<EchoConsumer>();
            x.UsingRabbitMq((context, cfg) =>
            {
                RabbitMqBench.Host(cfg);
                cfg.ReceiveEndpoint(_massTransitQueue, e =>
                {
                    e.Durable = true;
                    e.PrefetchCount = RabbitMqBench.Prefetch;
                    e.ConfigureConsumer<EchoConsumer>(context);
                });
            });
        });
        _massTransitServices = services.BuildServiceProvider();
        await Hosting.StartAsync(_massTransitServices);
        _massTransitClient = _massTransitServices.GetRequiredService<IBus>().CreateRequestClient<Req>();
    }

    [GlobalCleanup(Target = nameof(MassTransit))]
    public async Task CleanupMassTransit()
    {
        await Hosting.StopAndDisposeAsync(_massTransitServices);
        await RabbitMqBench.DeleteAsync([_massTransitQueue], [_massTransitQueue, "Patterns.Benchmarks:Req"]);
    }

    /// <summary>The baseline: RabbitMQ.Client 7.1.2 directly, with an exclusive reply queue and correlation ids by hand.</summary>
    [Benchmark(Baseline = true)]
    public async Task RawClient() => Sink = (await _raw!.SendAsync(_request)).Id;

    /// <summary>Patterns: IRequestClient.SendAsync over the RabbitMQ transport.</summary>
    [Benchmark]
    public async Task Patterns() => Sink = (await _client!.SendAsync<Req, Resp>(_request)).Id;

    /// <summary>MassTransit.RabbitMQ 8.4.0: a request client and a consumer that responds.</summary>
    [Benchmark]
    public async Task MassTransit() => Sink = (await _massTransitClient!.GetResponse<Resp>(_request)).Message.Id;

    /// <summary>Request-response written against RabbitMQ.Client directly: what a careful hand-written version does.</summary>
    private sealed class RawRequestResponse : IAsyncDisposable
    {
        private readonly ConcurrentDictionary<string, TaskCompletionSource<Resp>> _pending = new();
        private IConnection _publishConnection = null!;
        private IConnection _consumeConnection = null!;
        private IChannel _publish = null!;
        private IChannel _serverChannel = null!;
        private IChannel _replyChannel = null!;
        private string _requestQueue = string.Empty;
        private string _replyQueue = string.Empty;

        public static async Task<RawRequestResponse> StartAsync(string requestQueue)
        {
            var raw = new RawRequestResponse { _requestQueue = requestQueue };
            var factory = new ConnectionFactory { Uri = RabbitMqBench.Uri };
            raw._publishConnection = await factory.CreateConnectionAsync();
            raw._consumeConnection = await factory.CreateConnectionAsync();
            raw._publish = await raw._publishConnection.CreateChannelAsync(
                new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true, outstandingPublisherConfirmationsRateLimiter: null));
            await raw._publish.QueueDeclareAsync(requestQueue, durable: true, exclusive: false, autoDelete: false);

            raw._serverChannel = await raw._consumeConnection.CreateChannelAsync();
            await raw._serverChannel.BasicQosAsync(0, RabbitMqBench.Prefetch, global: false);
            await raw._serverChannel.BasicConsumeAsync(requestQueue, autoAck: false, new ServerConsumer(raw, raw._serverChannel));

            raw._replyChannel = await raw._consumeConnection.CreateChannelAsync();
            raw._replyQueue = (await raw._replyChannel.QueueDeclareAsync(string.Empty, durable: false, exclusive: true, autoDelete: true)).QueueName;
            await raw._replyChannel.BasicQosAsync(0, RabbitMqBench.Prefetch, global: false);
            await raw._replyChannel.BasicConsumeAsync(raw._replyQueue, autoAck: false, new ReplyConsumer(raw, raw._replyChannel));
            return raw;
        }

        public async Task<Resp> SendAsync(Req request)
        {
            var correlation = Guid.NewGuid().ToString();
            var pending = new TaskCompletionSource<Resp>(TaskCreationOptions.RunContinuationsAsynchronously);
            _pending[correlation] = pending;
            var properties = new BasicProperties
            {
                Persistent = true,
                MessageId = correlation,
                CorrelationId = correlation,
                ReplyTo = _replyQueue,
                Type = "bench.req",
                ContentType = "application/json",
            };
            await _publish.BasicPublishAsync(string.Empty, _requestQueue, mandatory: true, properties, JsonSerializer.SerializeToUtf8Bytes(request, RabbitMqBench.Json));
            return await pending.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }

        public async ValueTask DisposeAsync()
        {
            await _publish.QueueDeleteAsync(_requestQueue, ifUnused: false, ifEmpty: false);
            await _consumeConnection.CloseAsync();
            await _publishConnection.CloseAsync();
        }

        private sealed class ServerConsumer(RawRequestResponse owner, IChannel channel) : AsyncDefaultBasicConsumer(channel)
        {
            public override async Task HandleBasicDeliverAsync(
                string consumerTag, ulong deliveryTag, bool redelivered, string exchange, string routingKey,
                IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> body, CancellationToken cancellationToken = default)
            {
                var request = JsonSerializer.Deserialize<Req>(body.Span, RabbitMqBench.Json)!;
                var reply = new BasicProperties
                {
                    Persistent = true,
                    MessageId = Guid.NewGuid().ToString(),
                    CorrelationId = properties.CorrelationId,
                    Type = "bench.resp",
                    ContentType = "application/json",
                };
                await owner._publish.BasicPublishAsync(string.Empty, properties.ReplyTo!, mandatory: true, reply, JsonSerializer.SerializeToUtf8Bytes(new Resp(request.Id), RabbitMqBench.Json), cancellationToken);
                await Channel.BasicAckAsync(deliveryTag, multiple: false, cancellationToken);
            }
        }

        private sealed class ReplyConsumer(RawRequestResponse owner, IChannel channel) : AsyncDefaultBasicConsumer(channel)
        {
            public override async Task HandleBasicDeliverAsync(
                string consumerTag, ulong deliveryTag, bool redelivered, string exchange, string routingKey,
                IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> body, CancellationToken cancellationToken = default)
            {
                if (properties.CorrelationId is { } correlation && owner._pending.TryRemove(correlation, out var pending))
                {
                    pending.TrySetResult(JsonSerializer.Deserialize<Resp>(body.Span, RabbitMqBench.Json)!);
                }

                await Channel.BasicAckAsync(deliveryTag, multiple: false, cancellationToken);
            }
        }
    }
}
