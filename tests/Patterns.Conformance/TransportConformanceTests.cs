using System.Collections.Concurrent;
using FluentAssertions;
using Patterns.Messaging;
using Patterns.Transport;
using Xunit;

namespace Patterns.Conformance;

/// <summary>
/// The contract every <see cref="MessageTransport"/> must keep. A transport's test class subclasses this
/// and supplies <see cref="CreateTransportAsync"/>; nothing else changes between transports.
/// </summary>
/// <remarks>
/// No test sleeps: each waits on a signal raised by a handler, bounded by <see cref="WaitTimeout"/> so a
/// broken transport fails the test instead of hanging it.
/// </remarks>
public abstract partial class TransportConformanceTests : IAsyncLifetime
{
    private readonly List<TransportSubscription> _subscriptions = [];
    private MessageTransport? _transport;

    /// <summary>Gets how long a test waits for deliveries before it fails.</summary>
    protected virtual TimeSpan WaitTimeout => TimeSpan.FromSeconds(60);

    /// <summary>Gets the transport under test.</summary>
    protected MessageTransport Transport => _transport ?? throw new InvalidOperationException("Not initialized.");

    /// <summary>Creates a fresh transport for one test.</summary>
    protected abstract ValueTask<MessageTransport> CreateTransportAsync();

    public async ValueTask InitializeAsync() => _transport = await CreateTransportAsync();

    public async ValueTask DisposeAsync()
    {
        foreach (var subscription in _subscriptions)
        {
            await subscription.DisposeAsync();
        }

        if (_transport is not null)
        {
            await _transport.DisposeAsync();
        }

        GC.SuppressFinalize(this);
    }

    [Fact]
    public async Task Publish_TwoConsumerGroups_EachGroupReceivesEveryMessageOnce()
    {
        var topic = Name("conformance.fanout");
        const int count = 2_000;
        var groupA = new ConcurrentDictionary<Guid, int>();
        var groupB = new ConcurrentDictionary<Guid, int>();
        var done = new CountdownEvent(count * 2);
        await SubscribeAsync(TransportAddress.Topic(topic), Name("group-a"), (e, _) => Count(groupA, e, done));
        await SubscribeAsync(TransportAddress.Topic(topic), Name("group-b"), (e, _) => Count(groupB, e, done), concurrency: 4);

        for (var i = 0; i < count; i++)
        {
            (await Transport.PublishAsync(topic, NewEnvelope(i))).Should().BeTrue();
        }

        await WaitAsync(done);
        groupA.Should().HaveCount(count).And.OnlyContain(kv => kv.Value == 1);
        groupB.Should().HaveCount(count).And.OnlyContain(kv => kv.Value == 1);
    }

    [Fact]
    public async Task Publish_NoSubscription_ReturnsFalseAndDeliversNothing()
    {
        var routed = await Transport.PublishAsync(Name("conformance.nobody"), NewEnvelope(1));
        routed.Should().BeFalse();
    }

    [Fact]
    public async Task Publish_WildcardPatterns_MatchSegmentsAsDocumented()
    {
        var prefix = Name("wild");
        var star = new ConcurrentQueue<string>();
        var hash = new ConcurrentQueue<string>();
        var done = new CountdownEvent(4);
        await SubscribeAsync(TransportAddress.Topic($"{prefix}.*"), Name("star"), (e, _) => Record(star, e, done));
        await SubscribeAsync(TransportAddress.Topic($"{prefix}.#"), Name("hash"), (e, _) => Record(hash, e, done));

        await Transport.PublishAsync($"{prefix}.placed", NewEnvelope(1, partitionKey: null, type: "placed"));
        await Transport.PublishAsync($"{prefix}.eu.placed", NewEnvelope(2, partitionKey: null, type: "eu.placed"));
        await Transport.PublishAsync($"{prefix}", NewEnvelope(3, partitionKey: null, type: "root"));
        (await Transport.PublishAsync($"other.{prefix}.placed", NewEnvelope(4))).Should().BeFalse();

        await WaitAsync(done);
        star.Should().BeEquivalentTo(["placed"]);
        hash.Should().BeEquivalentTo(["placed", "eu.placed", "root"]);
    }

    [Fact]
    public async Task Send_CompetingConsumers_EachMessageHandledExactlyOnce()
    {
        var queue = Name("conformance.work");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        const int count = 5_000;
        var seen = new ConcurrentDictionary<Guid, int>();
        var perConsumer = new int[2];
        var done = new CountdownEvent(count);
        await SubscribeAsync(TransportAddress.Queue(queue), queue, (e, _) => { Interlocked.Increment(ref perConsumer[0]); return Count(seen, e, done); }, concurrency: 4);
        await SubscribeAsync(TransportAddress.Queue(queue), queue, (e, _) => { Interlocked.Increment(ref perConsumer[1]); return Count(seen, e, done); }, concurrency: 4);

        for (var i = 0; i < count; i++)
        {
            await Transport.SendAsync(queue, NewEnvelope(i));
        }

        await WaitAsync(done);
        seen.Should().HaveCount(count).And.OnlyContain(kv => kv.Value == 1);
        (perConsumer[0] + perConsumer[1]).Should().Be(count);
    }

    [Fact]
    public async Task Send_SamePartitionKey_HandledInOrderAtConcurrencyEight()
    {
        var queue = Name("conformance.ordered");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        const int keys = 16;
        const int perKey = 200;
        var received = new ConcurrentDictionary<string, List<int>>();
        var done = new CountdownEvent(keys * perKey);
        await SubscribeAsync(TransportAddress.Queue(queue), queue, async (e, _) =>
        {
            var list = received.GetOrAdd(e.PartitionKey!, _ => []);
            lock (list)
            {
                list.Add(Sequence(e));
            }

            // Yield so that workers interleave and a reordering would show.
            await Task.Yield();
            done.Signal();
            return Settlement.Ack;
        }, concurrency: 8);

        for (var i = 0; i < perKey; i++)
        {
            for (var k = 0; k < keys; k++)
            {
                await Transport.SendAsync(queue, NewEnvelope(i, partitionKey: $"key-{k}"));
            }
        }

        await WaitAsync(done);
        received.Should().HaveCount(keys);
        foreach (var (key, sequence) in received)
        {
            sequence.Should().Equal(Enumerable.Range(0, perKey), $"messages with partition key {key} must be handled in send order");
        }
    }

    [Fact]
    public async Task Settle_Retry_RedeliversWithIncrementedDeliveryCount()
    {
        var queue = Name("conformance.retry");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var counts = new ConcurrentQueue<int>();
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await SubscribeAsync(TransportAddress.Queue(queue), queue, (e, _) =>
        {
            counts.Enqueue(e.DeliveryCount);
            if (e.DeliveryCount < 2)
            {
                return new(Settlement.Retry(TimeSpan.Zero, new InvalidOperationException("not yet")));
            }

            done.TrySetResult();
            return new(Settlement.Ack);
        });

        await Transport.SendAsync(queue, NewEnvelope(7));
        await done.Task.WaitAsync(WaitTimeout);
        counts.Should().Equal(0, 1, 2);
    }

    [Fact]
    public async Task Settle_DeadLetter_RecordsReasonAndCanBeReplayedAndPurged()
    {
        var queue = Name("conformance.dlq");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var deliveries = new ConcurrentQueue<Envelope>();
        var firstTime = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var replayed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await SubscribeAsync(TransportAddress.Queue(queue), queue, (e, _) =>
        {
            deliveries.Enqueue(e);
            if (deliveries.Count == 1)
            {
                firstTime.TrySetResult();
                return new(Settlement.DeadLetter("refused by test", new FormatException("bad amount")));
            }

            replayed.TrySetResult();
            return new(Settlement.Ack);
        });

        var sent = NewEnvelope(1);
        await Transport.SendAsync(queue, sent);
        await firstTime.Task.WaitAsync(WaitTimeout);
        var deadLetters = await WaitForDeadLettersAsync(queue, 1);

        var dead = deadLetters.Single();
        dead.Envelope.MessageId.Should().Be(sent.MessageId);
        dead.Reason.Should().Be("refused by test");
        dead.ExceptionType.Should().Be(typeof(FormatException).FullName);
        dead.ExceptionMessage.Should().Be("bad amount");
        dead.Source.Should().Be(queue);
        dead.Envelope.TryGetHeader(EnvelopeHeaders.ExceptionType, out var type).Should().BeTrue();
        type.Should().Be(typeof(FormatException).FullName);

        (await Transport.ReplayDeadLettersAsync(queue, 10)).Should().Be(1);
        await replayed.Task.WaitAsync(WaitTimeout);
        deliveries.Last().MessageId.Should().Be(sent.MessageId);
        deliveries.Last().DeliveryCount.Should().Be(0);
        (await Transport.PeekDeadLettersAsync(queue, 10)).Should().BeEmpty();

        await Transport.SendAsync(queue, NewEnvelope(2));
        await WaitForDeadLettersAsync(queue, 0);
        (await Transport.PurgeDeadLettersAsync(queue)).Should().Be(0);
    }

    [Fact]
    public async Task Handler_Throws_MessageDeadLetteredAndConsumerKeepsGoing()
    {
        var queue = Name("conformance.throw");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var handled = new ConcurrentQueue<int>();
        var done = new CountdownEvent(10);
        await SubscribeAsync(TransportAddress.Queue(queue), queue, (e, _) =>
        {
            var n = Sequence(e);
            if (n == 3)
            {
                done.Signal();
                throw new InvalidOperationException("poison 3");
            }

            handled.Enqueue(n);
            done.Signal();
            return new(Settlement.Ack);
        });

        for (var i = 0; i < 10; i++)
        {
            await Transport.SendAsync(queue, NewEnvelope(i));
        }

        await WaitAsync(done);
        var dead = await WaitForDeadLettersAsync(queue, 1);
        handled.Should().Equal(0, 1, 2, 4, 5, 6, 7, 8, 9);
        dead.Single().ExceptionMessage.Should().Be("poison 3");
    }

    [Fact]
    public async Task Send_FullQueueInRejectMode_ThrowsQueueFullException()
    {
        var queue = Name("conformance.reject");
        await Transport.DeclareQueueAsync(queue, new QueueSettings { Capacity = 2, FullMode = QueueFullMode.Reject });
        await Transport.SendAsync(queue, NewEnvelope(1));
        await Transport.SendAsync(queue, NewEnvelope(2));

        var act = async () => await Transport.SendAsync(queue, NewEnvelope(3));

        (await act.Should().ThrowAsync<QueueFullException>()).Which.Message.Should().Contain(queue);
    }

    [Fact]
    public async Task Send_FullQueueInWaitMode_WaitsUntilCancelled()
    {
        var queue = Name("conformance.wait");
        await Transport.DeclareQueueAsync(queue, new QueueSettings { Capacity = 1 });
        await Transport.SendAsync(queue, NewEnvelope(1));
        using var cts = new CancellationTokenSource();

        var pending = Transport.SendAsync(queue, NewEnvelope(2), cts.Token).AsTask();
        pending.IsCompleted.Should().BeFalse("a full queue makes the sender wait");
        await cts.CancelAsync();

        await pending.Invoking(p => p).Should().ThrowAsync<OperationCanceledException>();
    }

    [Fact]
    public async Task Stop_DrainsBufferedMessagesBeforeCompleting()
    {
        var queue = Name("conformance.drain");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handled = 0;
        var subscription = await SubscribeAsync(TransportAddress.Queue(queue), queue, async (e, _) =>
        {
            started.TrySetResult();
            await gate.Task;
            Interlocked.Increment(ref handled);
            return Settlement.Ack;
        });
        for (var i = 0; i < 50; i++)
        {
            await Transport.SendAsync(queue, NewEnvelope(i));
        }

        await started.Task.WaitAsync(WaitTimeout);
        var stopping = subscription.StopAsync(CancellationToken.None);
        stopping.IsCompleted.Should().BeFalse("a handler is still running");
        gate.SetResult();
        await stopping.WaitAsync(WaitTimeout);

        Volatile.Read(ref handled).Should().Be(50, "stopping drains what was buffered");
    }

    [Fact]
    public async Task Stop_DeadlinePassed_CancelsRunningHandler()
    {
        var queue = Name("conformance.deadline");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var sawCancellation = false;
        var subscription = await SubscribeAsync(TransportAddress.Queue(queue), queue, async (e, ct) =>
        {
            started.TrySetResult();
            try
            {
                await Task.Delay(Timeout.InfiniteTimeSpan, ct);
            }
            catch (OperationCanceledException)
            {
                sawCancellation = true;
                throw;
            }

            return Settlement.Ack;
        });
        await Transport.SendAsync(queue, NewEnvelope(1));
        await started.Task.WaitAsync(WaitTimeout);

        using var deadline = new CancellationTokenSource();
        await deadline.CancelAsync();
        await subscription.StopAsync(deadline.Token).WaitAsync(WaitTimeout);

        sawCancellation.Should().BeTrue();
    }

    [Fact]
    public async Task Send_EnvelopeWithoutIdOrBody_ThrowsArgumentExceptionNamingTheProblem()
    {
        var queue = Name("conformance.invalid");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());

        var noId = async () => await Transport.SendAsync(queue, NewEnvelope(1) with { MessageId = Guid.Empty });
        var noBody = async () => await Transport.SendAsync(queue, new Envelope { MessageId = Guid.NewGuid() });

        (await noId.Should().ThrowAsync<ArgumentException>()).Which.Message.Should().Contain("MessageId");
        (await noBody.Should().ThrowAsync<ArgumentException>()).Which.Message.Should().Contain("neither a Body nor a Payload");
    }

    [Fact]
    public async Task Send_OversizePayload_ThrowsAndLaterMessagesStillFlow()
    {
        var queue = Name("conformance.oversize");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var received = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        await SubscribeAsync(TransportAddress.Queue(queue), queue, (e, _) =>
        {
            received.TrySetResult(e);
            return new(Settlement.Ack);
        });
        var tooBig = new Envelope { MessageId = Guid.NewGuid(), MessageType = "blob", Payload = new byte[Transport.MaxPayloadBytes + 1] };

        var act = async () => await Transport.SendAsync(queue, tooBig);

        var thrown = await act.Should().ThrowAsync<MessageTooLargeException>();
        thrown.Which.Limit.Should().Be(Transport.MaxPayloadBytes);
        var fine = NewEnvelope(2);
        await Transport.SendAsync(queue, fine);
        (await received.Task.WaitAsync(WaitTimeout)).MessageId.Should().Be(fine.MessageId);
    }

    [Fact]
    public async Task Send_EnvelopeFieldsArriveIntact()
    {
        var queue = Name("conformance.fields");
        await Transport.DeclareQueueAsync(queue, new QueueSettings());
        var received = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        await SubscribeAsync(TransportAddress.Queue(queue), queue, (e, _) =>
        {
            received.TrySetResult(e);
            return new(Settlement.Ack);
        });
        var sent = new Envelope
        {
            MessageId = Guid.NewGuid(),
            CorrelationId = Guid.NewGuid(),
            CausationId = Guid.NewGuid(),
            MessageType = "conformance.fields",
            Payload = "{\"amount\":42}"u8.ToArray(),
            ContentType = "application/json",
            PartitionKey = "account-1",
            ReplyTo = "replies.x",
            TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            Headers = new Dictionary<string, string> { ["tenant"] = "acme" },
        };

        await Transport.SendAsync(queue, sent);
        var got = await received.Task.WaitAsync(WaitTimeout);

        got.MessageId.Should().Be(sent.MessageId);
        got.CorrelationId.Should().Be(sent.CorrelationId);
        got.CausationId.Should().Be(sent.CausationId);
        got.MessageType.Should().Be(sent.MessageType);
        got.Payload.ToArray().Should().Equal(sent.Payload.ToArray());
        got.PartitionKey.Should().Be("account-1");
        got.ReplyTo.Should().Be("replies.x");
        got.TraceParent.Should().Be(sent.TraceParent);
        got.TryGetHeader("tenant", out var tenant).Should().BeTrue();
        tenant.Should().Be("acme");
        got.DeliveryCount.Should().Be(0);
    }

    [Fact]
    public async Task Send_UndeclaredQueue_ThrowsNamingTheQueue()
    {
        var queue = Name("conformance.missing");

        var act = async () => await Transport.SendAsync(queue, NewEnvelope(1));

        (await act.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain(queue);
    }

    /// <summary>Subscribes and remembers the subscription so the test's end disposes it.</summary>
    protected async Task<TransportSubscription> SubscribeAsync(TransportAddress address, string group, DeliveryHandler handler, int concurrency = 1)
    {
        var subscription = await Transport.SubscribeAsync(new SubscriptionRequest { Address = address, ConsumerGroup = group, Concurrency = concurrency }, handler);
        _subscriptions.Add(subscription);
        return subscription;
    }

    /// <summary>A name unique to this test run, so tests never share broker state.</summary>
    protected static string Name(string prefix) => $"{prefix}-{Guid.NewGuid():N}"[..(prefix.Length + 9)];

    /// <summary>Creates a serialized envelope whose payload carries <paramref name="sequence"/>.</summary>
    protected static Envelope NewEnvelope(int sequence, string? partitionKey = null, string? type = null) => new()
    {
        MessageId = Guid.NewGuid(),
        MessageType = type ?? "conformance.message",
        Payload = BitConverter.GetBytes(sequence),
        PartitionKey = partitionKey,
        SentAt = DateTimeOffset.UnixEpoch,
    };

    /// <summary>Reads back the sequence number written by <see cref="NewEnvelope"/>.</summary>
    protected static int Sequence(in Envelope envelope) => BitConverter.ToInt32(envelope.Payload.Span);

    private async Task<IReadOnlyList<DeadLetterMessage>> WaitForDeadLettersAsync(string queue, int count)
    {
        // Dead-lettering happens after the handler returns (and on a broker, asynchronously): re-read the
        // dead-letter queue until it holds the expected count, bounded by WaitTimeout.
        var deadline = DateTime.UtcNow + WaitTimeout;
        while (true)
        {
            var letters = await Transport.PeekDeadLettersAsync(queue, 100);
            if (letters.Count == count)
            {
                return letters;
            }

            if (DateTime.UtcNow > deadline)
            {
                letters.Should().HaveCount(count, $"dead letters of {queue}");
            }

            await Task.Yield();
        }
    }

    private Task WaitAsync(CountdownEvent done) =>
        Task.Run(() => done.Wait(WaitTimeout).Should().BeTrue($"all deliveries should arrive within {WaitTimeout}"));

    private static ValueTask<Settlement> Count(ConcurrentDictionary<Guid, int> seen, Envelope e, CountdownEvent done)
    {
        seen.AddOrUpdate(e.MessageId, 1, (_, n) => n + 1);
        done.Signal();
        return new(Settlement.Ack);
    }

    private static ValueTask<Settlement> Record(ConcurrentQueue<string> into, Envelope e, CountdownEvent done)
    {
        into.Enqueue(e.MessageType!);
        done.Signal();
        return new(Settlement.Ack);
    }
}
