using System.Diagnostics.Metrics;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing;
using Patterns.Serialization;
using Patterns.Storage;
using Patterns.Telemetry;
using Patterns.Testing;

namespace Patterns.Core.Tests.EventSourcing;

public sealed class EventStoreTests
{
    [Fact]
    public async Task AppendAsync_TypedEventsWithMetadata_ReadBackTypedWithEveryField()
    {
        var fake = new FakeTimeProvider(new DateTimeOffset(2030, 3, 4, 5, 6, 7, TimeSpan.Zero));
        var time = new TimerTracker(fake);
        using var host = await EventSourcingHost.StartAsync(_ => { }, time);
        var store = host.Store();
        var opened = new EventData(new AccountOpened("ada"))
        {
            CorrelationId = "corr-7",
            CausationId = "cmd-1",
            Headers = new Dictionary<string, string> { ["user"] = "ada", ["tenant"] = "t1" },
        };

        var first = await store.AppendAsync("account-1", ExpectedVersion.NoStream, [opened]);
        fake.Advance(TimeSpan.FromMinutes(5));
        var second = await store.AppendAsync("account-1", ExpectedVersion.Exact(1), new Deposited(25m));

        var events = await store.ReadStreamAsync("account-1").CollectAsync();
        events.Should().HaveCount(2);
        var e = events[0];
        e.EventId.Should().Be(opened.EventId);
        e.StreamId.Should().Be("account-1");
        e.Version.Should().Be(1);
        e.Position.Should().Be(first.FirstPosition);
        e.EventType.Should().Be("bank.opened");
        e.StoredEventType.Should().Be("bank.opened");
        e.Data.Should().Be(new AccountOpened("ada"));
        e.Timestamp.Should().Be(new DateTimeOffset(2030, 3, 4, 5, 6, 7, TimeSpan.Zero));
        e.CorrelationId.Should().Be("corr-7");
        e.CausationId.Should().Be("cmd-1");
        e.Headers.Should().BeEquivalentTo(new Dictionary<string, string> { ["user"] = "ada", ["tenant"] = "t1" });
        events[1].Data.Should().Be(new Deposited(25m));
        events[1].Timestamp.Should().Be(new DateTimeOffset(2030, 3, 4, 5, 11, 7, TimeSpan.Zero));
        events[1].Headers.Should().BeEmpty();
        events[1].Position.Should().Be(second.LastPosition);

        var stored = await store.Storage.ReadStreamAsync("account-1").CollectAsync();
        stored[0].EventType.Should().Be("bank.opened", "events are stored under their registered names, not CLR names");
        Encoding.UTF8.GetString(stored[1].Data.Span).Should().Be("{\"amount\":25}");
    }

    [Fact]
    public async Task AppendAsync_EmptyEventId_ThrowsInsteadOfTreatingLaterEventsAsRetries()
    {
        using var host = await EventSourcingHost.StartAsync(_ => { });
        var store = host.Store();
        await store.AppendAsync("account-1", ExpectedVersion.Any, new Deposited(1m));

        var first = async () => await store.AppendAsync("account-1", ExpectedVersion.Any, [new EventData(new Deposited(2m)) { EventId = Guid.Empty }]);
        var second = async () => await store.AppendAsync("account-1", ExpectedVersion.Any, [new EventData(new Deposited(3m)) { EventId = Guid.Empty }]);

        (await first.Should().ThrowAsync<ArgumentException>()).WithMessage("*'account-1'*empty EventId*");
        await second.Should().ThrowAsync<ArgumentException>();
        (await store.ReadStreamAsync("account-1").CollectAsync()).Select(e => e.Data).Should().Equal(new Deposited(1m));
    }

    [Fact]
    public async Task AppendAsync_SameEventDataRetried_IsIdempotent()
    {
        using var host = await EventSourcingHost.StartAsync(_ => { });
        var store = host.Store();
        EventData[] events = [new(new AccountOpened("ada")), new(new Deposited(10m))];

        var first = await store.AppendAsync("account-1", ExpectedVersion.NoStream, events);
        var retry = await store.AppendAsync("account-1", ExpectedVersion.NoStream, events);

        retry.Should().Be(first);
        (await store.ReadStreamAsync("account-1").CollectAsync()).Should().HaveCount(2);
    }

    [Fact]
    public async Task AppendAsync_Conflict_ThrowsAndCountsIt()
    {
        using var host = await EventSourcingHost.StartAsync(_ => { });
        var store = host.Store();
        long conflicts = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == PatternsDiagnostics.MeterName && instrument.Name == "patterns.eventstore.conflicts")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref conflicts, value));
        listener.Start();
        await store.AppendAsync("account-1", ExpectedVersion.NoStream, new AccountOpened("ada"));

        var act = async () => await store.AppendAsync("account-1", ExpectedVersion.NoStream, new AccountOpened("bob"));

        var thrown = await act.Should().ThrowAsync<WrongExpectedVersionException>();
        thrown.Which.Actual.Should().Be(1);
        Interlocked.Read(ref conflicts).Should().BeGreaterThanOrEqualTo(1);
    }

    [Fact]
    public async Task AppendAsync_WithATraceListener_RecordsAnAppendSpan()
    {
        using var host = await EventSourcingHost.StartAsync(_ => { });
        var spans = new System.Collections.Concurrent.ConcurrentQueue<System.Diagnostics.Activity>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = source => source.Name == PatternsDiagnostics.ActivitySourceName,
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Enqueue,
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);

        await host.Store().AppendAsync("span-stream", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(1m)]);

        var append = spans.Where(a => a.OperationName == "eventstore.append" && (string?)a.GetTagItem("patterns.eventstore.stream") == "span-stream").Should().ContainSingle().Subject;
        append.GetTagItem("patterns.eventstore.event_count").Should().Be(2);
        append.Status.Should().Be(System.Diagnostics.ActivityStatusCode.Unset);
    }

    [Fact]
    public async Task ReadAsync_UnregisteredStoredType_ThrowsNamingTheTypeAndPosition()
    {
        using var host = await EventSourcingHost.StartAsync(_ => { });
        var store = host.Store();
        await store.Storage.AppendAsync("legacy-1", ExpectedVersion.Any, [new SerializedEvent(Guid.NewGuid(), "legacy.thing", "{}"u8.ToArray(), DateTimeOffset.UnixEpoch)]);

        var act = async () => await store.ReadStreamAsync("legacy-1").CollectAsync();

        var thrown = await act.Should().ThrowAsync<UnknownEventTypeException>();
        thrown.Which.EventType.Should().Be("legacy.thing");
        thrown.Which.Position.Should().Be(1);
        thrown.Which.Message.Should().Contain("legacy.thing").And.Contain("legacy-1").And.Contain("AddEvent");
    }

    [Fact]
    public async Task ReadAsync_MalformedPayload_ThrowsDeserializationErrorWithPosition()
    {
        using var host = await EventSourcingHost.StartAsync(_ => { });
        var store = host.Store();
        await store.Storage.AppendAsync("account-9", ExpectedVersion.Any, [new SerializedEvent(Guid.NewGuid(), "bank.deposited", "{not json"u8.ToArray(), DateTimeOffset.UnixEpoch)]);

        var act = async () => await store.ReadAllAsync().CollectAsync();

        (await act.Should().ThrowAsync<MessageDeserializationException>()).Which.Message
            .Should().Contain("position 1").And.Contain("account-9").And.Contain("bank.deposited");
    }

    [Fact]
    public async Task ReadAllAsync_FilterCreatedFromTypes_SelectsByTypeAndInterface()
    {
        using var host = await EventSourcingHost.StartAsync(es => es.AddEvent<OrderPlacedEvent>().AddEvent<OrderShippedEvent>());
        var store = host.Store();
        await store.AppendAsync("order-1", ExpectedVersion.NoStream, [new OrderPlacedEvent("1", 5m), new OrderShippedEvent("1")]);
        await store.AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(3m)]);
        await store.AppendAsync("order-2", ExpectedVersion.NoStream, new OrderPlacedEvent("2", 7m));

        var shipped = await store.ReadAllAsync(0, store.CreateFilter(typeof(OrderShippedEvent))).CollectAsync();
        var orders = await store.ReadAllAsync(0, store.CreateFilter(typeof(IOrderEvent))).CollectAsync();
        var deposits = await store.ReadAllAsync(0, store.CreateFilter([typeof(Deposited)], "account-")).CollectAsync();

        shipped.Select(e => e.Data).Should().Equal(new OrderShippedEvent("1"));
        orders.Select(e => e.StreamId).Should().Equal("order-1", "order-1", "order-2");
        deposits.Select(e => e.Data).Should().Equal(new Deposited(3m));
        store.GetEventTypeName(typeof(OrderPlacedEvent)).Should().Be("orders.placed");
    }

    [Fact]
    public void CreateFilter_InterfaceWithNoRegisteredImplementation_ThrowsInsteadOfSelectingNothing()
    {
        var services = new ServiceCollection();
        services.AddEventSourcing();
        using var provider = services.BuildServiceProvider();
        var store = provider.GetRequiredService<IEventStore>();

        var act = () => store.CreateFilter(typeof(IDisposable));

        act.Should().Throw<InvalidOperationException>().WithMessage("*System.IDisposable*AddEvent*");
    }

    [Fact]
    public async Task DeleteAndTruncate_PassThroughToTheStorage()
    {
        using var host = await EventSourcingHost.StartAsync(_ => { });
        var store = host.Store();
        await store.AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(1m), new Deposited(2m)]);
        await store.AppendAsync("account-2", ExpectedVersion.NoStream, new AccountOpened("bob"));

        await store.TruncateStreamAsync("account-1", 3);
        await store.DeleteStreamAsync("account-2", ExpectedVersion.Exact(1));

        (await store.ReadStreamAsync("account-1").CollectAsync()).Select(e => e.Data).Should().Equal(new Deposited(2m));
        (await store.ReadStreamAsync("account-1", ReadDirection.Backward, null, 1).CollectAsync()).Select(e => e.Version).Should().Equal(3);
        (await store.GetStreamStateAsync("account-2")).IsDeleted.Should().BeTrue();
        var read = async () => await store.ReadStreamAsync("account-2").CollectAsync();
        await read.Should().ThrowAsync<StreamDeletedException>();
        (await store.GetHeadPositionAsync()).Should().Be(4);
        (await store.ReadAllAsync().CollectAsync()).Should().HaveCount(4);
    }

    [Fact]
    public async Task AppendAsync_InvalidArguments_ThrowArgumentExceptions()
    {
        using var host = await EventSourcingHost.StartAsync(_ => { });
        var store = host.Store();

        await FluentActions.Awaiting(async () => await store.AppendAsync("a", ExpectedVersion.Any, Array.Empty<EventData>())).Should().ThrowAsync<ArgumentException>();
        await FluentActions.Awaiting(async () => await store.AppendAsync("", ExpectedVersion.Any, new Deposited(1))).Should().ThrowAsync<ArgumentException>();
        FluentActions.Invoking(() => new EventData(null!)).Should().Throw<ArgumentNullException>();
    }
}
