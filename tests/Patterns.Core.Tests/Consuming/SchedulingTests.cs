using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;
using Patterns.Testing;

namespace Patterns.Core.Tests.Consuming;

public sealed record Reminder(int Id);

/// <summary>Scheduled and delayed sends, time to live and request deadlines, on virtual time, through the hosted consumers.</summary>
public sealed class SchedulingTests
{
    [Fact]
    public async Task Send_WithDelay_HandledOnlyWhenVirtualTimeReachesItAndNotCountedAsADelivery()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var handled = new ConcurrentQueue<(int Id, int DeliveryCount, DateTimeOffset At)>();
        var arrived = new SemaphoreSlim(0);
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddConsumer<Reminder>("reminders", (r, context, _) =>
        {
            handled.Enqueue((r.Id, context.DeliveryCount, time.GetUtcNow()));
            arrived.Release();
            return default;
        })), time);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        var due = time.GetUtcNow() + TimeSpan.FromMinutes(10);

        await sender.SendAsync("reminders", new Reminder(1), new MessageOptions { Delay = TimeSpan.FromMinutes(10) });
        await sender.SendAsync("reminders", new Reminder(2));
        (await arrived.WaitAsync(TestHost.Wait)).Should().BeTrue();
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromMinutes(10) - TimeSpan.FromSeconds(1));

        handled.Select(h => h.Id).Should().Equal(2);
        time.PendingTimers.Should().Be(1, "the delayed message waits on virtual time");
        fake.Advance(TimeSpan.FromSeconds(1));
        (await arrived.WaitAsync(TestHost.Wait)).Should().BeTrue();

        handled.Select(h => h.Id).Should().Equal(2, 1);
        var delayed = handled.Last();
        delayed.DeliveryCount.Should().Be(0);
        delayed.At.Should().BeOnOrAfter(due);
    }

    [Fact]
    public async Task Publish_WithDeliverAt_EachSubscriptionHandlesItAtThatTime()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var handled = new ConcurrentQueue<string>();
        var arrived = new SemaphoreSlim(0);
        using var host = await TestHost.StartAsync(b => b.AddPubSub(ps => ps
            .Subscribe<Reminder>((r, _, _) => { handled.Enqueue("a"); arrived.Release(); return default; }, "reminders", o => o.ConsumerGroup = "a")
            .Subscribe<Reminder>((r, _, _) => { handled.Enqueue("b"); arrived.Release(); return default; }, "reminders", o => o.ConsumerGroup = "b")), time);
        var at = time.GetUtcNow().AddHours(1);

        await host.Services.GetRequiredService<IPublisher>().PublishAsync("reminders", new Reminder(1), new MessageOptions { DeliverAt = at });
        await time.WaitForPendingTimersAsync(2).WaitAsync(TestHost.Wait);
        handled.Should().BeEmpty();
        fake.SetUtcNow(at);
        (await arrived.WaitAsync(TestHost.Wait)).Should().BeTrue();
        (await arrived.WaitAsync(TestHost.Wait)).Should().BeTrue();

        handled.Should().BeEquivalentTo(["a", "b"]);
    }

    [Fact]
    public async Task Send_TimeToLiveEndsWhileQueued_DeadLetteredAsExpiredAndNeverHandled()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handled = new ConcurrentQueue<int>();
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddConsumer<Reminder>("ttl", async (r, _, _) =>
        {
            started.TrySetResult();
            await gate.Task;
            handled.Enqueue(r.Id);
        }, o => o.Retry = null)), time);
        var sender = host.Services.GetRequiredService<IQueueSender>();

        await sender.SendAsync("ttl", new Reminder(1));
        await started.Task.WaitAsync(TestHost.Wait);
        await sender.SendAsync("ttl", new Reminder(2), new MessageOptions { TimeToLive = TimeSpan.FromMinutes(1) });
        await sender.SendAsync("ttl", new Reminder(3), new MessageOptions { TimeToLive = TimeSpan.FromMinutes(5) });
        fake.Advance(TimeSpan.FromMinutes(2));
        gate.SetResult();

        var dead = await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "ttl", 1);
        await host.Harness().WaitForDeliveriesAsync(3).WaitAsync(TestHost.Wait);
        handled.Should().Equal(1, 3);
        dead.Single().Reason.Should().Be("expired");
        dead.Single().Envelope.TryGetHeader(EnvelopeHeaders.ExpiresAt, out _).Should().BeTrue();
    }

    [Fact]
    public async Task Send_HandlerStillRunningAtTheDeadline_TokenCancelledAndDeadLetteredAsExpired()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddConsumer<Reminder>("deadline", async (_, _, ct) =>
        {
            started.TrySetResult();
            try
            {
                await Task.Delay(Timeout.InfiniteTimeSpan, ct);
            }
            catch (OperationCanceledException)
            {
                cancelled.TrySetResult();
                throw;
            }
        })), time);

        await host.Services.GetRequiredService<IQueueSender>().SendAsync("deadline", new Reminder(1), new MessageOptions { TimeToLive = TimeSpan.FromSeconds(30) });
        await started.Task.WaitAsync(TestHost.Wait);
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromSeconds(30));

        await cancelled.Task.WaitAsync(TestHost.Wait);
        var dead = await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "deadline", 1);
        dead.Single().Reason.Should().Be("expired");
    }

    [Theory]
    [InlineData("delay")]
    [InlineData("both")]
    [InlineData("ttl")]
    public async Task Send_InvalidTiming_ThrowsNamingTheOption(string which)
    {
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddQueue("invalid")));
        var options = which switch
        {
            "delay" => new MessageOptions { Delay = TimeSpan.FromSeconds(-1) },
            "both" => new MessageOptions { Delay = TimeSpan.FromSeconds(1), DeliverAt = DateTimeOffset.UtcNow },
            _ => new MessageOptions { TimeToLive = TimeSpan.Zero },
        };

        var send = async () => await host.Services.GetRequiredService<IQueueSender>().SendAsync("invalid", new Reminder(1), options);

        var thrown = await send.Should().ThrowAsync<ArgumentException>();
        thrown.Which.Message.Should().Contain(which switch { "delay" => "Delay", "both" => "DeliverAt and Delay", _ => "TimeToLive" });
    }

    [Fact]
    public async Task Request_OverTheTransport_DeadlineTravelsAndCancelsTheHandlerWhenItPasses()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handlerCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r
            .AddHandler<Reminder, Reminder>(async (request, ct) =>
            {
                started.TrySetResult();
                try
                {
                    await Task.Delay(Timeout.InfiniteTimeSpan, ct);
                }
                catch (OperationCanceledException)
                {
                    handlerCancelled.TrySetResult();
                    throw;
                }

                return request;
            })
            .Configure(o => o.PreferInProcessDispatch = false)), time);
        var sentAt = time.GetUtcNow();

        var pending = host.Services.GetRequiredService<IRequestClient>().SendAsync<Reminder, Reminder>(new Reminder(1), TimeSpan.FromSeconds(5)).AsTask();
        await started.Task.WaitAsync(TestHost.Wait);
        var request = host.Harness().Sent.Single(m => m.Envelope.MessageType is not null && m.Envelope.ReplyTo is not null).Envelope;
        request.TryGetHeader(EnvelopeHeaders.ExpiresAt, out var expiresAt).Should().BeTrue();
        DateTimeOffset.Parse(expiresAt!, System.Globalization.CultureInfo.InvariantCulture).Should().Be(sentAt + TimeSpan.FromSeconds(5));
        fake.Advance(TimeSpan.FromSeconds(5));

        await handlerCancelled.Task.WaitAsync(TestHost.Wait);
        await pending.Invoking(p => p).Should().ThrowAsync<RequestTimeoutException>();
    }
}
