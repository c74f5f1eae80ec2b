using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.Storage;
using Patterns.Transport;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

using static Patterns.RabbitMq.Tests.TestEnvelopes;

namespace Patterns.RabbitMq.Tests;

/// <summary>
/// Failures inside the transport that must not lose a message or stall a consumer: full queues behind delayed
/// retries, inbox stores and settlements that throw, returns without publisher confirms, bounded consumer groups.
/// </summary>
public sealed class RabbitMqReliabilityTests : IAsyncLifetime
{
    private static readonly TimeSpan Wait = RabbitHost.Wait;

    private readonly List<MessageTransport> _transports = [];
    private readonly List<KeyValuePair<string, bool>> _extraNames = [];

    public ValueTask InitializeAsync() => default;

    public async ValueTask DisposeAsync()
    {
        foreach (var transport in _transports)
        {
            await transport.DisposeAsync();
            await Broker.DeleteTopologyAsync(transport);
        }

        if (_extraNames.Count > 0)
        {
            await Broker.DeleteAsync(_extraNames);
        }
    }

    [Fact]
    public async Task DelayedRetry_QueueFullWhenTheDelayEnds_RetryIsNotLost()
    {
        var transport = (RabbitMqMessageTransport)await CreateSutAsync(o =>
        {
            o.RetryDelays.Clear();
            o.RetryDelays.Add(TimeSpan.FromSeconds(1));
        });
        await transport.DeclareQueueAsync("full", new QueueSettings { Capacity = 1 });
        var retried = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handled = new Collector<int>();
        DeliveryHandler handler = (e, _) =>
        {
            var n = BitConverter.ToInt32(e.Payload.Span);
            if (n == 1 && e.DeliveryCount == 0)
            {
                retried.TrySetResult();
                return new(Settlement.Retry(TimeSpan.FromMilliseconds(1)));
            }

            handled.Add(n);
            return new(Settlement.Ack);
        };

        var first = await transport.SubscribeAsync(Queue("full"), handler);
        await transport.SendAsync("full", Message(1));
        await retried.Task.WaitAsync(Wait);
        // Stopping waits for the retry to be settled (published to the retry queue and the original acknowledged).
        await first.StopAsync(CancellationToken.None);

        // Fill the queue while the retry waits, and let the retry's delay end with the queue full.
        await transport.SendAsync("full", Message(2));
        await WaitUntilEmptyAsync(transport.Topology.DelayQueue("full", TimeSpan.FromSeconds(1)));

        await transport.SubscribeAsync(Queue("full"), handler);
        await handled.WaitForAsync(2);
        handled.Items.Should().BeEquivalentTo([1, 2], "a retry whose delay ends while its queue is full must still be handled");
    }

    [Fact]
    public async Task PublisherConfirmsOff_SendToMissingQueue_IsReportedNotDroppedSilently()
    {
        var logs = new CapturingLoggerFactory();
        await Broker.RequireAsync();
        var transport = RabbitMqTransport.Create(Broker.Options("noconfirm", o => o.PublisherConfirms = false), loggerFactory: logs);
        _transports.Add(transport);
        var returned = logs.WaitFor(e => e.Message.Contains("nowhere", StringComparison.Ordinal) && e.Message.Contains("returned", StringComparison.Ordinal));

        await transport.SendAsync("nowhere", Message(1));

        var entry = await returned.WaitAsync(Wait);
        entry.Level.Should().Be(LogLevel.Error);
    }

    [Fact]
    public async Task TopicSubscription_Capacity_BoundsTheGroupQueue()
    {
        var transport = await CreateSutAsync(o => o.ReconnectTimeout = TimeSpan.FromSeconds(2));
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Topic("cap.*"), ConsumerGroup = "cap", Capacity = 2 },
            async (_, ct) => { await release.Task.WaitAsync(ct); return Settlement.Ack; });

        try
        {
            var act = async () =>
            {
                // Two prefetched (one being handled), two waiting in the queue: the next one does not fit.
                for (var i = 0; i < 10; i++)
                {
                    await transport.PublishAsync("cap.x", Message(i)).AsTask().WaitAsync(Wait);
                }
            };

            (await act.Should().ThrowAsync<QueueFullException>()).Which.Message.Should().Contain("cap.x");
        }
        finally
        {
            release.TrySetResult();
        }
    }

    [Fact]
    public async Task TopicSubscription_FullModeReject_IsRefusedAtStart()
    {
        var transport = await CreateSutAsync();

        var act = async () => await transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Topic("rej.*"), ConsumerGroup = "rej", FullMode = QueueFullMode.Reject },
            (_, _) => new(Settlement.Ack));

        (await act.Should().ThrowAsync<NotSupportedException>()).Which.Message.Should().Contain("FullMode").And.Contain("rej");
    }

    [Fact]
    public async Task QueueSubscription_FullModeReject_SendToFullQueueThrows()
    {
        var transport = await CreateSutAsync();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await transport.SubscribeAsync(
            Queue("rejecting") with { Capacity = 1, FullMode = QueueFullMode.Reject },
            async (_, ct) => { started.TrySetResult(); await release.Task.WaitAsync(ct); return Settlement.Ack; });

        try
        {
            await transport.SendAsync("rejecting", Message(1));
            await started.Task.WaitAsync(Wait);
            await transport.SendAsync("rejecting", Message(2));
            using var giveUp = new CancellationTokenSource(TimeSpan.FromSeconds(20));

            var act = async () => await transport.SendAsync("rejecting", Message(3), giveUp.Token);

            await act.Should().ThrowAsync<QueueFullException>();
        }
        finally
        {
            release.TrySetResult();
        }
    }

    [Fact]
    public async Task TopicPublish_BrokerKeepsRefusing_GivesUpWithAClearException()
    {
        var transport = (RabbitMqMessageTransport)await CreateSutAsync(o => o.ReconnectTimeout = TimeSpan.FromSeconds(2));
        (await transport.PublishAsync("refused.x", Message(0))).Should().BeFalse("nothing is bound yet; this declares the topic exchange");
        var queue = transport.Options.NamePrefix + "raw.full";
        _extraNames.Add(new(queue, false));
        await using (var connection = await Broker.ConnectAsync())
        await using (var channel = await connection.CreateChannelAsync())
        {
            await channel.QueueDeclareAsync(queue, durable: false, exclusive: false, autoDelete: false, new Dictionary<string, object?>
            {
                ["x-max-length"] = 1,
                ["x-overflow"] = "reject-publish",
            });
            await channel.QueueBindAsync(queue, transport.Topology.TopicExchange, "refused.#");
        }

        (await transport.PublishAsync("refused.x", Message(1))).Should().BeTrue();
        var act = async () => await transport.PublishAsync("refused.x", Message(2)).AsTask().WaitAsync(Wait);

        (await act.Should().ThrowAsync<QueueFullException>()).Which.Message.Should().Contain("refused.x");
    }

    [Fact]
    public async Task TopicGroupDeclaredByAnEarlierVersion_IsConsumedAsItIs_AndRetriesWork()
    {
        var transport = (RabbitMqMessageTransport)await CreateSutAsync();
        (await transport.PublishAsync("legacy.x", Message(0))).Should().BeFalse("nothing is bound yet; this declares the topic exchange");
        var queue = transport.Topology.Queue("legacy");
        _extraNames.Add(new(queue, false));
        await using (var connection = await Broker.ConnectAsync())
        await using (var channel = await connection.CreateChannelAsync())
        {
            // As earlier versions declared a group: no capacity.
            await channel.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false, new Dictionary<string, object?>
            {
                ["x-dead-letter-exchange"] = transport.Topology.DeadLetterExchange("legacy"),
            });
        }

        var handled = new Collector<int>();
        await transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Topic("legacy.*"), ConsumerGroup = "legacy", Capacity = 5 },
            (e, _) =>
            {
                if (e.DeliveryCount == 0)
                {
                    return new(Settlement.Retry(TimeSpan.Zero));
                }

                handled.Add(BitConverter.ToInt32(e.Payload.Span));
                return new(Settlement.Ack);
            });

        (await transport.PublishAsync("legacy.x", Message(1))).Should().BeTrue();

        await handled.WaitForAsync(1);
        handled.Items.Should().Equal(1);
    }

    [Fact]
    public async Task ConsumerGroup_WithoutExpiry_KeepsCollectingAfterItsConsumerIsGone()
    {
        var transport = (RabbitMqMessageTransport)await CreateSutAsync();
        var subscription = await transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Topic("kept.*"), ConsumerGroup = "kept" }, (_, _) => new(Settlement.Ack));
        await subscription.StopAsync(CancellationToken.None);

        (await transport.PublishAsync("kept.x", Message(1))).Should().BeTrue("the group's queue outlives its consumer");

        await using var connection = await Broker.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync();
        (await channel.QueueDeclarePassiveAsync(transport.Topology.Queue("kept"))).MessageCount.Should().Be(1u);
    }

    [Fact]
    public async Task ConsumerGroupExpiry_GroupQueuesAreDeletedOnceItsConsumersAreGone()
    {
        var transport = (RabbitMqMessageTransport)await CreateSutAsync(o => o.ConsumerGroupExpiry = TimeSpan.FromMilliseconds(500));
        var handled = new Collector<int>();
        var subscription = await transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Topic("exp.*"), ConsumerGroup = "exp" },
            (e, _) => { handled.Add(BitConverter.ToInt32(e.Payload.Span)); return new(Settlement.Ack); });
        (await transport.PublishAsync("exp.x", Message(1))).Should().BeTrue();
        await handled.WaitForAsync(1);
        await subscription.StopAsync(CancellationToken.None);

        // Poll by publishing: a declaration, even a passive one, would count as using the queue and keep it alive.
        var deadline = Stopwatch.StartNew();
        while (await transport.PublishAsync("exp.x", Message(2)))
        {
            deadline.Elapsed.Should().BeLessThan(Wait, "the group's queue should expire");
            await Task.Delay(TimeSpan.FromMilliseconds(100));
        }

        // Its retry queue (logical name "exp.retry") expires with it.
        var sendToRetryQueue = async () =>
        {
            while (true)
            {
                deadline.Elapsed.Should().BeLessThan(Wait, "the group's retry queue should expire");
                await transport.SendAsync("exp.retry", Message(3));
                await Task.Delay(TimeSpan.FromMilliseconds(100));
            }
        };
        (await sendToRetryQueue.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain("does not exist");
    }

    /// <summary>Waits, polling the broker, until a queue holds no ready message.</summary>
    [Fact]
    public async Task ScheduledSend_ConsumerProcessStopsBeforeItIsDue_TheNextProcessHandlesItOnTimeOnce()
    {
        var prefix = Broker.Prefix("sched");
        var handled = new Collector<(int Number, int DeliveryCount, DateTimeOffset At)>();
        void Configure(HostApplicationBuilder b) => b.AddMessageQueue(q => q
            .AddQueue("sched")
            .AddConsumer<WorkItem>("sched", (m, context, _) =>
            {
                handled.Add((m.Number, context.DeliveryCount, DateTimeOffset.UtcNow));
                return default;
            }));

        var first = await RabbitHost.StartWithPrefixAsync(prefix, Configure);
        var firstTransport = first.Get<MessageTransport>();
        // Due well after the first process stops: the send, the immediate message's delivery and the stop take moments, but
        // seconds on CI's two busy cores, and a message due before the stop would be handled by the first process.
        var due = DateTimeOffset.UtcNow.AddSeconds(10);
        await first.Get<Patterns.Queues.IQueueSender>().SendAsync("sched", new WorkItem(1), new MessageOptions { DeliverAt = due });
        await first.Get<Patterns.Queues.IQueueSender>().SendAsync("sched", new WorkItem(2));
        await handled.WaitForAsync(1);

        // The first process goes away while the scheduled message waits on the broker (in the queue or a delay queue).
        await first.Host.StopAsync();
        await ((IAsyncDisposable)first.Host).DisposeAsync();
        handled.Items.Select(h => h.Number).Should().Equal(2);
        await using (var second = await RabbitHost.StartWithPrefixAsync(prefix, Configure))
        {
            await handled.WaitForAsync(2);
        }

        await Broker.DeleteTopologyAsync(firstTransport);
        var scheduled = handled.Items.Single(h => h.Number == 1);
        scheduled.At.Should().BeOnOrAfter(due);
        scheduled.DeliveryCount.Should().Be(0, "waiting for its time is not a delivery");
        handled.Items.Count(h => h.Number == 1).Should().Be(1);
    }

    private static async Task WaitUntilEmptyAsync(string queue)
    {
        await using var connection = await Broker.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync();
        var deadline = Stopwatch.StartNew();
        while ((await channel.QueueDeclarePassiveAsync(queue)).MessageCount > 0)
        {
            deadline.Elapsed.Should().BeLessThan(Wait, $"queue '{queue}' should empty");
            await Task.Delay(TimeSpan.FromMilliseconds(50));
        }
    }

    private Task<MessageTransport> CreateSutAsync(Action<RabbitMqTransportOptions>? configure = null) =>
        Broker.CreateAsync(_transports, "reliab", configure);
}

/// <summary>A log entry a test captured.</summary>
internal sealed record LogEntry(string Category, LogLevel Level, EventId EventId, string Message);

/// <summary>Captures log entries, so a test can wait for one.</summary>
internal sealed class CapturingLoggerFactory : ILoggerFactory
{
    private readonly ConcurrentQueue<LogEntry> _entries = new();
    private readonly ConcurrentDictionary<(Func<LogEntry, bool> Match, TaskCompletionSource<LogEntry> Done), bool> _waiters = new();

    public IReadOnlyCollection<LogEntry> Entries => _entries;

    public Task<LogEntry> WaitFor(Func<LogEntry, bool> match)
    {
        var done = new TaskCompletionSource<LogEntry>(TaskCreationOptions.RunContinuationsAsynchronously);
        _waiters[(match, done)] = true;
        foreach (var entry in _entries)
        {
            if (match(entry))
            {
                done.TrySetResult(entry);
            }
        }

        return done.Task;
    }

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private void Add(LogEntry entry)
    {
        _entries.Enqueue(entry);
        foreach (var (match, done) in _waiters.Keys)
        {
            if (match(entry))
            {
                done.TrySetResult(entry);
            }
        }
    }

    private sealed class Logger(CapturingLoggerFactory owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner.Add(new LogEntry(category, logLevel, eventId, formatter(state, exception)));
    }
}
