using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Core.Tests.Messaging;
using Patterns.Core.Tests.PubSub;
using Patterns.Core.Tests.RequestResponse;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Core.Tests.Hosting;

/// <summary>A handler registered as a singleton by the application: it records the services each message's context gives it.</summary>
public sealed class ContextRecordingHandler : IMessageHandler<OrderPlaced>
{
    public ConcurrentQueue<IServiceProvider> Services { get; } = new();

    public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
    {
        Services.Enqueue(context.Services);
        return default;
    }
}

/// <summary>
/// What a start checks before it takes messages (serializer metadata on a transport that serializes), how a
/// handler the application registered itself is resolved, and why a delivery that cannot be turned into the
/// handler's type is dead-lettered.
/// </summary>
public sealed class StartAndMaterializeTests
{
    [Fact]
    public async Task Start_OnATransportThatSerializes_FailsNamingEveryTypeTheJsonContextLacks()
    {
        using var host = TestHost.Build(
            b =>
            {
                b.AddPubSub(ps => ps
                    .Subscribe<OrderPlaced>((_, _, _) => default, "orders.serialized", o => o.ConsumerGroup = "serialized")
                    .Subscribe<InvoiceIssued>((_, _, _) => default, "invoices.serialized", o => o.ConsumerGroup = "invoices"));
                b.AddRequestResponse(rr => rr.AddHandler<GetQuote, Quote, GetQuoteHandler>());
            },
            patterns: p => p
                .UseTransport(_ => new OutOfProcessTransport(InMemoryTransport.Create()))
                .UseSystemTextJson(TestJsonContext.Default));

        var start = () => host.StartAsync();

        (await start.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Be(
            $"The JSON serializer has no metadata for '{typeof(OrderPlaced).FullName}', '{typeof(GetQuote).FullName}', '{typeof(Quote).FullName}', "
            + "which transport 'test.out-of-process' must serialize. Add [JsonSerializable(typeof(...))] for each to a JsonSerializerContext "
            + "and pass it with UseSystemTextJson(context) (NativeAOT and trimmed apps cannot serialize by reflection).");
    }

    [Fact]
    public async Task Subscribe_AHandlerTheApplicationRegisteredAsASingleton_KeepsThatLifetime_WithNoScopePerMessage()
    {
        var handler = new ContextRecordingHandler();
        using var host = await TestHost.StartAsync(b =>
        {
            b.Services.AddSingleton(handler);
            b.AddPubSub(ps => ps.Subscribe<OrderPlaced, ContextRecordingHandler>("orders.singleton"));
        });
        var publisher = host.Services.GetRequiredService<IPublisher>();

        await publisher.PublishAsync("orders.singleton", new OrderPlaced("1", 1));
        await publisher.PublishAsync("orders.singleton", new OrderPlaced("2", 1));
        await host.Harness().WaitForDeliveriesAsync(2).WaitAsync(TestHost.Wait);

        var services = handler.Services.ToArray();
        services.Should().HaveCount(2, "the instance the application registered handles every message");
        services[0].Should().BeSameAs(services[1], "a singleton handler is not given a new scope per message, which it could not use anyway");
    }

    [Fact]
    public async Task Subscribe_ASingletonLifetime_RunsEveryMessageWithTheSameServices()
    {
        using var host = await TestHost.StartAsync(b => b.AddPubSub(ps => ps.Subscribe<OrderPlaced, ContextRecordingHandler>(
            "orders.singleton-lifetime", lifetime: ServiceLifetime.Singleton)));
        var publisher = host.Services.GetRequiredService<IPublisher>();

        await publisher.PublishAsync("orders.singleton-lifetime", new OrderPlaced("1", 1));
        await publisher.PublishAsync("orders.singleton-lifetime", new OrderPlaced("2", 1));
        await host.Harness().WaitForDeliveriesAsync(2).WaitAsync(TestHost.Wait);

        var handler = host.Services.GetRequiredService<ContextRecordingHandler>();
        var services = handler.Services.ToArray();
        services.Should().HaveCount(2, "the one instance handles every message");
        services[0].Should().BeSameAs(services[1]);
    }

    [Fact]
    public async Task Deliver_WhatCannotBecomeTheHandlersType_IsDeadLetteredNamingWhy_AndEveryPayloadThatCanIsHandled()
    {
        var handled = new ConcurrentQueue<string>();
        using var host = await TestHost.StartAsync(b => b.AddPubSub(ps => ps
            .Subscribe<OrderPlaced>((m, _, _) => { handled.Enqueue(m.OrderId); return default; }, "orders.materialize", o => o.ConsumerGroup = "materialize")
            .Subscribe<InvoiceIssued>((_, _, _) => default, "invoices.materialize", o => o.ConsumerGroup = "invoices")));
        var transport = host.Services.GetRequiredService<MessageTransport>();

        await transport.PublishAsync("orders.materialize", new Envelope { MessageId = Guid.NewGuid(), Body = new InvoiceIssued("i", 1) });
        await transport.PublishAsync("orders.materialize", new Envelope { MessageId = Guid.NewGuid(), MessageType = "billing.invoice-issued", Payload = "{}"u8.ToArray() });
        await transport.PublishAsync("orders.materialize", new Envelope { MessageId = Guid.NewGuid(), Payload = "{\"orderId\":\"untyped\",\"amount\":1}"u8.ToArray() });
        await transport.PublishAsync("orders.materialize", new Envelope { MessageId = Guid.NewGuid(), MessageType = "orders.placed", Payload = "{\"orderId\":\"typed\",\"amount\":2}"u8.ToArray() });
        await host.Harness().WaitForDeliveriesAsync(4).WaitAsync(TestHost.Wait);

        var dead = await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "materialize", 2);
        var order = typeof(OrderPlaced).FullName;
        dead.Select(d => d.Reason).Should().BeEquivalentTo(
            $"Consumer group 'materialize' handles '{order}' but received a body of type '{typeof(InvoiceIssued).FullName}'.",
            $"Message type 'billing.invoice-issued' ({typeof(InvoiceIssued).FullName}) is not a '{order}', which consumer group 'materialize' handles.");
        handled.Should().BeEquivalentTo(["untyped", "typed"], "a payload with no type name is read as the handler's type, and one with a known name as that type");
    }

    [Fact]
    public async Task UseInMemory_WithOptions_AppliesThem()
    {
        using var host = await TestHost.StartAsync(
            b => b.AddPubSub(ps => ps.Subscribe<OrderPlaced>((_, _, _) => default, "orders.small", o => o.ConsumerGroup = "small")),
            patterns: p => p.UseInMemory(o => o.MaxPayloadBytes = 16));
        var transport = host.Services.GetRequiredService<MessageTransport>();

        var publish = async () => await transport.PublishAsync("orders.small", new Envelope { MessageId = Guid.NewGuid(), MessageType = "orders.placed", Payload = new byte[17] });

        await publish.Should().ThrowAsync<MessageTooLargeException>();
        transport.MaxPayloadBytes.Should().Be(16);
    }

    /// <summary>The in-memory transport, presented as one that crosses a process boundary.</summary>
    private sealed class OutOfProcessTransport(MessageTransport inner) : MessageTransport
    {
        public override string SystemName => "test.out-of-process";

        public override bool IsInProcess => false;

        public override int MaxPayloadBytes => inner.MaxPayloadBytes;

        public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) =>
            inner.DeclareQueueAsync(queue, settings, cancellationToken);

        public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default) =>
            inner.SendAsync(queue, envelope, cancellationToken);

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
