using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Patterns.Batching;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;
using Patterns.Telemetry;
using Patterns.Transport;
using RabbitMQ.Client;

namespace Patterns.RabbitMq.Tests;

/// <summary>The host-level patterns, registered with AddPatterns(p => p.UseRabbitMq(...)), end to end through a real broker.</summary>
public sealed class RabbitMqHostingTests
{
    [Fact]
    public async Task RequestResponse_HandlerInAnotherHost_AnswersThroughTheBroker()
    {
        await Broker.RequireAsync();
        var prefix = Broker.Prefix("rr");
        await using var server = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddRequestResponse(r => r
            .AddHandler<GetQuote, Quote>((request, _) => new(new Quote(request.Symbol, request.Symbol.Length * 10.5m)))));
        await using var client = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddPatterns());
        var requests = client.Get<IRequestClient>();

        var quotes = await Task.WhenAll(Enumerable.Range(1, 20).Select(i => requests.SendAsync<GetQuote, Quote>(new GetQuote(new string('X', i))).AsTask()));

        quotes.Select(q => q.Price).Should().Equal(Enumerable.Range(1, 20).Select(i => i * 10.5m));
    }

    [Fact]
    public async Task RequestResponse_HandlerThrows_CallerGetsRemoteErrorTypeAndMessage()
    {
        await using var host = await RabbitHost.StartAsync("rr-fail", b => b.AddRequestResponse(r => r
            .AddHandler<GetQuote, Quote>((request, _) => throw new ArgumentException($"unknown symbol {request.Symbol}"))));

        var act = async () => await host.Get<IRequestClient>().SendAsync<GetQuote, Quote>(new GetQuote("NOPE"));

        var failed = (await act.Should().ThrowAsync<RequestFailedException>()).Which;
        failed.RemoteErrorType.Should().Be(typeof(ArgumentException).FullName);
        failed.RemoteMessage.Should().Be("unknown symbol NOPE");
    }

    [Fact]
    public async Task RequestResponse_NobodyHandlesTheRequest_HandlerNotFoundException()
    {
        await using var host = await RabbitHost.StartAsync("rr-none", b => b.AddPatterns());

        var act = async () => await host.Get<IRequestClient>().SendAsync<GetQuote, Quote>(new GetQuote("X"));

        (await act.Should().ThrowAsync<HandlerNotFoundException>()).Which.Message.Should().Contain("tests.get-quote");
    }

    [Fact]
    public async Task RequestResponse_NobodyHandlesTheRequest_SaysNoHandlerRunsRatherThanToDeclareTheQueue()
    {
        await using var host = await RabbitHost.StartAsync("rr-none-why", b => b.AddPatterns());

        var act = async () => await host.Get<IRequestClient>().SendAsync<GetQuote, Quote>(new GetQuote("X"));

        // Declaring the request queue would only park requests until they time out: what is missing is a handler.
        var thrown = (await act.Should().ThrowAsync<HandlerNotFoundException>()).Which;
        thrown.ToString().Should().NotContain("AddMessageQueue").And.NotContain("Declare it");
        thrown.InnerException!.Message.Should().Contain("no consumer of it").And.Contain("request handler");
        thrown.Message.Should().Contain("do not declare the request queue yourself");
    }

    [Fact]
    public async Task RequestResponse_HandlerTooSlow_RequestTimeoutException()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var host = await RabbitHost.StartAsync("rr-slow", b => b.AddRequestResponse(r => r
            .AddHandler<GetQuote, Quote>(async (request, _) =>
            {
                await release.Task;
                return new Quote(request.Symbol, 1m);
            })));

        try
        {
            var act = async () => await host.Get<IRequestClient>().SendAsync<GetQuote, Quote>(new GetQuote("SLOW"), TimeSpan.FromMilliseconds(300));

            (await act.Should().ThrowAsync<RequestTimeoutException>()).Which.RequestType.Should().Be("tests.get-quote");
        }
        finally
        {
            release.SetResult();
        }
    }

    [Fact]
    public async Task PubSub_TwoSubscriptionsOnAWildcard_EachGetsEveryMessageOnce()
    {
        var billing = new Collector<string>();
        var shipping = new Collector<string>();
        await using var host = await RabbitHost.StartAsync("pubsub", b => b.AddPubSub(ps => ps
            .Subscribe<OrderPlaced>((m, _, _) => { billing.Add(m.OrderId); return default; }, "orders.*", o => o.ConsumerGroup = "billing")
            .Subscribe<OrderPlaced>((m, _, _) => { shipping.Add(m.OrderId); return default; }, "orders.#", o => o.ConsumerGroup = "shipping")));
        var publisher = host.Get<IPublisher>();

        for (var i = 0; i < 10; i++)
        {
            await publisher.PublishAsync("orders.placed", new OrderPlaced($"o-{i}", i));
        }

        await publisher.PublishAsync("orders.eu.placed", new OrderPlaced("eu", 1));
        await billing.WaitForAsync(10);
        await shipping.WaitForAsync(11);

        billing.Items.Should().BeEquivalentTo(Enumerable.Range(0, 10).Select(i => $"o-{i}"));
        shipping.Items.Should().BeEquivalentTo(Enumerable.Range(0, 10).Select(i => $"o-{i}").Append("eu"));
    }

    [Fact]
    public async Task Queue_FourCompetingWorkers_EachMessageHandledOnceWithPartitionOrder()
    {
        var handled = new Collector<(string Key, int Number)>();
        await using var host = await RabbitHost.StartAsync("queue", b => b.AddMessageQueue(q => q
            .AddQueue("work", o => o.Capacity = 10_000)
            .AddConsumer<WorkItem>("work", async (m, context, _) =>
            {
                await Task.Yield();
                handled.Add((context.Envelope.PartitionKey!, m.Number));
            }, o => o.Concurrency = 4)));
        var sender = host.Get<IQueueSender>();

        for (var i = 0; i < 200; i++)
        {
            await sender.SendAsync("work", new WorkItem(i), new MessageOptions { PartitionKey = $"k{i % 5}" });
        }

        await handled.WaitForAsync(200);
        handled.Items.Select(h => h.Number).Should().BeEquivalentTo(Enumerable.Range(0, 200));
        foreach (var group in handled.Items.GroupBy(h => h.Key))
        {
            group.Select(h => h.Number).Should().BeInAscendingOrder($"messages with partition key {group.Key} are handled in send order");
        }
    }

    [Fact]
    public async Task BatchConsumer_OfAQueueOnTheBroker_GetsFullBatchesAndEveryMessageOnce()
    {
        var batches = new Collector<int[]>();
        await using var host = await RabbitHost.StartAsync("batch", b =>
        {
            b.AddMessageQueue(q => q.AddQueue("batched"));
            b.AddBatching(bb => bb.AddBatchHandler<WorkItem>(
                TransportAddress.Queue("batched"),
                (batch, _) =>
                {
                    batches.Add([.. batch.ToArray().Select(w => w.Number)]);
                    return default;
                },
                o =>
                {
                    o.ConsumerGroup = "batched";
                    o.MaxCount = 10;
                    o.MaxAge = TimeSpan.FromSeconds(30);
                }));
        });
        var sender = host.Get<IQueueSender>();

        for (var i = 0; i < 30; i++)
        {
            await sender.SendAsync("batched", new WorkItem(i));
        }

        await batches.WaitForAsync(3);
        batches.Items.Should().HaveCount(3).And.OnlyContain(b => b.Length == 10);
        batches.Items.SelectMany(b => b).Should().BeEquivalentTo(Enumerable.Range(0, 30));
    }

    [Fact]
    public async Task PoisonMessage_AfterTheConfiguredRedeliveries_EndsInTheDeadLetterQueueWithTheException()
    {
        var deliveries = new Collector<int>();
        await using var host = await RabbitHost.StartAsync("poison", b => b.AddMessageQueue(q => q
            .AddQueue("poison")
            .AddConsumer<WorkItem>("poison", (m, context, _) =>
            {
                deliveries.Add(context.DeliveryCount);
                throw new InvalidOperationException($"cannot handle {m.Number}");
            }, o =>
            {
                o.Retry = null;
                o.MaxRedeliveries = 2;
                o.RedeliveryDelay = TimeSpan.FromMilliseconds(250);
            })));

        await host.Get<IQueueSender>().SendAsync("poison", new WorkItem(13));
        await deliveries.WaitForAsync(3);
        var dead = await WaitForDeadLettersAsync(host.Get<IDeadLetterQueue>(), "poison", 1);

        deliveries.Items.Should().Equal(0, 1, 2);
        dead[0].ExceptionType.Should().Be(typeof(InvalidOperationException).FullName);
        dead[0].ExceptionMessage.Should().Be("cannot handle 13");
        dead[0].Reason.Should().Contain("delivery 3");
        dead[0].Source.Should().Be("poison");
        dead[0].Envelope.MessageType.Should().Be("tests.work-item");

        // The delayed redeliveries waited in a delay queue whose messages expire into the retry queue, consumed beside the queue.
        var transport = (RabbitMqMessageTransport)host.Get<MessageTransport>();
        transport.Topology.Created.Keys.Should().Contain([transport.Topology.DelayQueue("poison", TimeSpan.FromMilliseconds(250)), transport.Topology.RetryQueue("poison")]);
    }

    [Theory]
    [InlineData("tests.work-item", "{not json", "Malformed payload")]
    [InlineData("nobody.knows.this", "{}", "Unknown message type 'nobody.knows.this'")]
    [InlineData(null, "{\"number\":1}", "no message-id")]
    public async Task BadMessage_IsDeadLetteredWithTheReason_AndTheConsumerKeepsGoing(string? type, string body, string reason)
    {
        var handled = new Collector<int>();
        await using var host = await RabbitHost.StartAsync("bad", b => b.AddMessageQueue(q => q
            .AddQueue("inbox")
            .AddConsumer<WorkItem>("inbox", (m, _, _) => { handled.Add(m.Number); return default; }, o => o.Retry = null)));
        var transport = (RabbitMqMessageTransport)host.Get<MessageTransport>();
        await using (var connection = await Broker.ConnectAsync())
        await using (var channel = await connection.CreateChannelAsync())
        {
            var properties = new BasicProperties { Type = type, ContentType = "application/json" };
            if (type is not null)
            {
                properties.MessageId = Guid.NewGuid().ToString();
            }

            await channel.BasicPublishAsync(string.Empty, transport.Topology.Queue("inbox"), mandatory: false, properties, Encoding.UTF8.GetBytes(body));
        }

        await host.Get<IQueueSender>().SendAsync("inbox", new WorkItem(42));
        await handled.WaitForAsync(1);
        var dead = await WaitForDeadLettersAsync(host.Get<IDeadLetterQueue>(), "inbox", 1);

        handled.Items.Should().Equal(42);
        dead[0].Reason.Should().Contain(reason);
        Encoding.UTF8.GetString(dead[0].Envelope.Payload.Span).Should().Be(body);
    }

    [Fact]
    public async Task DeadLetters_ReplayedThroughTheHostApi_AreHandledAgain()
    {
        var fail = true;
        var handled = new Collector<int>();
        await using var host = await RabbitHost.StartAsync("replay", b => b.AddMessageQueue(q => q
            .AddQueue("jobs")
            .AddConsumer<WorkItem>("jobs", (m, _, _) =>
            {
                if (Volatile.Read(ref fail))
                {
                    throw new InvalidOperationException("down");
                }

                handled.Add(m.Number);
                return default;
            }, o => o.Retry = null)));
        var dlq = host.Get<IDeadLetterQueue>();
        await host.Get<IQueueSender>().SendAsync("jobs", new WorkItem(1));
        await host.Get<IQueueSender>().SendAsync("jobs", new WorkItem(2));
        await WaitForDeadLettersAsync(dlq, "jobs", 2);

        Volatile.Write(ref fail, false);
        (await dlq.ReplayAsync("jobs")).Should().Be(2);
        await handled.WaitForAsync(2);

        handled.Items.Should().Equal(1, 2);
        (await dlq.PeekAsync("jobs")).Should().BeEmpty();
    }

    [Fact]
    public async Task Telemetry_SendAndProcessSpans_CarryRabbitMqAndOneTrace()
    {
        var activities = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == PatternsDiagnostics.ActivitySourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a =>
            {
                lock (activities)
                {
                    activities.Add(a);
                }
            },
        };
        ActivitySource.AddActivityListener(listener);
        var handled = new Collector<string?>();
        var prefix = Broker.Prefix("otel");
        await using var host = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddMessageQueue(q => q
            .AddQueue("traced")
            .AddConsumer<WorkItem>("traced", (m, context, _) => { handled.Add(context.Envelope.TraceParent); return default; })));

        await host.Get<IQueueSender>().SendAsync("traced", new WorkItem(1));
        await handled.WaitForAsync(1);
        await host.Host.StopAsync();

        Activity[] ours;
        lock (activities)
        {
            ours = [.. activities.Where(a => (a.GetTagItem("messaging.destination.name") as string) == "traced")];
        }

        var send = ours.Single(a => a.Kind == ActivityKind.Producer);
        var process = ours.Single(a => a.Kind == ActivityKind.Consumer);
        send.GetTagItem("messaging.system").Should().Be("rabbitmq");
        process.GetTagItem("messaging.system").Should().Be("rabbitmq");
        process.TraceId.Should().Be(send.TraceId, "the traceparent header carries the trace through the broker");
        process.ParentSpanId.Should().Be(send.SpanId);
        handled.Items.Single().Should().Be(send.Id);
    }

    [Fact]
    public async Task InvalidOptions_FailAtStart_ListingEveryProblem()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.AddPatterns(p => p.UseRabbitMq(o =>
        {
            o.Uri = null;
            o.PrefetchCount = 0;
            o.RetryDelays.Clear();
            o.ReconnectTimeout = TimeSpan.Zero;
        }));
        using var host = builder.Build();

        var act = () => host.StartAsync();

        var thrown = (await act.Should().ThrowAsync<OptionsValidationException>()).Which;
        thrown.Failures.Should().HaveCount(4);
        thrown.Message.Should().Contain("Uri").And.Contain("PrefetchCount").And.Contain("RetryDelays").And.Contain("ReconnectTimeout");
    }

    [Fact]
    public void UseRabbitMq_NotAnAddress_ThrowsNamingIt()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });

        var act = () => builder.AddPatterns(p => p.UseRabbitMq("not a uri"));

        act.Should().Throw<ArgumentException>().WithMessage("*'not a uri'*");
    }

    private static async Task<IReadOnlyList<DeadLetterMessage>> WaitForDeadLettersAsync(IDeadLetterQueue queue, string name, int count)
    {
        // Dead-lettering happens after the handler returns: look again until it has happened, within the wait.
        var deadline = DateTime.UtcNow + RabbitHost.Wait;
        while (true)
        {
            var letters = await queue.PeekAsync(name);
            if (letters.Count >= count || DateTime.UtcNow > deadline)
            {
                letters.Should().HaveCount(count, $"the dead-letter queue of '{name}'");
                return letters;
            }

            await Task.Yield();
        }
    }
}
