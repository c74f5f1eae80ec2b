using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Patterns.Messaging;
using Patterns.Storage;
using Patterns.Transport;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

using static Patterns.RabbitMq.Tests.TestEnvelopes;

namespace Patterns.RabbitMq.Tests;

/// <summary>What the RabbitMQ transport does beyond the conformance suite: topology, recovery from a deleted queue.</summary>
public sealed class RabbitMqTransportTests : IAsyncLifetime
{
    private readonly List<MessageTransport> _transports = [];

    private readonly List<IConnection> _connections = [];

    public ValueTask InitializeAsync() => default;

    public async ValueTask DisposeAsync()
    {
        foreach (var transport in _transports)
        {
            await transport.DisposeAsync();
            await Broker.DeleteTopologyAsync(transport);
        }

        foreach (var connection in _connections)
        {
            await connection.DisposeAsync();
        }
    }

    [Fact]
    public async Task DeclareQueue_ExistsWithOtherCapacity_ThrowsNamingTheDifference()
    {
        var prefix = Broker.Prefix("conflict");
        var first = await CreateSutAsync(o => o.NamePrefix = prefix);
        var second = await CreateSutAsync(o => o.NamePrefix = prefix);
        await first.DeclareQueueAsync("shared", new QueueSettings { Capacity = 10 });

        var act = async () => await second.DeclareQueueAsync("shared", new QueueSettings { Capacity = 20 });

        (await act.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain("x-max-length").And.Contain("shared");
    }

    [Fact]
    public async Task Subscribe_QueueDeclaredElsewhereWithOtherCapacity_ConsumesItAsItIs()
    {
        var prefix = Broker.Prefix("elsewhere");
        var owner = await CreateSutAsync(o => o.NamePrefix = prefix);
        var consumer = await CreateSutAsync(o => o.NamePrefix = prefix);
        await owner.DeclareQueueAsync("jobs", new QueueSettings { Capacity = 10 });
        var handled = new Collector<int>();

        await consumer.SubscribeAsync(Queue("jobs"), (e, _) => { handled.Add(BitConverter.ToInt32(e.Payload.Span)); return new(Settlement.Ack); });
        await owner.SendAsync("jobs", Message(7));

        await handled.WaitForAsync(1);
        handled.Items.Should().Equal(7);
    }

    [Fact]
    public async Task QueueDeletedWhileConsuming_ConsumerDeclaresItAgainAndKeepsGoing()
    {
        var transport = (RabbitMqMessageTransport)await CreateSutAsync();
        await transport.DeclareQueueAsync("fragile", new QueueSettings());
        var handled = new Collector<int>();
        await transport.SubscribeAsync(Queue("fragile"), (e, _) => { handled.Add(BitConverter.ToInt32(e.Payload.Span)); return new(Settlement.Ack); });
        await transport.SendAsync("fragile", Message(1));
        await handled.WaitForAsync(1);

        await using (var connection = await Broker.ConnectAsync())
        await using (var channel = await connection.CreateChannelAsync())
        {
            await channel.QueueDeleteAsync(transport.Topology.Queue("fragile"), ifUnused: false, ifEmpty: false);
        }

        // The consumer notices (the broker cancels it), declares the queue again and consumes; sends in the
        // meantime find no queue and say so, so keep sending until one arrives.
        var sent = 2;
        var arrived = handled.WaitForAsync(2);
        var deadline = DateTime.UtcNow + RabbitHost.Wait;
        while (!arrived.IsCompleted && DateTime.UtcNow < deadline)
        {
            try
            {
                await transport.SendAsync("fragile", Message(sent));
                sent++;
            }
            catch (InvalidOperationException ex) when (ex.Message.Contains("does not exist", StringComparison.Ordinal))
            {
                // Not declared again yet.
            }
        }

        await arrived;
        handled.Items[1].Should().BeGreaterThanOrEqualTo(2);
    }

    [Fact]
    public async Task ConsumeRefusedWhileSubscribingAgain_ConsumesOnceAllowed()
    {
        // A consumer that subscribes again after its queue was deleted can find the queue declared but refused to it
        // (here another connection consumes it exclusively). It keeps trying, and consumes once allowed.
        var (transport, clock, handled, subscription, channel) = await RefuseNextSubscribeAsync("refused");
        var secondWait = await clock.NextAsync().WaitAsync(RabbitHost.Wait);

        await channel.CloseAsync();
        await channel.DisposeAsync();
        secondWait.Fire();
        await transport.SendAsync("locked", Message(2));

        await handled.WaitForAsync(2);
        await subscription.StopAsync(CancellationToken.None);
        handled.Items.Should().Equal(1, 2);
    }

    [Fact]
    public async Task ConsumeRefusedWhileSubscribingAgain_StopBeforeTheNextTry_ClosesCleanly()
    {
        // The channel opened for the refused attempt is closed by then: the subscription must not keep it as its
        // channel (stopping touched the disposed channel and threw ObjectDisposedException).
        var (_, clock, handled, subscription, channel) = await RefuseNextSubscribeAsync("refusedstop");
        await clock.NextAsync().WaitAsync(RabbitHost.Wait);

        await subscription.StopAsync(CancellationToken.None).WaitAsync(RabbitHost.Wait);
        await channel.CloseAsync();
        await channel.DisposeAsync();
        handled.Items.Should().Equal(1);
    }

    [Fact]
    public async Task TemporarySubscription_QueueIsExclusiveAndGoesAwayWithIt()
    {
        var transport = (RabbitMqMessageTransport)await CreateSutAsync();
        var received = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        var subscription = await transport.SubscribeAsync(
            Queue("replies.temp") with { Temporary = true },
            (e, _) => { received.TrySetResult(e); return new(Settlement.Ack); });

        await transport.SendAsync("replies.temp", Message(5));
        (await received.Task.WaitAsync(RabbitHost.Wait)).Payload.ToArray().Should().Equal(BitConverter.GetBytes(5));
        await subscription.StopAsync(CancellationToken.None);

        await using var connection = await Broker.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync();
        var passive = async () => await channel.QueueDeclarePassiveAsync(transport.Topology.Queue("replies.temp"));
        (await passive.Should().ThrowAsync<OperationInterruptedException>()).Which.ShutdownReason!.ReplyCode.Should().Be(404);
        transport.Topology.Created.Keys.Should().NotContain(k => k.Contains("replies.temp", StringComparison.Ordinal), "a temporary queue has no dead-letter queue");
    }

    [Fact]
    public async Task Subscribe_SameGroupTwoPatterns_Throws()
    {
        var transport = await CreateSutAsync();
        await transport.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Topic("a.*"), ConsumerGroup = "g" }, (_, _) => new(Settlement.Ack));

        var act = async () => await transport.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Topic("b.*"), ConsumerGroup = "g" }, (_, _) => new(Settlement.Ack));

        (await act.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain("'a.*'").And.Contain("'b.*'");
    }

    [Fact]
    public async Task Send_BodyLargerThanTheLimitOnceSerialized_ThrowsMessageTooLarge()
    {
        var transport = await CreateSutAsync(o => o.MaxPayloadBytes = 1024);
        await transport.DeclareQueueAsync("big", new QueueSettings());

        var act = async () => await transport.SendAsync("big", new Envelope { MessageId = Guid.NewGuid(), MessageType = "w", Body = new string('x', 2000) });

        (await act.Should().ThrowAsync<MessageTooLargeException>()).Which.Limit.Should().Be(1024);
    }

    [Fact]
    public async Task Connect_WrongPassword_FailsAtOnceSayingTheBrokerRefused()
    {
        await Broker.RequireAsync();
        var uri = new UriBuilder(Broker.Uri) { UserName = "guest", Password = "wrong-password" }.Uri;
        var transport = await CreateSutAsync(o =>
        {
            o.Uri = uri;
            o.ReconnectTimeout = TimeSpan.FromMinutes(10);
        });

        var act = async () => await transport.DeclareQueueAsync("never", new QueueSettings()).AsTask().WaitAsync(RabbitHost.Wait);

        (await act.Should().ThrowAsync<TransportUnavailableException>()).Which.Message.Should().Contain("refused");
    }

    [Fact]
    public void Create_InvalidOptions_ThrowsListingEveryProblem()
    {
        var options = new RabbitMqTransportOptions { Uri = new Uri("http://localhost/"), NamePrefix = "amq.x", PublisherChannels = 0 };
        options.RetryDelays.Add(TimeSpan.FromSeconds(1));

        var act = () => RabbitMqTransport.Create(options);

        var thrown = act.Should().Throw<OptionsValidationException>().Which;
        thrown.Failures.Should().HaveCount(4);
        thrown.Message.Should().Contain("amqp://").And.Contain("amq.").And.Contain("PublisherChannels").And.Contain("same delay twice");
    }

    [Theory]
    [InlineData(1, 250)]
    [InlineData(250, 250)]
    [InlineData(251, 1000)]
    [InlineData(4000, 5000)]
    [InlineData(7_200_000, 3_600_000)]
    public void RetryDelayFor_RoundsUpToAConfiguredDelay(int requestedMs, int expectedMs)
    {
        var topology = new RabbitMqTopology(new RabbitMqTransportOptions(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);

        topology.RetryDelayFor(TimeSpan.FromMilliseconds(requestedMs)).Should().Be(TimeSpan.FromMilliseconds(expectedMs));
    }

    [Theory]
    [InlineData(250, "q.delay.250ms")]
    [InlineData(5000, "q.delay.5s")]
    [InlineData(900_000, "q.delay.15m")]
    [InlineData(3_600_000, "q.delay.1h")]
    public void DelayQueue_NamesTheDelay(int delayMs, string expected) =>
        new RabbitMqTopology(new RabbitMqTransportOptions(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance)
            .DelayQueue("q", TimeSpan.FromMilliseconds(delayMs)).Should().Be(expected);

    [Fact]
    public void RetryQueue_IsTheQueueNameWithRetry() =>
        new RabbitMqTopology(new RabbitMqTransportOptions { NamePrefix = "p." }, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance)
            .RetryQueue("q").Should().Be("p.q.retry");

    [Fact]
    public void Envelope_ToPropertiesAndBack_KeepsEveryField()
    {
        var sent = new Envelope
        {
            MessageId = Guid.NewGuid(),
            CorrelationId = Guid.NewGuid(),
            CausationId = Guid.NewGuid(),
            MessageType = "orders.placed",
            Payload = "{}"u8.ToArray(),
            SentAt = new DateTimeOffset(2026, 1, 2, 3, 4, 5, 678, TimeSpan.Zero).AddTicks(9),
            TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            TraceState = "vendor=1",
            PartitionKey = "account-7",
            ReplyTo = "replies.x",
            DeliveryCount = 3,
            Headers = new Dictionary<string, string> { ["tenant"] = "acme" },
        };

        var properties = AmqpEnvelope.ToProperties(sent, "application/json", persistent: true);
        // As the broker hands them back: strings as UTF-8 bytes.
        var wire = new BasicProperties(properties)
        {
            Headers = properties.Headers!.ToDictionary(h => h.Key, h => h.Value is string s ? (object?)System.Text.Encoding.UTF8.GetBytes(s) : h.Value),
        };
        AmqpEnvelope.TryRead(wire, sent.Payload, redelivered: false, out var got, out var problem).Should().BeTrue(problem);

        properties.Persistent.Should().BeTrue();
        got.MessageId.Should().Be(sent.MessageId);
        got.CorrelationId.Should().Be(sent.CorrelationId);
        got.CausationId.Should().Be(sent.CausationId);
        got.MessageType.Should().Be("orders.placed");
        got.ContentType.Should().Be("application/json");
        got.SentAt.Should().Be(sent.SentAt);
        got.TraceParent.Should().Be(sent.TraceParent);
        got.TraceState.Should().Be("vendor=1");
        got.PartitionKey.Should().Be("account-7");
        got.ReplyTo.Should().Be("replies.x");
        got.DeliveryCount.Should().Be(3);
        got.Headers.Should().BeEquivalentTo(new Dictionary<string, string> { ["tenant"] = "acme" });
    }

    [Fact]
    public void Envelope_ForeignMessageIdAndRedelivery_MapsToAStableGuidAndCountsTheRedelivery()
    {
        var properties = new BasicProperties { MessageId = "order-42" };

        AmqpEnvelope.TryRead(properties, "{}"u8.ToArray(), redelivered: true, out var first, out _).Should().BeTrue();
        AmqpEnvelope.TryRead(properties, "{}"u8.ToArray(), redelivered: false, out var second, out _).Should().BeTrue();

        first.MessageId.Should().Be(second.MessageId).And.NotBe(Guid.Empty);
        first.DeliveryCount.Should().Be(1);
        second.DeliveryCount.Should().Be(0);
    }

    [Theory]
    [InlineData(null, null, "no message-id")]
    [InlineData(AmqpEnvelope.DeliveryCountHeader, "many", "patterns-delivery-count")]
    [InlineData(AmqpEnvelope.CausationIdHeader, "not-a-guid", "patterns-causation-id")]
    public void Envelope_MalformedProperties_SaysWhatIsWrong(string? header, string? value, string expected)
    {
        var properties = new BasicProperties { MessageId = header is null ? null : Guid.NewGuid().ToString() };
        if (header is not null)
        {
            properties.Headers = new Dictionary<string, object?> { [header] = System.Text.Encoding.UTF8.GetBytes(value!) };
        }

        AmqpEnvelope.TryRead(properties, "{}"u8.ToArray(), redelivered: false, out _, out var problem).Should().BeFalse();

        problem.Should().Contain(expected);
    }

    /// <summary>
    /// Subscribes to "locked", deletes the queue under the consumer, declares it again with another connection
    /// consuming it exclusively, and lets the consumer try once: that try is refused. Returns the exclusive channel.
    /// </summary>
    private async Task<(RabbitMqMessageTransport Transport, HeldDelays Clock, Collector<int> Handled, TransportSubscription Subscription, IChannel Exclusive)> RefuseNextSubscribeAsync(string test)
    {
        await Broker.RequireAsync();
        var logs = new CapturingLoggerFactory();
        var recovery = TimeSpan.FromMilliseconds(1234);
        var clock = new HeldDelays(recovery);
        var transport = (RabbitMqMessageTransport)RabbitMqTransport.Create(
            Broker.Options(test, o => o.NetworkRecoveryInterval = recovery), timeProvider: clock, loggerFactory: logs);
        _transports.Add(transport);
        await transport.DeclareQueueAsync("locked", new QueueSettings());
        var handled = new Collector<int>();
        var subscription = await transport.SubscribeAsync(Queue("locked"), (e, _) => { handled.Add(BitConverter.ToInt32(e.Payload.Span)); return new(Settlement.Ack); });
        await transport.SendAsync("locked", Message(1));
        await handled.WaitForAsync(1);

        var connection = await Broker.ConnectAsync();
        _connections.Add(connection);
        var channel = await connection.CreateChannelAsync();
        await channel.QueueDeleteAsync(transport.Topology.Queue("locked"), ifUnused: false, ifEmpty: false);
        var firstWait = await clock.NextAsync().WaitAsync(RabbitHost.Wait);

        // Declared again as the transport declares it, then taken by an exclusive consumer elsewhere.
        transport.Topology.Forget("locked");
        await transport.DeclareQueueAsync("locked", new QueueSettings());
        await channel.BasicConsumeAsync(transport.Topology.Queue("locked"), autoAck: false, consumerTag: string.Empty, noLocal: false, exclusive: true, arguments: null, new AsyncDefaultBasicConsumer(channel));
        var failed = logs.WaitFor(e => e.EventId.Id == 5010);
        firstWait.Fire();
        (await failed.WaitAsync(RabbitHost.Wait)).Message.Should().Contain("locked");
        return (transport, clock, handled, subscription, channel);
    }

    private Task<MessageTransport> CreateSutAsync(Action<RabbitMqTransportOptions>? configure = null) =>
        Broker.CreateAsync(_transports, "transport", configure);
}

/// <summary>Holds every timer of one due time until the test fires it; other timers run on the system clock.</summary>
internal sealed class HeldDelays(TimeSpan held) : TimeProvider
{
    private readonly Channel<HeldTimer> _pending = Channel.CreateUnbounded<HeldTimer>();

    /// <summary>Completes with the next held timer once one is created.</summary>
    public async Task<HeldTimer> NextAsync() => await _pending.Reader.ReadAsync();

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        if (dueTime != held)
        {
            return System.CreateTimer(callback, state, dueTime, period);
        }

        var timer = new HeldTimer(callback, state);
        _pending.Writer.TryWrite(timer);
        return timer;
    }
}

/// <summary>A timer that fires once, when the test says so, unless disposed first.</summary>
internal sealed class HeldTimer(TimerCallback callback, object? state) : ITimer
{
    private int _done;

    public void Fire()
    {
        if (Interlocked.Exchange(ref _done, 1) == 0)
        {
            callback(state);
        }
    }

    public bool Change(TimeSpan dueTime, TimeSpan period) => Volatile.Read(ref _done) == 0;

    public void Dispose() => Volatile.Write(ref _done, 1);

    public ValueTask DisposeAsync()
    {
        Dispose();
        return default;
    }
}
