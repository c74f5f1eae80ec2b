using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Consuming;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Transport;

namespace Patterns.Benchmarks;

/// <summary>
/// What consume filters cost. Two views, each with its own baseline (no filter registered):
/// <list type="bullet">
/// <item><c>PubSub</c>: publish to one in-process subscriber and wait until it is handled, as in
/// <see cref="PubSubBenchmarks"/>, with 0 and with 3 filters that each call the next.</item>
/// <item><c>Handler</c>: the delivery handler a transport calls for each message (the kernel's consumer path, the
/// consumer and its filters), called directly, so the filters' cost is not lost in the transport's noise.</item>
/// </list>
/// </summary>
[Config(typeof(BenchmarkConfig))]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class FilterBenchmarks
{
    private const int Messages = 100_000;
    private const string Topic = "ping";

    private readonly BatchSignal _signal = new();
    private ServiceProvider? _noFilters;
    private ServiceProvider? _threeFilters;
    private IPublisher? _publisherNoFilters;
    private IPublisher? _publisherThreeFilters;
    private DeliveryHandler? _handlerNoFilters;
    private DeliveryHandler? _handlerThreeFilters;
    private Envelope _envelope;

    [GlobalSetup]
    public async Task Setup()
    {
        (_noFilters, _publisherNoFilters) = await StartAsync(filters: 0);
        (_threeFilters, _publisherThreeFilters) = await StartAsync(filters: 3);
        (_, _handlerNoFilters) = await CaptureHandlerAsync(filters: 0);
        (_, _handlerThreeFilters) = await CaptureHandlerAsync(filters: 3);
        _envelope = new Envelope { MessageId = Guid.NewGuid(), MessageType = "ping", Body = new Ping(1) };
    }

    [GlobalCleanup]
    public async Task Cleanup()
    {
        await Hosting.StopAndDisposeAsync(_noFilters);
        await Hosting.StopAndDisposeAsync(_threeFilters);
    }

    [BenchmarkCategory("PubSub")]
    [Benchmark(Baseline = true, OperationsPerInvoke = Messages)]
    public Task PubSubNoFilters() => PublishAsync(_publisherNoFilters!);

    [BenchmarkCategory("PubSub")]
    [Benchmark(OperationsPerInvoke = Messages)]
    public Task PubSubThreeFilters() => PublishAsync(_publisherThreeFilters!);

    [BenchmarkCategory("Handler")]
    [Benchmark(Baseline = true, OperationsPerInvoke = Messages)]
    public Task HandlerNoFilters() => HandleAsync(_handlerNoFilters!);

    [BenchmarkCategory("Handler")]
    [Benchmark(OperationsPerInvoke = Messages)]
    public Task HandlerThreeFilters() => HandleAsync(_handlerThreeFilters!);

    private async Task PublishAsync(IPublisher publisher)
    {
        var done = _signal.Reset(Messages);
        for (var i = 0; i < Messages; i++)
        {
            await publisher.PublishAsync(Topic, new Ping(i));
        }

        await done;
    }

    private async Task HandleAsync(DeliveryHandler handler)
    {
        var done = _signal.Reset(Messages);
        for (var i = 0; i < Messages; i++)
        {
            await handler(_envelope, CancellationToken.None);
        }

        await done;
    }

    private async Task<(ServiceProvider Services, IPublisher Publisher)> StartAsync(int filters)
    {
        var services = Build(filters, configure: null);
        await Hosting.StartAsync(services);
        return (services, services.GetRequiredService<IPublisher>());
    }

    /// <summary>Starts a host on a transport that only records the delivery handler the consumer subscribes with.</summary>
    private async Task<(ServiceProvider Services, DeliveryHandler Handler)> CaptureHandlerAsync(int filters)
    {
        var capture = new CapturingTransport();
        var services = Build(filters, p => p.UseTransport(_ => capture));
        await Hosting.StartAsync(services);
        return (services, capture.Handler!);
    }

    private ServiceProvider Build(int filters, Action<global::Patterns.Hosting.PatternsBuilder>? configure)
    {
        var signal = _signal;
        var services = new ServiceCollection();
        var patterns = services.AddPatterns(configure);
        for (var i = 0; i < filters; i++)
        {
            patterns.AddConsumeFilter(new PassThroughFilter());
        }

        services.AddPubSub(ps => ps.Subscribe<Ping>(
            (message, context, cancellationToken) =>
            {
                signal.Signal();
                return ValueTask.CompletedTask;
            },
            topic: Topic,
            configure: o => o.ConsumerGroup = "bench"));
        return services.BuildServiceProvider();
    }

    /// <summary>The cheapest useful filter: it looks at the context and calls the next step.</summary>
    private sealed class PassThroughFilter : IConsumeFilter
    {
        public ValueTask InvokeAsync(ConsumeContext context, ConsumeDelegate next) =>
            context.CancellationToken.IsCancellationRequested ? ValueTask.FromCanceled(context.CancellationToken) : next(context);
    }

    /// <summary>A transport that delivers nothing and remembers the handler it was given.</summary>
    private sealed class CapturingTransport : MessageTransport
    {
        public DeliveryHandler? Handler { get; private set; }

        public override string SystemName => "capture";

        public override bool IsInProcess => true;

        public override int MaxPayloadBytes => int.MaxValue;

        public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) => default;

        public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default) => default;

        public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default) => new(false);

        public override ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default)
        {
            Handler = handler;
            return new(new NoSubscription(request));
        }

        public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            new(Array.Empty<DeadLetterMessage>());

        public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) => new(0);

        public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) => new(0);

        public override ValueTask DisposeAsync() => default;
    }

    private sealed class NoSubscription(SubscriptionRequest request) : TransportSubscription
    {
        public override SubscriptionRequest Request { get; } = request;

        public override Task StopAsync(CancellationToken drainDeadline) => Task.CompletedTask;
    }
}
