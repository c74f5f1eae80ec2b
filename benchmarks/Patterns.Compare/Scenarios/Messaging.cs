using Microsoft.Extensions.DependencyInjection;
using Patterns.Batching;
using Patterns.PeerLinks;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;
using Patterns.Streaming;
using Patterns.Transport;

namespace Patterns.Compare.Scenarios;

/// <summary>A messaging row on the in-memory transport or RabbitMQ.</summary>
public abstract class MessagingScenario(TransportKind transport) : HostedScenario
{
    /// <summary>Gets the transport.</summary>
    protected TransportKind Transport => transport;

    private int[]? _ports;

    /// <summary>Gets the queue, group and request names the row declares, for the clean-up on RabbitMQ.</summary>
    protected virtual IEnumerable<string> Names => [];

    /// <summary>Gets the two nodes' loopback ports (peer links).</summary>
    private int[] Ports => _ports ??= [Servers.FreePort(), Servers.FreePort()];

    /// <inheritdoc />
    protected override bool HasRemoteNode => transport == TransportKind.PeerLinks;

    /// <summary>
    /// Calls <paramref name="send"/> for every sequence: one at a time in memory and over peer links (a send completes
    /// once the message is queued on the sending node), or with 128 sends awaiting their publisher confirms at once on
    /// RabbitMQ (as every RabbitMQ client is used for throughput).
    /// </summary>
    protected Task ProduceAsync(int first, int count, Func<OrderPlaced, ValueTask> send) =>
        Producer.RunAsync(first, count, transport == TransportKind.RabbitMq ? 128 : 1, send);

    /// <inheritdoc />
    protected override void Configure(IServiceCollection services)
    {
        services.AddPatterns(p =>
        {
            switch (transport)
            {
                case TransportKind.RabbitMq:
                    Servers.UseRabbitMq(p, Context);
                    break;
                case TransportKind.PeerLinks:
                    Servers.UsePeerLinks(p, 0, Ports);
                    break;
                default:
                    p.UseInMemory();
                    break;
            }
        });
        if (transport == TransportKind.PeerLinks)
        {
            // This node only produces: the handlers run on the other node (ConfigureRemote), across the link.
            services.AddRequestResponse();
            services.AddPubSub();
            services.AddMessageQueue();
        }
        else
        {
            ConfigurePattern(services);
        }
    }

    /// <inheritdoc />
    protected override void ConfigureRemote(IServiceCollection services)
    {
        services.AddPatterns(p => Servers.UsePeerLinks(p, 1, Ports));
        ConfigurePattern(services);
    }

    /// <inheritdoc />
    protected override async Task LinkedAsync(IServiceProvider local, IServiceProvider remote, CancellationToken cancellationToken)
    {
        // Each node learns the other's subscriptions when its link comes up, before the link reports Up.
        await local.GetRequiredService<PeerMembership>().WaitForAllUpAsync(cancellationToken);
        await remote.GetRequiredService<PeerMembership>().WaitForAllUpAsync(cancellationToken);
    }

    /// <summary>Registers the pattern's handlers.</summary>
    protected abstract void ConfigurePattern(IServiceCollection services);

    /// <inheritdoc />
    protected override Task CleanupAsync() =>
        transport == TransportKind.RabbitMq ? Servers.DeleteRabbitMqAsync(Context, Names) : Task.CompletedTask;
}

/// <summary>Sends orders with a bounded number of sends in flight, or from parallel callers.</summary>
public static class Producer
{
    /// <summary>
    /// Runs <paramref name="callers"/> callers in parallel; caller <c>c</c> calls <paramref name="call"/> for sequences
    /// <c>first + c</c>, <c>first + c + callers</c>, ..., each after the previous call completed.
    /// </summary>
    public static Task RunCallersAsync(int first, int count, int callers, Func<int, Task> call, CancellationToken cancellationToken)
    {
        var tasks = new Task[callers];
        for (var c = 0; c < callers; c++)
        {
            var caller = c;
            tasks[c] = Task.Run(
                async () =>
                {
                    for (var i = first + caller; i < first + count; i += callers)
                    {
                        await call(i);
                    }
                },
                cancellationToken);
        }

        return Task.WhenAll(tasks);
    }

    /// <summary>Calls <paramref name="send"/> for orders first .. first + count - 1, with at most <paramref name="window"/> in flight.</summary>
    public static async Task RunAsync(int first, int count, int window, Func<OrderPlaced, ValueTask> send)
    {
        if (window <= 1)
        {
            for (var i = first; i < first + count; i++)
            {
                await send(Orders.Create(i));
            }

            return;
        }

        var inFlight = new Task[window];
        var n = 0;
        for (var i = first; i < first + count; i++)
        {
            inFlight[n++] = send(Orders.Create(i)).AsTask();
            if (n == window)
            {
                await Task.WhenAll(inFlight);
                n = 0;
            }
        }

        await Task.WhenAll(inFlight.AsSpan(0, n).ToArray());
    }
}

/// <summary>Request-response: 16 callers in parallel, each awaiting its reply before the next request.</summary>
public sealed class RequestResponseScenario(TransportKind transport) : MessagingScenario(transport)
{
    /// <summary>Callers in parallel.</summary>
    public const int Callers = 16;

    private IRequestClient? _client;

    /// <inheritdoc />
    protected override IEnumerable<string> Names => ["requests.compare.order-placed"];

    /// <inheritdoc />
    public override async Task RunAsync(int first, int count, CancellationToken cancellationToken)
    {
        var deliveries = Context.Deliveries;
        deliveries.Expect(count);
        var client = _client!;
        await Producer.RunCallersAsync(
            first,
            count,
            Callers,
            async i =>
            {
                var reply = await client.SendAsync<OrderPlaced, OrderAccepted>(Orders.Create(i), cancellationToken);
                deliveries.Record(reply.SentAt);
            },
            cancellationToken);
        await deliveries.Completion.WaitAsync(cancellationToken);
    }

    /// <inheritdoc />
    protected override void ConfigurePattern(IServiceCollection services) =>
        services.AddRequestResponse(r => r.AddHandler<OrderPlaced, OrderAccepted, PlaceOrderHandler>(lifetime: ServiceLifetime.Singleton));

    /// <inheritdoc />
    protected override Task StartedAsync(CancellationToken cancellationToken)
    {
        _client = Services.GetRequiredService<IRequestClient>();
        return Task.CompletedTask;
    }
}

/// <summary>The request handler: the shared handler code, then the reply.</summary>
public sealed class PlaceOrderHandler : IRequestHandler<OrderPlaced, OrderAccepted>
{
    /// <inheritdoc />
    public ValueTask<OrderAccepted> HandleAsync(OrderPlaced request, CancellationToken cancellationToken) =>
        new(new OrderAccepted(request.OrderId, OrderHandler.Handle(request), request.SentAt));
}

/// <summary>Pub/sub: every order published to one topic, delivered to two subscribers (consumer groups).</summary>
public sealed class PubSubScenario(TransportKind transport) : MessagingScenario(transport)
{
    private IPublisher? _publisher;

    /// <inheritdoc />
    public override int Fanout => 2;

    /// <inheritdoc />
    protected override IEnumerable<string> Names => ["billing", "shipping"];

    /// <inheritdoc />
    public override async Task RunAsync(int first, int count, CancellationToken cancellationToken)
    {
        Context.Deliveries.Expect(count * 2);
        var publisher = _publisher!;
        await ProduceAsync(first, count, order => publisher.PublishAsync("orders", order, cancellationToken));
        await Context.Deliveries.Completion.WaitAsync(cancellationToken);
    }

    /// <inheritdoc />
    protected override void ConfigurePattern(IServiceCollection services)
    {
        var deliveries = Context.Deliveries;
        services.AddPubSub(ps =>
        {
            foreach (var group in new[] { "billing", "shipping" })
            {
                ps.Subscribe<OrderPlaced>(
                    (order, context, cancellationToken) =>
                    {
                        OrderHandler.Handle(order);
                        deliveries.Record(order.SentAt);
                        return ValueTask.CompletedTask;
                    },
                    topic: "orders",
                    configure: o => o.ConsumerGroup = group);
            }
        });
    }

    /// <inheritdoc />
    protected override Task StartedAsync(CancellationToken cancellationToken)
    {
        _publisher = Services.GetRequiredService<IPublisher>();
        return Task.CompletedTask;
    }
}

/// <summary>A row whose producer sends every order to one queue.</summary>
public abstract class QueueSendingScenario(TransportKind transport, string queue) : MessagingScenario(transport)
{
    private IQueueSender? _sender;

    /// <summary>Gets the queue.</summary>
    protected string Queue => queue;

    /// <inheritdoc />
    protected override IEnumerable<string> Names => [queue];

    /// <inheritdoc />
    public override async Task RunAsync(int first, int count, CancellationToken cancellationToken)
    {
        Context.Deliveries.Expect(count);
        var sender = _sender!;
        await ProduceAsync(first, count, order => sender.SendAsync(queue, order, cancellationToken));
        await Context.Deliveries.Completion.WaitAsync(cancellationToken);
    }

    /// <inheritdoc />
    protected override Task StartedAsync(CancellationToken cancellationToken)
    {
        _sender = Services.GetRequiredService<IQueueSender>();
        return Task.CompletedTask;
    }
}

/// <summary>A queue with four competing consumers (one consumer of concurrency 4).</summary>
public sealed class QueueScenario(TransportKind transport) : QueueSendingScenario(transport, "orders")
{
    /// <inheritdoc />
    protected override void ConfigurePattern(IServiceCollection services)
    {
        var deliveries = Context.Deliveries;
        services.AddMessageQueue(q => q
            .AddQueue(Queue, o => o.Capacity = 1024)
            .AddConsumer<OrderPlaced>(
                Queue,
                (order, context, cancellationToken) =>
                {
                    OrderHandler.Handle(order);
                    deliveries.Record(order.SentAt);
                    return ValueTask.CompletedTask;
                },
                o => o.Concurrency = 4));
    }
}

/// <summary>Batches of 100 from a queue: a batch consumer on the transport, acknowledging a batch after its handler.</summary>
public sealed class BatchConsumerScenario(TransportKind transport) : QueueSendingScenario(transport, "batches")
{
    /// <inheritdoc />
    protected override void ConfigurePattern(IServiceCollection services)
    {
        var deliveries = Context.Deliveries;
        services.AddBatching(b => b.AddBatchHandler<OrderPlaced>(
            TransportAddress.Queue(Queue),
            (batch, cancellationToken) =>
            {
                foreach (var order in batch.Items)
                {
                    OrderHandler.Handle(order);
                    deliveries.Record(order.SentAt);
                }

                return ValueTask.CompletedTask;
            },
            o =>
            {
                o.ConsumerGroup = "batches";
                o.MaxCount = 100;
                o.MaxAge = TimeSpan.FromMilliseconds(50);
            }));
    }
}

/// <summary>
/// A windowed stream over a pub/sub subscription: orders counted and totalled per region in 100 ms tumbling windows
/// of event time (the orders are 100 µs apart in event time, up to 50 ms out of order). Latency is per window result:
/// from the moment the window's last order was created to the moment its result is emitted.
/// </summary>
public sealed class WindowedStreamScenario(TransportKind transport) : MessagingScenario(transport)
{
    private const string Flush = "flush";
    private static readonly TimeSpan Window = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan OutOfOrder = TimeSpan.FromMilliseconds(50);
    private static readonly int FlushGap = (int)((Window + OutOfOrder) / Orders.Spacing) + 2;

    private IPublisher? _publisher;

    /// <summary>Gets the sequences a run uses beyond its orders (the order that closes its last windows).</summary>
    public static int Overhead => (2 * FlushGap) + 1;

    /// <inheritdoc />
    public override bool SparseLatencies => true;

    /// <inheritdoc />
    protected override IEnumerable<string> Names => ["windows"];

    /// <inheritdoc />
    public override async Task RunAsync(int first, int count, CancellationToken cancellationToken)
    {
        Context.Deliveries.Expect(count);
        var publisher = _publisher!;
        await ProduceAsync(first, count, order => publisher.PublishAsync("orders", order, cancellationToken));

        // An order far enough ahead in event time moves the watermark past every window of the run; its own region
        // ("flush") is not counted, and the next run starts after it.
        var flush = Orders.Create(first + count + FlushGap) with { Region = Flush };
        await publisher.PublishAsync("orders", flush, cancellationToken);
        await Context.Deliveries.Completion.WaitAsync(cancellationToken);
    }

    /// <inheritdoc />
    protected override void ConfigurePattern(IServiceCollection services)
    {
        var deliveries = Context.Deliveries;
        services.AddStreaming(s => s.AddPipeline("windows", sp => DataStream.FromSubscription<OrderPlaced>(sp, "orders", "windows")
            .WithEventTime(o => o.PlacedAt, OutOfOrder)
            .KeyBy(o => o.Region)
            .Window(WindowSpec.Tumbling(Window))
            .Aggregate((Count: 0, Total: 0m, LastSent: 0L), (acc, o) => (acc.Count + 1, acc.Total + OrderHandler.Handle(o), Math.Max(acc.LastSent, o.SentAt)))
            .To(r =>
            {
                if (r.Key != Flush)
                {
                    deliveries.RecordMany(r.Value.LastSent, r.Value.Count);
                }
            })));
    }

    /// <inheritdoc />
    protected override Task StartedAsync(CancellationToken cancellationToken)
    {
        _publisher = Services.GetRequiredService<IPublisher>();
        return Task.CompletedTask;
    }
}

/// <summary>An in-process batcher (no transport): batches of 100 handed to a handler on the batcher's worker.</summary>
public sealed class BatcherScenario : IScenario
{
    private Batcher<OrderPlaced>? _batcher;
    private Deliveries? _deliveries;

    /// <inheritdoc />
    public Task StartAsync(RunContext context, CancellationToken cancellationToken)
    {
        var deliveries = _deliveries = context.Deliveries;
        _batcher = Batcher.Create<OrderPlaced>(
            (batch, ct) =>
            {
                foreach (var order in batch.Items)
                {
                    OrderHandler.Handle(order);
                    deliveries.Record(order.SentAt);
                }

                return ValueTask.CompletedTask;
            },
            new BatchOptions { MaxCount = 100, MaxAge = TimeSpan.FromMilliseconds(50) });
        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public async Task RunAsync(int first, int count, CancellationToken cancellationToken)
    {
        _deliveries!.Expect(count);
        var batcher = _batcher!;
        for (var i = first; i < first + count; i++)
        {
            await batcher.AddAsync(Orders.Create(i), cancellationToken);
        }

        await _deliveries.Completion.WaitAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (_batcher is not null)
        {
            await _batcher.CompleteAsync();
        }
    }
}
