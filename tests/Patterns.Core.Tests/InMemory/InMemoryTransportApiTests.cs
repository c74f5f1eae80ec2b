using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.Telemetry;
using Patterns.Transport;
using static Patterns.Core.Tests.InMemory.InMemoryTransportDefectTests;

namespace Patterns.Core.Tests.InMemory;

/// <summary>What the in-memory transport's own API refuses, and its dead-letter queue's bounds, asserted on the transport directly.</summary>
public sealed class InMemoryTransportApiTests
{
    [Fact]
    public async Task SystemName_IsPatternsInMemory()
    {
        await using var transport = InMemoryTransport.Create();

        transport.SystemName.Should().Be("patterns.inmemory");
    }

    [Fact]
    public async Task Subscribe_ConcurrencyOrCapacityBelowOne_Throws()
    {
        await using var transport = InMemoryTransport.Create();
        var request = new SubscriptionRequest { Address = TransportAddress.Queue("guarded"), ConsumerGroup = "guarded" };

        var noWorker = async () => await transport.SubscribeAsync(request with { Concurrency = 0 }, static (_, _) => new(Settlement.Ack));
        var noRoom = async () => await transport.SubscribeAsync(request with { Capacity = 0 }, static (_, _) => new(Settlement.Ack));

        (await noWorker.Should().ThrowAsync<ArgumentOutOfRangeException>()).Which.ParamName.Should().Be("request.Concurrency");
        (await noRoom.Should().ThrowAsync<ArgumentOutOfRangeException>()).Which.ParamName.Should().Be("request.Capacity");
    }

    [Fact]
    public async Task DeclareQueue_CapacityBelowOneOrNegativeDeadLetterCapacity_Throws()
    {
        await using var transport = InMemoryTransport.Create();

        var noRoom = async () => await transport.DeclareQueueAsync("q", new QueueSettings { Capacity = 0 });
        var negative = async () => await transport.DeclareQueueAsync("q", new QueueSettings { DeadLetterCapacity = -1 });

        (await noRoom.Should().ThrowAsync<ArgumentOutOfRangeException>()).Which.ParamName.Should().Be("capacity");
        (await negative.Should().ThrowAsync<ArgumentOutOfRangeException>()).Which.ParamName.Should().Be("deadLetterCapacity");
        await transport.DeclareQueueAsync("q", new QueueSettings { Capacity = 1, DeadLetterCapacity = 0 });
    }

    [Fact]
    public async Task PeekAndReplay_NegativeCount_Throws_AndAnUnknownQueueIsNamed()
    {
        await using var transport = InMemoryTransport.Create();
        await transport.DeclareQueueAsync("known", new QueueSettings());

        var peek = async () => await transport.PeekDeadLettersAsync("known", -1);
        var replay = async () => await transport.ReplayDeadLettersAsync("known", -1);
        var unknown = async () => await transport.PeekDeadLettersAsync("unknown", 10);

        await peek.Should().ThrowAsync<ArgumentOutOfRangeException>();
        await replay.Should().ThrowAsync<ArgumentOutOfRangeException>();
        (await unknown.Should().ThrowAsync<QueueNotFoundException>()).Which.Message.Should().Be("Queue 'unknown' does not exist, so it has no dead-letter queue.");
    }

    [Fact]
    public async Task AfterDispose_EveryOperationThatChangesState_ThrowsObjectDisposed()
    {
        var transport = InMemoryTransport.Create();
        await transport.DeclareQueueAsync("q", new QueueSettings());
        await transport.DisposeAsync();
        await transport.DisposeAsync(); // a second dispose is a no-op

        var declare = async () => await transport.DeclareQueueAsync("other", new QueueSettings());
        var send = async () => await transport.SendAsync("q", Message("a"));
        var publish = async () => await transport.PublishAsync("t", Message("a"));
        var subscribe = async () => await transport.SubscribeAsync(TopicRequest("t", "g"), static (_, _) => new(Settlement.Ack));
        var replay = async () => await transport.ReplayDeadLettersAsync("q", 1);

        await declare.Should().ThrowAsync<ObjectDisposedException>();
        await send.Should().ThrowAsync<ObjectDisposedException>();
        await publish.Should().ThrowAsync<ObjectDisposedException>();
        await subscribe.Should().ThrowAsync<ObjectDisposedException>();
        await replay.Should().ThrowAsync<ObjectDisposedException>();
    }

    [Fact]
    public async Task Dispose_ASenderWaitingOnAFullQueue_FailsNamingTheQueue()
    {
        var transport = InMemoryTransport.Create();
        await transport.DeclareQueueAsync("full", new QueueSettings { Capacity = 1, FullMode = QueueFullMode.Wait });
        await transport.SendAsync("full", Message("a"));
        var waiting = transport.SendAsync("full", Message("b")).AsTask();
        waiting.IsCompleted.Should().BeFalse("the queue is full and nobody consumes it");

        await transport.DisposeAsync();

        (await waiting.Awaiting(t => t.WaitAsync(TestHost.Wait)).Should().ThrowAsync<ObjectDisposedException>())
            .Which.Message.Should().Contain("The in-memory transport is stopped; queue 'full' accepts no more messages.");
    }

    [Fact]
    public async Task Subscribe_AGroupAlreadyOnAnotherTopic_ThrowsNamingBothTopics()
    {
        await using var transport = InMemoryTransport.Create();
        await transport.SubscribeAsync(TopicRequest("orders", "audit"), static (_, _) => new(Settlement.Ack));

        var second = async () => await transport.SubscribeAsync(TopicRequest("invoices", "audit"), static (_, _) => new(Settlement.Ack));

        (await second.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Be(
            "Consumer group 'audit' already subscribes to topic 'orders', so it cannot also subscribe to 'invoices'. Give the subscription its own consumer group.");
    }

    [Fact]
    public async Task DeadLetters_PastTheCapacity_KeepTheNewest_ReplayTakesAtMostMaxCount_PurgeEmpties()
    {
        await using var transport = InMemoryTransport.Create();
        var request = new SubscriptionRequest { Address = TransportAddress.Queue("dl"), ConsumerGroup = "dl", DeadLetterCapacity = 2 };
        var subscription = await transport.SubscribeAsync(request, static (e, _) => new(Settlement.DeadLetter("refused " + e.Body)));
        foreach (var body in new[] { "a", "b", "c" })
        {
            await transport.SendAsync("dl", Message(body));
        }

        // The third dead letter evicts the first: wait for the eviction, not just for two entries.
        var letters = await WaitForDeadLettersAsync(transport, "dl", l => l.Count == 2 && (string)l[1].Envelope.Body! == "c");
        letters.Select(l => (string)l.Envelope.Body!).Should().Equal("b", "c");
        letters.Select(l => l.Reason).Should().Equal("refused b", "refused c");
        await subscription.DisposeAsync();

        (await transport.ReplayDeadLettersAsync("dl", 1)).Should().Be(1);
        (await transport.PeekDeadLettersAsync("dl", 10)).Select(l => (string)l.Envelope.Body!).Should().Equal("c");
        (await transport.PeekDeadLettersAsync("dl", 0)).Should().BeEmpty();

        (await transport.PurgeDeadLettersAsync("dl")).Should().Be(1);
        (await transport.PeekDeadLettersAsync("dl", 10)).Should().BeEmpty();
        (await transport.PurgeDeadLettersAsync("dl")).Should().Be(0);
    }

    [Fact]
    public async Task Dispose_MessagesBufferedWithNoConsumer_AreReportedLostOnceWithTheirCount()
    {
        var logs = new CapturedLogs();
        using var loggerFactory = new LoggerFactory([logs]);
        var transport = InMemoryTransport.Create(loggerFactory: loggerFactory);
        await transport.DeclareQueueAsync("buffered", new QueueSettings());
        await transport.DeclareQueueAsync("empty", new QueueSettings());
        foreach (var body in new[] { "a", "b", "c" })
        {
            await transport.SendAsync("buffered", Message(body));
        }

        await transport.DisposeAsync();

        logs.Entries.Where(e => e.EventId.Id == 1102).Select(e => e.Message).Should().Equal(
            "3 message(s) buffered for 'buffered' were not handled before the drain deadline and are lost (the in-memory transport does not persist).");
    }

    [Fact]
    public async Task DeadLetters_PastTheCapacity_LogTheEvictionOnce()
    {
        var logs = new CapturedLogs();
        using var loggerFactory = new LoggerFactory([logs]);
        await using var transport = InMemoryTransport.Create(loggerFactory: loggerFactory);
        var request = new SubscriptionRequest { Address = TransportAddress.Queue("evicting"), ConsumerGroup = "evicting", DeadLetterCapacity = 2 };
        var subscription = await transport.SubscribeAsync(request, static (_, _) => new(Settlement.DeadLetter("refused")));
        foreach (var body in new[] { "a", "b", "c" })
        {
            await transport.SendAsync("evicting", Message(body));
        }

        await WaitForDeadLettersAsync(transport, "evicting", l => l.Count == 2 && (string)l[1].Envelope.Body! == "c");
        await subscription.DisposeAsync(); // waits for the worker, so its last settlement has been logged

        logs.Entries.Where(e => e.EventId.Id == 1103).Select(e => e.Message).Should().Equal(
            "The dead-letter queue of 'evicting' is full (capacity 2); its 1 oldest message(s) were discarded.");
    }

    [Fact]
    public async Task Metrics_DeadLettersEvictionsAndMessagesLostAtStop_AreCountedForTheirQueue()
    {
        var counted = new ConcurrentDictionary<(string Instrument, string Queue), long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == PatternsDiagnostics.MeterName
                && instrument.Name is "patterns.messages.dead_lettered" or "patterns.messages.dropped")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "messaging.destination.name" && tag.Value is string queue && queue.StartsWith("metered.", StringComparison.Ordinal))
                {
                    counted.AddOrUpdate((instrument.Name, queue), value, (_, total) => total + value);
                }
            }
        });
        listener.Start();
        var transport = InMemoryTransport.Create();
        var request = new SubscriptionRequest { Address = TransportAddress.Queue("metered.dl"), ConsumerGroup = "metered.dl", DeadLetterCapacity = 2 };
        var subscription = await transport.SubscribeAsync(request, static (_, _) => new(Settlement.DeadLetter("refused")));
        await transport.DeclareQueueAsync("metered.buffered", new QueueSettings());
        foreach (var body in new[] { "a", "b", "c" })
        {
            await transport.SendAsync("metered.dl", Message(body));
            await transport.SendAsync("metered.buffered", Message(body));
        }

        await WaitForDeadLettersAsync(transport, "metered.dl", l => l.Count == 2 && (string)l[1].Envelope.Body! == "c");
        await subscription.DisposeAsync(); // waits for the worker, so its last settlement has been counted
        await transport.DisposeAsync();

        counted.Should().BeEquivalentTo(new Dictionary<(string, string), long>
        {
            [("patterns.messages.dead_lettered", "metered.dl")] = 3,
            [("patterns.messages.dropped", "metered.dl")] = 1,
            [("patterns.messages.dropped", "metered.buffered")] = 3,
        });
    }

    private static async Task<IReadOnlyList<DeadLetterMessage>> WaitForDeadLettersAsync(
        MessageTransport transport, string queue, Func<IReadOnlyList<DeadLetterMessage>, bool> done)
    {
        var deadline = DateTime.UtcNow + TestHost.Wait;
        while (true)
        {
            var letters = await transport.PeekDeadLettersAsync(queue, 100);
            if (done(letters) || DateTime.UtcNow > deadline)
            {
                return letters;
            }

            await Task.Yield();
        }
    }
}
