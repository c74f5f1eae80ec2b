using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.Telemetry;
using Patterns.Testing;
using Patterns.Transport;
using static Patterns.Core.Tests.InMemory.InMemoryTransportDefectTests;

namespace Patterns.Core.Tests.InMemory;

/// <summary>
/// How an in-memory queue's bound is shared by the workers of the subscriptions that consume it, and what a subscription's
/// stop reports about the messages it could not hand over, asserted on the transport directly.
/// </summary>
public sealed class InMemoryQueueSharingAndStopTests
{
    [Fact]
    public async Task Attach_TheQueuesBoundIsSharedByEveryWorkerOfEverySubscription()
    {
        const string queue = "shared.bound";
        await using var transport = InMemoryTransport.Create();
        var first = new BlockingHandler();
        var second = new BlockingHandler();
        var request = RejectingQueue(queue, capacity: 12);
        await using var a = await transport.SubscribeAsync(request with { Concurrency = 3 }, first.Handle);
        await using var b = await transport.SubscribeAsync(request, second.Handle);
        try
        {
            // One message per worker (the lanes are empty, so each goes to the lane whose turn it is): all four block.
            for (var i = 0; i < 4; i++)
            {
                await transport.SendAsync(queue, Message("held-" + i));
            }

            await first.WaitForStartedAsync(3);
            await second.WaitForStartedAsync(1);

            // Twelve shared by four workers: three more each, whatever each worker held before the second one came.
            (await FillAsync(transport, queue)).Should().Be(12, "the queue's bound is split among the four workers, not raised by each new one");
        }
        finally
        {
            first.Release();
            second.Release();
        }
    }

    [Fact]
    public async Task Detach_TheWorkersThatStayTakeTheWholeBoundAgain_AndGetEveryMessage()
    {
        const string queue = "shared.detach";
        await using var transport = InMemoryTransport.Create();
        var staying = new BlockingHandler();
        var request = RejectingQueue(queue, capacity: 10);
        await using var leaving = await transport.SubscribeAsync(request, static (_, _) => new(Settlement.Ack));
        await using var stays = await transport.SubscribeAsync(request with { Concurrency = 2 }, staying.Handle);
        try
        {
            await leaving.StopAsync(CancellationToken.None);

            // One message per worker left: both block.
            await transport.SendAsync(queue, Message("held-0"));
            await transport.SendAsync(queue, Message("held-1"));
            await staying.WaitForStartedAsync(2);

            // Ten shared by three workers was four each; shared by the two left, it is five each again.
            (await FillAsync(transport, queue)).Should().Be(10, "the workers left share the whole queue's bound again");
        }
        finally
        {
            staying.Release();
        }
    }

    [Fact]
    public async Task Attach_MessagesSentBeforeAnyConsumer_GoToTheFirstConsumerInOrder()
    {
        const string queue = "shared.early";
        await using var transport = InMemoryTransport.Create();
        await transport.DeclareQueueAsync(queue, new QueueSettings());
        for (var i = 0; i < 3; i++)
        {
            await transport.SendAsync(queue, Message("early-" + i));
        }

        var seen = new ConcurrentQueue<string>();
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var subscription = await transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue },
            (envelope, _) =>
            {
                seen.Enqueue((string)envelope.Body!);
                if (seen.Count == 3)
                {
                    all.TrySetResult();
                }

                return new(Settlement.Ack);
            });

        await all.Task.WaitAsync(TestHost.Wait);
        seen.Should().Equal("early-0", "early-1", "early-2");
    }

    [Fact]
    public async Task Stop_PastTheDeadline_WhatHandlersThatHonourTheirTokenLeaveIsCountedAsDroppedOnce()
    {
        const string queue = "stopping.honoured";
        using var dropped = new DroppedCounter(queue);
        var logs = new CapturedLogs();
        using var loggerFactory = LoggerFactory.Create(l => l.AddProvider(logs));

        // On virtual time that never moves, the grace after the deadline cannot run out: the handler returns within it.
        await using var transport = InMemoryTransport.Create(timeProvider: new FakeTimeProvider(), loggerFactory: loggerFactory);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var subscription = await transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue },
            async (_, token) =>
            {
                started.TrySetResult();
                await Task.Delay(Timeout.Infinite, token).ConfigureAwait(false);
                return Settlement.Ack;
            });
        for (var i = 0; i < 3; i++)
        {
            await transport.SendAsync(queue, Message("m-" + i));
        }

        await started.Task.WaitAsync(TestHost.Wait);

        await subscription.StopAsync(new CancellationToken(canceled: true)).WaitAsync(TestHost.Wait);
        await subscription.StopAsync(new CancellationToken(canceled: true)).WaitAsync(TestHost.Wait);

        dropped.Total.Should().Be(3, "the cancelled handler's message and the two behind it are dropped, and a second stop counts them no more");
        logs.Entries.Where(e => e.EventId.Id == 1102).Select(e => e.Message).Should().ContainSingle()
            .Which.Should().StartWith("3 message(s)");
        logs.Entries.Should().NotContain(e => e.EventId.Id == 1106, "no handler was abandoned");
    }

    [Fact]
    public async Task Stop_AHandlerIgnoresItsToken_ItsMessageIsReportedAbandoned_AndThoseBehindItDropped()
    {
        var (dropped, logs) = await AbandonAsync("stopping.ignored.three", messages: 3);

        dropped.Should().Be(3, "the abandoned message counts as dropped, as do the two behind it");
        logs.Where(e => e.EventId.Id == 1106).Should().ContainSingle();
        logs.Where(e => e.EventId.Id == 1102).Select(e => e.Message).Should().ContainSingle()
            .Which.Should().StartWith("2 message(s)", "the message the handler holds is reported on its own, not among those waiting");
    }

    [Fact]
    public async Task Stop_AHandlerIgnoresItsToken_WithNothingBehindIt_OnlyItsMessageIsReported()
    {
        var (dropped, logs) = await AbandonAsync("stopping.ignored.one", messages: 1);

        dropped.Should().Be(1, "the abandoned message counts as dropped");
        logs.Where(e => e.EventId.Id == 1106).Should().ContainSingle();
        logs.Should().NotContain(e => e.EventId.Id == 1102, "no message waited behind the abandoned one");
    }

    /// <summary>
    /// Stops a one-worker subscription past its deadline while its handler ignores its token, with <paramref name="messages"/>
    /// sent to it; returns what was counted as dropped for the queue and what was logged.
    /// </summary>
    private static async Task<(long Dropped, IReadOnlyCollection<(LogLevel Level, EventId EventId, string Message)> Logs)> AbandonAsync(string queue, int messages)
    {
        using var dropped = new DroppedCounter(queue);
        var logs = new CapturedLogs();
        using var loggerFactory = LoggerFactory.Create(l => l.AddProvider(logs));
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        await using var transport = InMemoryTransport.Create(timeProvider: time, loggerFactory: loggerFactory);
        var stubborn = new BlockingHandler();
        var subscription = await transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue },
            stubborn.Handle);
        try
        {
            for (var i = 0; i < messages; i++)
            {
                await transport.SendAsync(queue, Message("m-" + i));
            }

            await stubborn.WaitForStartedAsync(1);

            var stopping = subscription.StopAsync(new CancellationToken(canceled: true));
            await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
            fake.Advance(InMemorySubscription.AbandonGrace);
            await stopping.WaitAsync(TestHost.Wait);
        }
        finally
        {
            stubborn.Release();
        }

        return (dropped.Total, logs.Entries.ToArray());
    }

    private static SubscriptionRequest RejectingQueue(string queue, int capacity) => new()
    {
        Address = TransportAddress.Queue(queue),
        ConsumerGroup = queue,
        Capacity = capacity,
        FullMode = QueueFullMode.Reject,
    };

    /// <summary>
    /// Sends until the queue refuses a message, and returns how many it took. It runs off the test's thread and is bounded,
    /// so a queue that can neither take nor refuse fails the test instead of hanging it.
    /// </summary>
    private static async Task<int> FillAsync(MessageTransport transport, string queue)
    {
        return await Task.Run(async () =>
        {
            for (var accepted = 0; accepted <= 1000; accepted++)
            {
                try
                {
                    await transport.SendAsync(queue, Message("fill-" + accepted));
                }
                catch (QueueFullException)
                {
                    return accepted;
                }
            }

            throw new InvalidOperationException($"Queue '{queue}' took more than 1000 messages without refusing one.");
        }).WaitAsync(TestHost.Wait);
    }

    /// <summary>A handler that holds every message it gets (ignoring its token) until released, and counts the calls.</summary>
    private sealed class BlockingHandler
    {
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly Lock _gate = new();
        private readonly List<(int Count, TaskCompletionSource Signal)> _waiters = [];
        private int _started;

        public async ValueTask<Settlement> Handle(Envelope envelope, CancellationToken cancellationToken)
        {
            List<TaskCompletionSource> ready = [];
            lock (_gate)
            {
                _started++;
                _waiters.RemoveAll(w =>
                {
                    if (w.Count > _started)
                    {
                        return false;
                    }

                    ready.Add(w.Signal);
                    return true;
                });
            }

            ready.ForEach(r => r.TrySetResult());
            await _release.Task.ConfigureAwait(false);
            return Settlement.Ack;
        }

        public Task WaitForStartedAsync(int count)
        {
            var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_gate)
            {
                if (_started >= count)
                {
                    return Task.CompletedTask;
                }

                _waiters.Add((count, signal));
            }

            return signal.Task.WaitAsync(TestHost.Wait);
        }

        public void Release() => _release.TrySetResult();
    }

    /// <summary>Sums the messages counted as dropped (<c>patterns.messages.dropped</c>) for one queue.</summary>
    private sealed class DroppedCounter : IDisposable
    {
        private readonly MeterListener _listener = new();
        private long _total;

        public DroppedCounter(string queue)
        {
            _listener.InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == PatternsDiagnostics.MeterName && instrument.Name == "patterns.messages.dropped")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
            {
                foreach (var tag in tags)
                {
                    if (tag.Key == "messaging.destination.name" && tag.Value is string name && name == queue)
                    {
                        Interlocked.Add(ref _total, value);
                    }
                }
            });
            _listener.Start();
        }

        public long Total => Interlocked.Read(ref _total);

        public void Dispose() => _listener.Dispose();
    }
}
