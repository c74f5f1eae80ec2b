using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Patterns.Core.Tests.EventSourcing;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.Testing;
using Patterns.Transport;

namespace Patterns.Core.Tests.InMemory;

/// <summary>Routing, redelivery and drain behaviour of the in-memory transport that the conformance suite does not reach.</summary>
public sealed class InMemoryTransportDefectTests
{
    // Hashing and comparing a topic this long makes one route-cache lookup take tens of microseconds, which widens
    // the window in which a bind or unbind can clear the cache under a publish that is looking the topic up.
    private static readonly string LongTopic = "race." + new string('x', 200_000);

    private const int RaceRounds = 400;

    [Fact]
    public async Task Publish_GroupBoundWhileAPublishLooksUpTheRoute_LaterPublishesReachTheGroup()
    {
        for (var round = 0; round < RaceRounds; round++)
        {
            var transport = InMemoryTransport.Create();
            await using (transport.ConfigureAwait(false))
            {
                await transport.SubscribeAsync(TopicRequest(LongTopic, "first"), static (_, _) => new(Settlement.Ack));

                // The first publish computes the route and caches it under this very string instance.
                await transport.PublishAsync(LongTopic, Message("warm"));

                var second = new ConcurrentQueue<string>();
                var sentinel = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                var spin = round % 40 * 100;
                var racing = Copy(LongTopic);
                Race(
                    () => CompletedAtOnce(transport.PublishAsync(racing, Message("racing"))).Should().BeTrue(),
                    () =>
                    {
                        Thread.SpinWait(spin);

                        // A short wildcard pattern binds at once, while the publish is still hashing the long topic.
                        CompletedAtOnce(transport.SubscribeAsync(TopicRequest("race.#", "second"), (e, _) =>
                        {
                            second.Enqueue((string)e.Body!);
                            if ((string)e.Body! == "sentinel")
                            {
                                sentinel.TrySetResult();
                            }

                            return new(Settlement.Ack);
                        })).Should().BeTrue();
                    });

                // The bind has returned: a publish through the cached instance must reach the new group, and a
                // sentinel published after it (through a fresh lookup) arrives after it on the group's one lane.
                await transport.PublishAsync(LongTopic, Message("marker"));
                await transport.PublishAsync(Copy(LongTopic), Message("sentinel"));
                await sentinel.Task.WaitAsync(TestHost.Wait);

                second.Should().Contain("marker", $"group 'second' was bound before 'marker' was published (round {round})");
            }
        }
    }

    [Fact]
    public async Task Publish_GroupUnboundWhileAPublishLooksUpTheRoute_LaterPublishesAreUnrouted()
    {
        for (var round = 0; round < RaceRounds; round++)
        {
            var transport = InMemoryTransport.Create();
            await using (transport.ConfigureAwait(false))
            {
                var leaving = await transport.SubscribeAsync(
                    TopicRequest(LongTopic, "leaving") with { Capacity = 4, FullMode = QueueFullMode.Reject },
                    static (_, _) => new(Settlement.Ack));
                await transport.PublishAsync(LongTopic, Message("warm"));

                var spin = round % 40 * 100;
                var racing = Copy(LongTopic);
                Task? stopping = null;
                Race(
                    () => CompletedAtOnce(transport.PublishAsync(racing, Message("racing"))).Should().BeTrue(),
                    () =>
                    {
                        Thread.SpinWait(spin);
                        stopping = leaving.StopAsync(CancellationToken.None);
                    });
                await stopping!.WaitAsync(TestHost.Wait);

                // The only group has stopped and is unbound, so nothing may keep filling its buffer.
                var routed = await transport.PublishAsync(LongTopic, Message("after-stop"));
                routed.Should().BeFalse($"the only group on the topic stopped before this publish (round {round})");
            }
        }
    }

    [Fact]
    public async Task Retry_RedeliveryFindsTheLaneFullInRejectMode_MessageIsDeadLettered()
    {
        var transport = InMemoryTransport.Create();
        await using (transport.ConfigureAwait(false))
        {
            var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var secondHandled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var deliveries = new ConcurrentQueue<(string Body, int DeliveryCount)>();
            await transport.SubscribeAsync(
                new SubscriptionRequest { Address = TransportAddress.Queue("full"), ConsumerGroup = "full", Capacity = 1, FullMode = QueueFullMode.Reject },
                (e, _) =>
                {
                    var body = (string)e.Body!;
                    deliveries.Enqueue((body, e.DeliveryCount));
                    if (body == "a" && e.DeliveryCount == 0)
                    {
                        started.TrySetResult();
                        return new(release.Task.ContinueWith(_ => Settlement.Retry(TimeSpan.Zero), TaskScheduler.Default));
                    }

                    if (body == "b")
                    {
                        secondHandled.TrySetResult();
                    }

                    return new(Settlement.Ack);
                });

            await transport.SendAsync("full", Message("a"));
            await started.Task.WaitAsync(TestHost.Wait);
            await transport.SendAsync("full", Message("b"));

            // "a" asks for a redelivery while "b" fills the lane's one slot.
            release.SetResult();
            await secondHandled.Task.WaitAsync(TestHost.Wait);

            var letters = await transport.PeekDeadLettersAsync("full", 10);
            var redelivered = deliveries.Any(d => d is ("a", 1));
            (redelivered || letters.Any(l => (string)l.Envelope.Body! == "a"))
                .Should().BeTrue("a redelivery that finds a Reject-mode lane full must be dead-lettered, not lost");
        }
    }

    [Fact]
    public async Task Send_QueueSplitAmongFourWorkers_BuffersNoMoreThanItsCapacityPlusOneMessagePerWorker()
    {
        // The first worker used to adopt the lane the queue was created with at the whole queue's bound, so the queue
        // buffered its capacity once more (and one worker held most of it behind its single handler).
        var transport = InMemoryTransport.Create();
        await using (transport.ConfigureAwait(false))
        {
            var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            await transport.SubscribeAsync(
                new SubscriptionRequest { Address = TransportAddress.Queue("split"), ConsumerGroup = "split", Concurrency = 4, Capacity = 8, FullMode = QueueFullMode.Reject },
                (_, _) => new(release.Task.ContinueWith(_ => Settlement.Ack, TaskScheduler.Default)));

            var accepted = 0;
            try
            {
                for (; accepted < 100; accepted++)
                {
                    await transport.SendAsync("split", Message(accepted.ToString(System.Globalization.CultureInfo.InvariantCulture)));
                }
            }
            catch (QueueFullException)
            {
            }

            release.SetResult();
            accepted.Should().BeInRange(8, 12, "4 lanes of 8 / 4 = 2 buffered each, plus the one message each worker's handler holds");
        }
    }

    [Fact]
    public async Task Close_DelayedRedeliveryPending_IsLoggedAsLost()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var logs = new LogCapture();
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(logs));
        var transport = InMemoryTransport.Create(timeProvider: time, loggerFactory: loggerFactory);
        await transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue("later"), ConsumerGroup = "later" },
            static (_, _) => new(Settlement.Retry(TimeSpan.FromMinutes(1))));

        await transport.SendAsync("later", Message("a"));
        await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);
        await transport.DisposeAsync();

        logs.WaitForAsync(1105).IsCompleted.Should().BeTrue("a delayed redelivery still pending when the transport closes is lost, and that must be logged");
    }

    [Fact]
    public async Task SettlesLater_WorkersReachTheLimitTogether_NeverMoreThanConcurrencyUnsettled()
    {
        // Two workers; the handler settles later. The first two messages (one per lane, sent in turn) take both places;
        // each of the next two goes to one lane. A worker used to hand out a message before it looked at the count, so
        // the one that had parked on its lane handed out a third.
        var transport = InMemoryTransport.Create();
        await using (transport.ConfigureAwait(false))
        {
            var outstanding = 0;
            var most = 0;
            var calls = System.Threading.Channels.Channel.CreateUnbounded<TaskCompletionSource<Settlement>>();
            var subscription = await transport.SubscribeAsync(
                new SubscriptionRequest { Address = TransportAddress.Queue("limited"), ConsumerGroup = "limited", Concurrency = 2, SettlesLater = true },
                (_, _) =>
                {
                    var now = Interlocked.Increment(ref outstanding);
                    InterlockedMax(ref most, now);
                    var settlement = new TaskCompletionSource<Settlement>(TaskCreationOptions.RunContinuationsAsynchronously);
                    calls.Writer.TryWrite(settlement);
                    return new ValueTask<Settlement>(settlement.Task);
                });

            await transport.SendAsync("limited", Message("m0"));
            await transport.SendAsync("limited", Message("m1"));
            var held = new List<TaskCompletionSource<Settlement>>
            {
                await calls.Reader.ReadAsync().AsTask().WaitAsync(TestHost.Wait),
                await calls.Reader.ReadAsync().AsTask().WaitAsync(TestHost.Wait),
            };

            await transport.SendAsync("limited", Message("m2"));
            await transport.SendAsync("limited", Message("m3"));
            for (var settled = 0; settled < 4; settled++)
            {
                if (held.Count == settled)
                {
                    held.Add(await calls.Reader.ReadAsync().AsTask().WaitAsync(TestHost.Wait));
                }

                Interlocked.Decrement(ref outstanding);
                held[settled].SetResult(Settlement.Ack);
                if (settled < 2)
                {
                    held.Add(await calls.Reader.ReadAsync().AsTask().WaitAsync(TestHost.Wait));
                }
            }

            await subscription.StopAsync(CancellationToken.None).WaitAsync(TestHost.Wait);
            Volatile.Read(ref most).Should().BeLessThanOrEqualTo(2, "a handler that settles later holds at most Concurrency deliveries");
        }
    }

    private static void InterlockedMax(ref int target, int value)
    {
        var current = Volatile.Read(ref target);
        while (value > current)
        {
            var seen = Interlocked.CompareExchange(ref target, value, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }

    [Fact]
    public async Task Stop_HandlerThatSettlesLaterIgnoresItsToken_EveryDeliveryItHeldIsReportedAbandoned()
    {
        // A handler that settles later (a batch consumer) holds several deliveries of one worker at once: at the deadline
        // each of them is abandoned, not only the one the worker handed out last.
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var abandoned = new AbandonedLog();
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(abandoned));
        var transport = InMemoryTransport.Create(timeProvider: time, loggerFactory: loggerFactory);
        await using (transport.ConfigureAwait(false))
        {
            var never = new TaskCompletionSource<Settlement>(TaskCreationOptions.RunContinuationsAsynchronously);
            var taken = 0;
            var allTaken = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var subscription = await transport.SubscribeAsync(
                new SubscriptionRequest { Address = TransportAddress.Queue("held"), ConsumerGroup = "held", Concurrency = 4, SettlesLater = true },
                (_, _) =>
                {
                    if (Interlocked.Increment(ref taken) == 3)
                    {
                        allTaken.TrySetResult();
                    }

                    return new ValueTask<Settlement>(never.Task);
                });

            for (var i = 0; i < 3; i++)
            {
                await transport.SendAsync("held", Message($"m{i}") with { PartitionKey = "k" });
            }

            await allTaken.Task.WaitAsync(TestHost.Wait);
            using var deadline = new CancellationTokenSource();
            await deadline.CancelAsync();
            var stopping = subscription.StopAsync(deadline.Token);
            await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
            fake.Advance(InMemorySubscription.AbandonGrace);
            try
            {
                await stopping.WaitAsync(TestHost.Wait);
            }
            finally
            {
                never.TrySetResult(Settlement.Ack);
            }

            abandoned.Count.Should().Be(3, "each of the three deliveries the handler still held was abandoned");
        }
    }

    internal static SubscriptionRequest TopicRequest(string topic, string group) =>
        new() { Address = TransportAddress.Topic(topic), ConsumerGroup = group };

    internal static Envelope Message(string body) => new() { MessageId = Guid.NewGuid(), MessageType = "test", Body = body };

    private static string Copy(string value) => new(value.AsSpan());

    /// <summary>The in-memory transport completes these calls synchronously; the racing threads rely on that.</summary>
    private static bool CompletedAtOnce<T>(ValueTask<T> pending) => pending.IsCompletedSuccessfully;

    /// <summary>Runs two actions on two dedicated threads, released together once both are spinning.</summary>
    private static void Race(Action one, Action other)
    {
        var start = new StartLine();
        var threads = new[] { new Thread(() => start.Run(one)), new Thread(() => start.Run(other)) };
        foreach (var thread in threads)
        {
            thread.Start();
        }

        start.Release();
        foreach (var thread in threads)
        {
            thread.Join(TestHost.Wait).Should().BeTrue("each racing action finishes");
        }

        start.Failure?.Throw();
    }

    private sealed class StartLine
    {
        private int _ready;
        private volatile bool _go;

        public System.Runtime.ExceptionServices.ExceptionDispatchInfo? Failure { get; private set; }

        public void Run(Action action)
        {
            Interlocked.Increment(ref _ready);
            while (!_go)
            {
                Thread.SpinWait(1);
            }

            try
            {
                action();
            }
            catch (Exception ex)
            {
                Failure = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(ex);
            }
        }

        public void Release()
        {
            while (Volatile.Read(ref _ready) < 2)
            {
                Thread.Yield();
            }

            _go = true;
        }
    }

    /// <summary>Counts the handlers reported abandoned (event 1106).</summary>
    private sealed class AbandonedLog : ILoggerProvider
    {
        private int _count;

        public int Count => Volatile.Read(ref _count);

        public ILogger CreateLogger(string categoryName) => new Logger(this);

        public void Dispose()
        {
        }

        private sealed class Logger(AbandonedLog owner) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (eventId.Id == 1106)
                {
                    Interlocked.Increment(ref owner._count);
                }
            }
        }
    }
}
