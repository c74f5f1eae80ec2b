using System.Threading.Tasks.Sources;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Patterns.Core.Tests.EventSourcing;
using Patterns.Core.Tests.PubSub;
using Patterns.Core.Tests.RequestResponse;
using Patterns.Hosting;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;
using Patterns.Serialization;
using Patterns.Testing;
using Patterns.Transport;

namespace Patterns.Core.Tests.Hosting;

internal static class Billing
{
    public sealed class OrderPlacedHandler : IMessageHandler<OrderPlaced>
    {
        public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken) => default;
    }
}

internal static class Shipping
{
    public sealed class OrderPlacedHandler : IMessageHandler<OrderPlaced>
    {
        public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken) => default;
    }
}

/// <summary>Consumer defaults, value-task hygiene and the concurrency limit, through a real host.</summary>
public sealed class HostingDefectTests
{
    [Fact]
    public async Task Start_TwoHandlerTypesWithTheSameShortNameOnOneTopic_FailsInsteadOfMakingThemCompete()
    {
        using var host = TestHost.Build(b => b.AddPubSub(ps => ps
            .Subscribe<OrderPlaced, Billing.OrderPlacedHandler>()
            .Subscribe<OrderPlaced, Shipping.OrderPlacedHandler>()));

        var start = () => host.StartAsync();

        var failure = (await start.Should().ThrowAsync<OptionsValidationException>()).Which;
        failure.Message.Should().Contain(typeof(Billing.OrderPlacedHandler).FullName).And.Contain(typeof(Shipping.OrderPlacedHandler).FullName)
            .And.Contain("ConsumerGroup");
    }

    [Fact]
    public async Task Start_TwoDelegatesOnOneTopicWithoutGroups_FailsInsteadOfMakingThemCompete()
    {
        using var host = TestHost.Build(b => b.AddPubSub(ps => ps
            .Subscribe<OrderPlaced>((_, _, _) => default, "orders.placed")
            .Subscribe<OrderPlaced>((_, _, _) => default, "orders.placed")));

        var start = () => host.StartAsync();

        (await start.Should().ThrowAsync<OptionsValidationException>()).Which.Message.Should().Contain("ConsumerGroup");
    }

    [Fact]
    public async Task Consume_HandlerReturnsCompletedSourceBackedValueTask_ItsResultIsConsumed()
    {
        var source = new CompletedSource();
        using var host = await TestHost.StartAsync(b => b.AddPubSub(ps => ps.Subscribe<OrderPlaced>(
            (_, _, _) => new ValueTask(source, 0), "getresult.topic", o => o.ConsumerGroup = "getresult")));

        await host.Services.GetRequiredService<IPublisher>().PublishAsync("getresult.topic", new OrderPlaced("o-1", 1m));
        await host.Harness().WaitForDeliveriesAsync(1).WaitAsync(TestHost.Wait);

        Volatile.Read(ref source.GetResultCalls).Should().Be(1, "a completed ValueTask must still be consumed (GetResult) so a pooled source is recycled");
    }

    [Fact]
    public async Task Send_TransportReturnsCompletedSourceBackedValueTask_ItsResultIsConsumed()
    {
        var source = new CompletedSource();
        var bus = new MessageBus(new CompletedSendTransport(source), new MessageTypeRegistry(), TimeProvider.System, NullLoggerFactory.Instance);

        await bus.SendAsync("somewhere", new OrderPlaced("o-1", 1m));

        Volatile.Read(ref source.GetResultCalls).Should().Be(1, "a completed ValueTask must still be consumed (GetResult) so a pooled source is recycled");
    }

    [Fact]
    public async Task SendAsync_SynchronousHandlerLeftARegistrationOnItsToken_AnotherRequestsCancellationDoesNotRunIt()
    {
        var leaked = 0;
        using var host = TestHost.Build(b => b.AddRequestResponse(r => r
            .AddHandler<GetQuote, Quote>((request, ct) =>
            {
                // A handler that registers on its token and forgets the registration.
                ct.Register(() => Interlocked.Increment(ref leaked));
                return new ValueTask<Quote>(new Quote(request.Symbol, 1m));
            })
            .AddHandler<Slow, Quote>(async (request, ct) =>
            {
                await Task.Delay(Timeout.InfiniteTimeSpan, ct).ConfigureAwait(false);
                return new Quote("never", request.Id);
            })));
        await host.StartAsync();
        var client = host.Services.GetRequiredService<IRequestClient>();
        using var cancel = new CancellationTokenSource();

        // Both calls run on this thread, one after the other with no await between, so the second may reuse the first one's token source.
        var first = client.SendAsync<GetQuote, Quote>(new GetQuote("A"));
        first.IsCompletedSuccessfully.Should().BeTrue();
        var second = client.SendAsync<Slow, Quote>(new Slow(1), cancel.Token);
        cancel.Cancel();
        var settle = () => second.AsTask().WaitAsync(TestHost.Wait);

        await settle.Should().ThrowAsync<OperationCanceledException>();
        Volatile.Read(ref leaked).Should().Be(0, "cancelling one request must not run callbacks another request's handler registered");
        await host.StopAsync();
    }

    [Fact]
    public async Task SendAsync_TransportFailsWithAnUnrelatedDoesNotExistMessage_NotReportedAsHandlerNotFound()
    {
        using var host = await TestHost.StartAsync(
            b => b.AddRequestResponse(r => r
                .AddHandler<GetQuote, Quote>((q, _) => new ValueTask<Quote>(new Quote(q.Symbol, 1m)))
                .Configure(o => o.PreferInProcessDispatch = false)),
            patterns: p => p.UseTransport(_ => new FailingSendTransport(InMemoryTransport.Create())));
        var client = host.Services.GetRequiredService<IRequestClient>();

        var send = async () => await client.SendAsync<GetQuote, Quote>(new GetQuote("A"));

        (await send.Should().ThrowAsync<InvalidOperationException>()).Which.Should().NotBeOfType<HandlerNotFoundException>(
            "only a missing request queue means no handler; the text of an error message does not");
    }

    [Fact]
    public async Task Consume_MoreWorkersThanMaxConcurrentCalls_ExcessCallsWaitInsteadOfBeingDeadLettered()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = TestHost.Build(b => b.AddMessageQueue(q => q.AddConsumer<OrderPlaced>(
            "limited",
            async (_, _, _) => await release.Task.ConfigureAwait(false),
            o =>
            {
                o.Concurrency = 4;
                o.MaxConcurrentCalls = 1;
                o.Retry = null;
                o.MaxRedeliveries = 0;
            })));
        var registration = host.Services.GetRequiredService<IOptions<MessagingTopology>>().Value.Consumers.Single();
        var bus = host.Services.GetRequiredService<MessageBus>();
        var handler = registration.CreateHandler(new ConsumerFactoryContext(
            host.Services, bus, host.Services.GetRequiredService<IMessageSerializer>(), NullLogger.Instance, "limited", "limited"));

        // What four workers do at once: the first call takes the one permit and waits; the other three must wait for it.
        var calls = Enumerable.Range(0, 4)
            .Select(i => handler(new Envelope { MessageId = Guid.NewGuid(), MessageType = bus.Registry.GetName(typeof(OrderPlaced)), Body = new OrderPlaced($"o-{i}", i) }, CancellationToken.None).AsTask())
            .ToArray();
        release.SetResult();
        var settlements = await Task.WhenAll(calls).WaitAsync(TestHost.Wait);

        settlements.Select(s => s.Kind).Should().OnlyContain(k => k == SettlementKind.Ack, "calls beyond MaxConcurrentCalls wait for a permit");
    }

    [Fact]
    public async Task Stop_HandlersPublishFollowUpsWhileDraining_FollowUpsReachTheHostsOtherGroups()
    {
        const int count = 20;
        var logs = new LogCapture();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var followUps = 0;
        IPublisher? publisher = null;
        using var host = await TestHost.StartAsync(
            b =>
            {
                b.Logging.AddProvider(logs);
                b.AddPubSub(ps => ps
                    .Subscribe<OrderPlaced>(
                        async (m, _, _) =>
                        {
                            await release.Task.ConfigureAwait(false);
                            await publisher!.PublishAsync("drain.second", new OrderPlaced("follow-up " + m.OrderId, 0m)).ConfigureAwait(false);
                        },
                        "drain.first",
                        o => o.ConsumerGroup = "first")
                    .Subscribe<OrderPlaced>(
                        (_, _, _) =>
                        {
                            Interlocked.Increment(ref followUps);
                            return default;
                        },
                        "drain.second",
                        o => o.ConsumerGroup = "second"));
            },
            harness: false);
        publisher = host.Services.GetRequiredService<IPublisher>();
        for (var i = 0; i < count; i++)
        {
            await publisher.PublishAsync("drain.first", new OrderPlaced($"o-{i}", i));
        }

        // Handling starts only once the host has begun to drain (event 1005).
        var stopping = host.StopAsync();
        await logs.WaitForAsync(1005).WaitAsync(TestHost.Wait);
        release.SetResult();
        await stopping.WaitAsync(TestHost.Wait);

        Volatile.Read(ref followUps).Should().Be(count, "every group stays bound while any of the host's handlers is still draining");
    }

    [Fact]
    public async Task Stop_HandlerIgnoresItsToken_StopFinishesAtTheDeadlineAndReportsWhatItAbandoned()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var logs = new LogCapture();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var never = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(
            b =>
            {
                b.Logging.AddProvider(logs);
                b.AddPatterns(p => p.Configure(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10)));
                b.AddMessageQueue(q => q.AddConsumer<OrderPlaced>(
                    "stubborn",
                    async (_, _, _) =>
                    {
                        started.TrySetResult();
                        await never.Task.ConfigureAwait(false);
                    },
                    o => o.Retry = null));
            },
            time);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var i = 0; i < 3; i++)
        {
            await sender.SendAsync("stubborn", new OrderPlaced($"o-{i}", i));
        }

        await started.Task.WaitAsync(TestHost.Wait);

        var stopping = host.StopAsync();
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromSeconds(10));

        // Cancelled at the deadline, the handler gets a short grace to return; then it is abandoned.
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        fake.Advance(InMemorySubscription.AbandonGrace);
        try
        {
            await stopping.WaitAsync(TestHost.Wait);
        }
        finally
        {
            never.TrySetResult();
        }

        logs.WaitForAsync(1106).IsCompleted.Should().BeTrue("the message whose handler ignored its token is reported as abandoned");
        logs.WaitForAsync(1102).IsCompleted.Should().BeTrue("the two messages waiting behind it are reported as dropped");
    }

    private sealed class CompletedSource : IValueTaskSource
    {
        public int GetResultCalls;

        public void GetResult(short token) => Interlocked.Increment(ref GetResultCalls);

        public ValueTaskSourceStatus GetStatus(short token) => ValueTaskSourceStatus.Succeeded;

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) => continuation(state);
    }

    private sealed class CompletedSendTransport(CompletedSource source) : MessageTransport
    {
        public override string SystemName => "test.completed";

        public override bool IsInProcess => true;

        public override int MaxPayloadBytes => int.MaxValue;

        public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) => default;

        public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default) => new(source, 0);

        public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default) => new(false);

        public override ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public override ValueTask DisposeAsync() => default;
    }

    /// <summary>Forwards everything to the in-memory transport except sends, which fail for a reason that has nothing to do with a missing queue.</summary>
    private sealed class FailingSendTransport(MessageTransport inner) : MessageTransport
    {
        public override string SystemName => inner.SystemName;

        public override bool IsInProcess => false;

        public override int MaxPayloadBytes => inner.MaxPayloadBytes;

        public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) =>
            inner.DeclareQueueAsync(queue, settings, cancellationToken);

        public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default) =>
            ValueTask.FromException(new InvalidOperationException("The channel to the broker does not exist any more."));

        public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default) =>
            inner.PublishAsync(topic, envelope, cancellationToken);

        public override ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            inner.SubscribeAsync(request, handler, cancellationToken);

        public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            inner.PeekDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            inner.ReplayDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) =>
            inner.PurgeDeadLettersAsync(queue, cancellationToken);

        public override ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
