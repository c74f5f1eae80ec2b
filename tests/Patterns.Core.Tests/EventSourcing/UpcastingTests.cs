using System.Collections.Concurrent;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Patterns.EventSourcing;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

[MessageName("payments.received")]
public sealed record PaymentReceivedV1(int AmountCents);

[MessageName("payments.received.v2")]
public sealed record PaymentReceivedV2(decimal Amount);

[MessageName("payments.received.v3")]
public sealed record PaymentReceivedV3(decimal Amount, string Currency);

public sealed class UpcastingTests
{
    private static void Upcasters(EventSourcingBuilder es) => es
        .AddUpcaster<PaymentReceivedV1, PaymentReceivedV2>(v1 => new PaymentReceivedV2(v1.AmountCents / 100m))
        .AddUpcaster<PaymentReceivedV2, PaymentReceivedV3>(v2 => new PaymentReceivedV3(v2.Amount, "EUR"));

    [Fact]
    public async Task Read_V1AndV2Stored_EveryEventReadAsV3()
    {
        using var host = await EventSourcingHost.StartAsync(Upcasters);
        var store = host.Store();
        await store.AppendAsync("payments-1", ExpectedVersion.NoStream, [new PaymentReceivedV1(1250), new PaymentReceivedV2(3m), new PaymentReceivedV3(4m, "USD")]);

        var events = await store.ReadStreamAsync("payments-1").CollectAsync();
        var all = await store.ReadAllAsync().CollectAsync();

        events.Select(e => e.Data).Should().Equal(new PaymentReceivedV3(12.5m, "EUR"), new PaymentReceivedV3(3m, "EUR"), new PaymentReceivedV3(4m, "USD"));
        events.Select(e => e.EventType).Should().OnlyContain(t => t == "payments.received.v3");
        events.Select(e => e.StoredEventType).Should().Equal("payments.received", "payments.received.v2", "payments.received.v3");
        all.Select(e => e.Data).Should().Equal(events.Select(e => e.Data));
    }

    [Fact]
    public async Task Read_ByteLevelUpcasterFromARetiredType_FeedsTheTypedChain()
    {
        using var host = await EventSourcingHost.StartAsync(es =>
        {
            Upcasters(es);
            es.AddUpcaster("legacy.credit", "payments.received", bytes =>
            {
                var node = JsonNode.Parse(bytes.Span)!;
                return Encoding.UTF8.GetBytes(new JsonObject { ["amountCents"] = node["cents"]!.GetValue<int>() }.ToJsonString());
            });
        });
        var store = host.Store();
        await store.Storage.AppendAsync("payments-1", ExpectedVersion.NoStream, [new SerializedEvent(Guid.NewGuid(), "legacy.credit", "{\"cents\":700}"u8.ToArray(), DateTimeOffset.UnixEpoch)]);

        var e = (await store.ReadStreamAsync("payments-1").CollectAsync()).Single();

        e.Data.Should().Be(new PaymentReceivedV3(7m, "EUR"));
        e.StoredEventType.Should().Be("legacy.credit");
    }

    [Fact]
    public async Task CreateFilter_NewestType_AlsoSelectsOlderNamesThatUpcastToIt()
    {
        using var host = await EventSourcingHost.StartAsync(Upcasters);
        var store = host.Store();
        await store.AppendAsync("payments-1", ExpectedVersion.NoStream, [new PaymentReceivedV1(100), new Deposited(1m), new PaymentReceivedV2(2m)]);

        var filter = store.CreateFilter(typeof(PaymentReceivedV3));
        var events = await store.ReadAllAsync(0, filter).CollectAsync();

        filter.EventTypes.Should().BeEquivalentTo(["payments.received", "payments.received.v2", "payments.received.v3"]);
        events.Select(e => e.Data).Should().Equal(new PaymentReceivedV3(1m, "EUR"), new PaymentReceivedV3(2m, "EUR"));
    }

    [Fact]
    public async Task InlineProjection_OldEventTypeAppended_SeesTheUpcastEventAsItsRebuildDoes()
    {
        var seen = new ConcurrentQueue<(string EventType, object Data)>();
        using var host = await EventSourcingHost.StartAsync(es =>
        {
            Upcasters(es);
            es.AddProjection("payments", (e, _, _) =>
            {
                seen.Enqueue((e.EventType, e.Data));
                return ValueTask.CompletedTask;
            }, o => { o.Mode = ProjectionMode.Inline; o.EventTypes.Add(typeof(PaymentReceivedV3)); });
        });

        // Code that still emits the old shape, while the projection is written against the newest one.
        await host.Store().AppendAsync("payments-1", ExpectedVersion.NoStream, [new PaymentReceivedV1(250), new PaymentReceivedV3(1m, "USD")]);
        var live = seen.ToArray();
        seen.Clear();
        await host.Subscriptions().RebuildAsync("payments");

        live.Should().Equal(("payments.received.v3", new PaymentReceivedV3(2.5m, "EUR")), ("payments.received.v3", new PaymentReceivedV3(1m, "USD")));
        seen.Should().Equal(live, "a rebuild from the log must see what the live projection saw");
    }

    [Fact]
    public async Task SaveAsync_OldEventType_StateAfterTheSaveEqualsTheStateAfterAReload()
    {
        using var host = await EventSourcingHost.StartAsync(es =>
        {
            Upcasters(es);
            es.AddAggregate(() => new List<object>(), (events, e) => [.. events, e], o => o.StreamPrefix = "payments-");
        });
        var payments = host.Services.GetRequiredService<IAggregateRepository<List<object>>>();

        var saved = await payments.ExecuteAsync("1", _ => [new PaymentReceivedV1(250)]);
        var reloaded = await payments.LoadAsync("1");

        saved.State.Should().Equal(new PaymentReceivedV3(2.5m, "EUR"));
        reloaded.State.Should().Equal(saved.State);
    }

    [Fact]
    public async Task Read_UpcasterThrows_ErrorNamesTheUpcasterAndTheEvent()
    {
        using var host = await EventSourcingHost.StartAsync(es => es.AddUpcaster<PaymentReceivedV1, PaymentReceivedV2>(_ => throw new FormatException("bad cents")));
        var store = host.Store();
        await store.AppendAsync("payments-1", ExpectedVersion.NoStream, new PaymentReceivedV1(1));

        var act = async () => await store.ReadStreamAsync("payments-1").CollectAsync();

        (await act.Should().ThrowAsync<MessageDeserializationException>()).Which.Message
            .Should().Contain(typeof(PaymentReceivedV1).FullName).And.Contain("position 1").And.Contain("bad cents");
    }

    [Fact]
    public async Task Read_UpcasterReturnsNull_ErrorNamesTheUpcasterAndTheEvent()
    {
        using var host = await EventSourcingHost.StartAsync(es => es.AddUpcaster<PaymentReceivedV1, PaymentReceivedV2>(_ => null!));
        var store = host.Store();
        await store.AppendAsync("payments-1", ExpectedVersion.NoStream, new PaymentReceivedV1(1));

        var act = async () => await store.ReadStreamAsync("payments-1").CollectAsync();

        (await act.Should().ThrowAsync<MessageDeserializationException>()).Which.Message
            .Should().Contain(typeof(PaymentReceivedV1).FullName).And.Contain("returned null").And.Contain("position 1").And.Contain("'payments-1'");
    }

    [Fact]
    public async Task Read_ByteLevelUpcasterLeadsToAnUnregisteredName_ErrorNamesTheMissingLinkAndTheStoredName()
    {
        using var host = await EventSourcingHost.StartAsync(es => es.AddUpcaster("legacy.credit", "payments.recieved", bytes => bytes));
        var store = host.Store();
        await store.Storage.AppendAsync("payments-1", ExpectedVersion.NoStream, [new SerializedEvent(Guid.NewGuid(), "legacy.credit", "{}"u8.ToArray(), DateTimeOffset.UnixEpoch)]);

        var act = async () => await store.ReadStreamAsync("payments-1").CollectAsync();

        var thrown = (await act.Should().ThrowAsync<UnknownEventTypeException>()).Which;
        thrown.EventType.Should().Be("payments.recieved");
        thrown.StoredEventType.Should().Be("legacy.credit");
        thrown.Message.Should().Contain("stored as 'legacy.credit'").And.Contain("lead to 'payments.recieved'").And.Contain("missing a link");
    }

    [Fact]
    public async Task Read_CorruptMetadata_ErrorNamesTheEvent()
    {
        using var host = await EventSourcingHost.StartAsync(_ => { });
        var store = host.Store();
        await store.Storage.AppendAsync("account-1", ExpectedVersion.NoStream,
            [new SerializedEvent(Guid.NewGuid(), "bank.deposited", "{\"amount\":1}"u8.ToArray(), DateTimeOffset.UnixEpoch) { Metadata = "{not json"u8.ToArray() }]);

        var act = async () => await store.ReadStreamAsync("account-1").CollectAsync();

        (await act.Should().ThrowAsync<MessageDeserializationException>()).Which.Message
            .Should().Contain("metadata").And.Contain("position 1").And.Contain("'account-1'");
    }

    [Fact]
    public async Task Start_UpcasterCycleAndDuplicates_FailsListingEveryProblem()
    {
        using var host = EventSourcingHostBuild(es => es
            .AddUpcaster<PaymentReceivedV1, PaymentReceivedV2>(v => new PaymentReceivedV2(v.AmountCents))
            .AddUpcaster<PaymentReceivedV2, PaymentReceivedV1>(v => new PaymentReceivedV1((int)v.Amount))
            .AddUpcaster("a", "b", b => b)
            .AddUpcaster("a", "c", b => b)
            .AddEvent<Deposited>("payments.received"));

        var act = () => host.StartAsync();

        var thrown = await act.Should().ThrowAsync<OptionsValidationException>();
        thrown.Which.Failures.Should().Contain(f => f.Contains("form a cycle"))
            .And.Contain(f => f.Contains("'a' has more than one upcaster"))
            .And.Contain(f => f.Contains("payments.received"));
    }

    [Fact]
    public async Task Start_ByteLevelAndTypedUpcasterFromTheSameName_FailsNamingBoth()
    {
        using var host = EventSourcingHostBuild(es => es
            .AddUpcaster<PaymentReceivedV1, PaymentReceivedV2>(v => new PaymentReceivedV2(v.AmountCents))
            .AddUpcaster("payments.received", "payments.received.v3", b => b));

        var act = () => host.StartAsync();

        (await act.Should().ThrowAsync<OptionsValidationException>()).Which.Failures.Should().Contain(f =>
            f.Contains("'payments.received'") && f.Contains("to 'payments.received.v3'") && f.Contains(typeof(PaymentReceivedV1).FullName!) && f.Contains("never run"));
    }

    internal static IHost EventSourcingHostBuild(Action<EventSourcingBuilder> configure) =>
        TestHost.Build(b => b.AddEventSourcing(configure), harness: false);
}
