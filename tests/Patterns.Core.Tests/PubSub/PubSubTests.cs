using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.Telemetry;
using Patterns.Transport;

namespace Patterns.Core.Tests.PubSub;

public sealed record Tick(int Publisher, int Sequence);

[MessageName("orders.placed")]
public sealed record OrderPlaced(string OrderId, decimal Amount);

public sealed class OrderPlacedHandler(HandlerLog log) : IMessageHandler<OrderPlaced>
{
    public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
    {
        log.Record(this, message.OrderId, context);
        return ValueTask.CompletedTask;
    }
}

public sealed class HandlerLog
{
    public ConcurrentQueue<(object Handler, string Value, MessageContext Context)> Entries { get; } = new();

    public void Record(object handler, string value, MessageContext context) => Entries.Enqueue((handler, value, context));
}

public sealed class PubSubTests
{
    [Fact]
    public async Task Publish_EightPublishersHundredThousandEach_EveryMessageDeliveredExactlyOnce()
    {
        const int publishers = 8;
        const int perPublisher = 100_000;
        var seen = new int[publishers * perPublisher];
        var remaining = publishers * perPublisher;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(b => b.AddPubSub(ps => ps.Subscribe<Tick>((tick, _, _) =>
        {
            Interlocked.Increment(ref seen[(tick.Publisher * perPublisher) + tick.Sequence]);
            if (Interlocked.Decrement(ref remaining) == 0)
            {
                done.SetResult();
            }

            return ValueTask.CompletedTask;
        }, "ticks", o => { o.ConsumerGroup = "counter"; o.Concurrency = 4; })), harness: false);
        var publisher = host.Services.GetRequiredService<IPublisher>();

        await Task.WhenAll(Enumerable.Range(0, publishers).Select(p => Task.Run(async () =>
        {
            for (var i = 0; i < perPublisher; i++)
            {
                await publisher.PublishAsync("ticks", new Tick(p, i));
            }
        })));
        await done.Task.WaitAsync(TestHost.Wait);
        await host.StopAsync();

        seen.Should().OnlyContain(n => n == 1, "each of the 800,000 messages is delivered exactly once");
    }

    [Fact]
    public async Task Publish_ByType_ReachesTypedSubscriptionUnderMessageName()
    {
        using var host = await TestHost.StartAsync(b =>
        {
            b.Services.AddSingleton<HandlerLog>();
            b.AddPubSub(ps => ps.Subscribe<OrderPlaced, OrderPlacedHandler>());
        });
        var harness = host.Harness();

        await host.Services.GetRequiredService<IPublisher>().PublishAsync(new OrderPlaced("o-1", 10m));
        await harness.WaitForDeliveriesAsync(1).WaitAsync(TestHost.Wait);

        var log = host.Services.GetRequiredService<HandlerLog>();
        log.Entries.Should().ContainSingle().Which.Value.Should().Be("o-1");
        harness.Sent.Single().Address.Should().Be(TransportAddress.Topic("orders.placed"));
        harness.Deliveries.Single().ConsumerGroup.Should().Be("orders.placed:OrderPlacedHandler");
    }

    [Fact]
    public async Task Publish_WildcardSubscriptions_FanOutToEveryMatchingGroup()
    {
        var star = new ConcurrentQueue<string>();
        var all = new ConcurrentQueue<string>();
        using var host = await TestHost.StartAsync(b => b.AddPubSub(ps => ps
            .Subscribe<OrderPlaced>((m, _, _) => { star.Enqueue(m.OrderId); return default; }, "orders.*", o => o.ConsumerGroup = "star")
            .Subscribe<OrderPlaced>((m, _, _) => { all.Enqueue(m.OrderId); return default; }, "orders.#", o => o.ConsumerGroup = "all")));
        var publisher = host.Services.GetRequiredService<IPublisher>();

        await publisher.PublishAsync("orders.placed", new OrderPlaced("a", 1));
        await publisher.PublishAsync("orders.eu.placed", new OrderPlaced("b", 2));
        await publisher.PublishAsync("payments.placed", new OrderPlaced("c", 3));
        await host.Harness().WaitForDeliveriesAsync(3).WaitAsync(TestHost.Wait);

        star.Should().Equal("a");
        all.Should().BeEquivalentTo(["a", "b"]);
    }

    [Fact]
    public async Task Publish_NoSubscriber_IsNoOpCountedInUnroutedMetric()
    {
        long unrouted = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == PatternsDiagnostics.MeterName && instrument.Name == "patterns.messages.unrouted")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "messaging.destination.name" && (string?)tag.Value == "nobody.listens")
                {
                    Interlocked.Add(ref unrouted, value);
                }
            }
        });
        listener.Start();
        using var host = await TestHost.StartAsync(b => b.AddPubSub());

        await host.Services.GetRequiredService<IPublisher>().PublishAsync("nobody.listens", new OrderPlaced("x", 1));

        Interlocked.Read(ref unrouted).Should().Be(1);
        host.Harness().Deliveries.Should().BeEmpty();
    }

    [Fact]
    public async Task Publish_WithListener_ProcessSpanIsChildOfPublishSpan()
    {
        var activities = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == PatternsDiagnostics.ActivitySourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activities.Enqueue,
        };
        ActivitySource.AddActivityListener(listener);
        var topic = $"traced.{Guid.NewGuid():N}";
        using var host = await TestHost.StartAsync(b => b.AddPubSub(ps => ps.Subscribe<OrderPlaced>((_, _, _) => default, topic, o => o.ConsumerGroup = "traced")));

        await host.Services.GetRequiredService<IPublisher>().PublishAsync(topic, new OrderPlaced("t", 1));
        await host.Harness().WaitForDeliveriesAsync(1).WaitAsync(TestHost.Wait);
        await host.StopAsync();

        var publish = activities.Single(a => a.DisplayName == $"publish {topic}");
        var process = activities.Single(a => a.DisplayName == $"process {topic}");
        publish.Kind.Should().Be(ActivityKind.Producer);
        process.Kind.Should().Be(ActivityKind.Consumer);
        process.ParentSpanId.Should().Be(publish.SpanId);
        process.TraceId.Should().Be(publish.TraceId);
        process.Links.Should().ContainSingle(l => l.Context.SpanId == publish.SpanId);
        process.GetTagItem("messaging.consumer.group.name").Should().Be("traced");
    }

    [Fact]
    public async Task Handler_FollowUpPublish_CarriesCorrelationAndCausation()
    {
        var followUps = new ConcurrentQueue<MessageContext>();
        using var host = await TestHost.StartAsync(b => b.AddPubSub(ps => ps
            .Subscribe<OrderPlaced>((m, ctx, ct) => ctx.PublishAsync("orders.followup", m with { OrderId = "next" }, ct), "orders.first", o => o.ConsumerGroup = "first")
            .Subscribe<OrderPlaced>((m, ctx, _) => { followUps.Enqueue(ctx); return default; }, "orders.followup", o => o.ConsumerGroup = "second")));

        await host.Services.GetRequiredService<IPublisher>().PublishAsync("orders.first", new OrderPlaced("o", 1));
        await host.Harness().WaitForDeliveriesAsync(2).WaitAsync(TestHost.Wait);

        var first = host.Harness().Sent[0].Envelope;
        var second = followUps.Single();
        second.CorrelationId.Should().Be(first.MessageId);
        second.Envelope.CausationId.Should().Be(first.MessageId);
        second.ConsumerGroup.Should().Be("second");
    }

    [Fact]
    public async Task Subscribe_HandlerByType_ResolvedInNewScopePerMessage()
    {
        using var host = await TestHost.StartAsync(b =>
        {
            b.Services.AddSingleton<HandlerLog>();
            b.AddPubSub(ps => ps.Subscribe<OrderPlaced, OrderPlacedHandler>("orders.scoped"));
        });
        var publisher = host.Services.GetRequiredService<IPublisher>();

        await publisher.PublishAsync("orders.scoped", new OrderPlaced("1", 1));
        await publisher.PublishAsync("orders.scoped", new OrderPlaced("2", 1));
        await host.Harness().WaitForDeliveriesAsync(2).WaitAsync(TestHost.Wait);

        var entries = host.Services.GetRequiredService<HandlerLog>().Entries.ToArray();
        entries.Should().HaveCount(2);
        entries[0].Handler.Should().NotBeSameAs(entries[1].Handler);
        entries[0].Context.Services.Should().NotBeSameAs(entries[1].Context.Services);
    }

    [Fact]
    public async Task Publish_MalformedPayloadFromTransport_DeadLetteredNamingTheProblem()
    {
        using var host = await TestHost.StartAsync(b => b.AddPubSub(ps => ps.Subscribe<OrderPlaced>((_, _, _) => default, "orders.raw", o => o.ConsumerGroup = "raw")));
        var transport = host.Services.GetRequiredService<MessageTransport>();
        var dlq = host.Services.GetRequiredService<IDeadLetterQueue>();

        await transport.PublishAsync("orders.raw", new Envelope { MessageId = Guid.NewGuid(), MessageType = "orders.placed", Payload = "{not json"u8.ToArray() });
        await transport.PublishAsync("orders.raw", new Envelope { MessageId = Guid.NewGuid(), MessageType = "no.such.type", Payload = "{}"u8.ToArray() });
        await transport.PublishAsync("orders.raw", new Envelope { MessageId = Guid.NewGuid(), MessageType = "orders.placed", Payload = "{\"orderId\":\"ok\",\"amount\":5}"u8.ToArray() });
        await host.Harness().WaitForDeliveriesAsync(3).WaitAsync(TestHost.Wait);

        var dead = await DeadLetters.WaitForAsync(dlq, "raw", 2);
        dead.Should().HaveCount(2);
        dead[0].Reason.Should().StartWith("Malformed payload").And.Contain("OrderPlaced");
        dead[1].Reason.Should().Contain("Unknown message type 'no.such.type'");
        host.Harness().Consumed<OrderPlaced>().Should().ContainSingle("the good message arrived serialized, and the harness reads its payload")
            .Which.OrderId.Should().Be("ok");
        host.Harness().Deliveries.Last().Outcome.Should().Be(SettlementKind.Ack);
    }
}
