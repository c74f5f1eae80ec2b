using Microsoft.Extensions.DependencyInjection;
using Patterns.EventSourcing;
using Patterns.EventSourcing.InMemory;
using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

/// <summary>Subscriptions filtered by a base type or interface, while event types are registered after they started.</summary>
public sealed class TypeFilterTests
{
    private static SerializedEvent Raw(string eventType, string json) =>
        new(Guid.NewGuid(), eventType, System.Text.Encoding.UTF8.GetBytes(json), DateTimeOffset.UnixEpoch);

    [Fact]
    public async Task InterfaceFilter_TypeRegisteredAfterStart_IsHandledNotSkipped()
    {
        var recorder = new Recorder();
        using var host = await EventSourcingHost.StartAsync(es => es.AddEvent<OrderPlacedEvent>()
            .AddSubscription("orders", (e, ct) => recorder.RecordAsync(e, ct), o => o.EventTypes.Add(typeof(IOrderEvent))));
        var store = host.Store();

        // OrderShippedEvent was not registered when the subscription started: appending it registers it now.
        await store.AppendAsync("order-1", ExpectedVersion.NoStream, [new OrderPlacedEvent("order-1", 5m), new OrderShippedEvent("order-1")]);
        var last = await store.AppendAsync("account-1", ExpectedVersion.NoStream, new AccountOpened("ada"));
        await host.Subscriptions().WaitForPositionAsync("orders", last.LastPosition).WaitAsync(TestHost.Wait);

        recorder.Events.Select(e => e.Data).Should().Equal(new OrderPlacedEvent("order-1", 5m), new OrderShippedEvent("order-1"));
        host.Subscriptions().GetStatus("orders").Checkpoint.Should().Be(3);
    }

    [Fact]
    public async Task InterfaceFilter_NameThisProcessCannotResolve_FaultsBeforeItNamingTypeAndPosition()
    {
        var storage = new InMemoryEventStorage();
        var recorder = new Recorder();
        using var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddEvent<OrderPlacedEvent>()
            .AddSubscription("orders", (e, ct) => recorder.RecordAsync(e, ct), o => { o.EventTypes.Add(typeof(IOrderEvent)); o.CheckpointInterval = 1; }));
        await host.Store().AppendAsync("order-1", ExpectedVersion.NoStream, [new OrderPlacedEvent("order-1", 5m)]);
        await host.Store().AppendAsync("account-1", ExpectedVersion.NoStream, new AccountOpened("ada"));

        // A newer process appends an event type this process has not registered.
        await storage.AppendAsync("order-1", ExpectedVersion.Exact(1), [Raw("orders.cancelled", "{\"orderId\":\"order-1\"}")]);
        await host.Store().AppendAsync("order-1", ExpectedVersion.Exact(2), new OrderPlacedEvent("order-1", 6m));

        var wait = () => host.Subscriptions().WaitForPositionAsync("orders", 4).WaitAsync(TestHost.Wait);

        var thrown = (await wait.Should().ThrowAsync<SubscriptionFaultedException>()).Which;
        thrown.Position.Should().Be(3);
        thrown.InnerException.Should().BeOfType<UnknownEventTypeException>().Which.EventType.Should().Be("orders.cancelled");
        thrown.Message.Should().Contain("orders.cancelled").And.Contain("position 3");
        recorder.Events.Select(e => e.Position).Should().Equal([1L], "the known unrelated event (bank.opened) is skipped, the unknown one is not");
        host.Subscriptions().GetStatus("orders").Checkpoint.Should().Be(2, "the checkpoint never passes an event the filter may select");
        (await ((ICheckpointStore)storage).LoadAsync("orders")).Should().Be(2);
    }

    [Fact]
    public async Task InterfaceFilter_UnknownNameRegisteredLater_RestartHandlesIt()
    {
        var storage = new InMemoryEventStorage();
        var recorder = new Recorder();
        using var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddEvent<OrderPlacedEvent>()
            .AddSubscription("orders", (e, ct) => recorder.RecordAsync(e, ct), o => o.EventTypes.Add(typeof(IOrderEvent))));
        await storage.AppendAsync("order-1", ExpectedVersion.NoStream, [Raw("orders.shipped", "{\"orderId\":\"order-1\"}")]);
        var wait = () => host.Subscriptions().WaitForPositionAsync("orders", 1).WaitAsync(TestHost.Wait);
        await wait.Should().ThrowAsync<SubscriptionFaultedException>();

        // The rolling deploy reaches this process: the type is registered, and the subscription resumes at the event.
        host.Services.GetRequiredService<Patterns.Messaging.MessageTypeRegistry>().GetName(typeof(OrderShippedEvent));
        await host.Subscriptions().RestartAsync("orders");
        await host.Subscriptions().WaitForPositionAsync("orders", 1).WaitAsync(TestHost.Wait);

        recorder.Events.Select(e => e.Data).Should().Equal(new OrderShippedEvent("order-1"));
    }

    [Fact]
    public async Task SealedTypeFilter_UnknownName_IsSkippedAsBefore()
    {
        var storage = new InMemoryEventStorage();
        var recorder = new Recorder();
        using var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage)
            .AddSubscription("deposits", (e, ct) => recorder.RecordAsync(e, ct), o => o.EventTypes.Add(typeof(Deposited))));
        await storage.AppendAsync("account-1", ExpectedVersion.NoStream, [Raw("bank.frozen", "{}")]);
        var last = await host.Store().AppendAsync("account-1", ExpectedVersion.Exact(1), new Deposited(3m));

        await host.Subscriptions().WaitForPositionAsync("deposits", last.LastPosition).WaitAsync(TestHost.Wait);

        recorder.Events.Select(e => e.Data).Should().Equal(new Deposited(3m));
    }
}
