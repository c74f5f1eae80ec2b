using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.Testing;
using Patterns.Transport;

namespace Patterns.Core.Tests.Testing;

public sealed record HarnessPing(int Id);

public sealed class HarnessTests
{
    [Fact]
    public async Task UseTestHarness_BeforeTheTransportIsChosen_StillRecords()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.AddPatterns(p => p.UseTestHarness().UseTimeProvider(new FakeTimeProvider()).UseInMemory());
        builder.AddMessageQueue(q => q.AddQueue("h").AddConsumer<HarnessPing>("h", (m, c, ct) => default));
        using var host = builder.Build();
        await host.StartAsync();

        await host.Services.GetRequiredService<IQueueSender>().SendAsync("h", new HarnessPing(1));
        var harness = host.Services.GetRequiredService<PatternsTestHarness>();
        await harness.WaitForDeliveriesAsync(1);

        harness.Consumed<HarnessPing>().Should().Equal(new HarnessPing(1));
        harness.Sent.Should().ContainSingle().Which.Address.Should().Be(TransportAddress.Queue("h"));
        await host.StopAsync();
    }

    [Fact]
    public async Task UseTestHarness_CalledTwice_RecordsEachMessageOnce()
    {
        using var host = await TestHost.StartAsync(
            b => b.AddMessageQueue(q => q.AddQueue("twice").AddConsumer<HarnessPing>("twice", (m, c, ct) => default)),
            patterns: p => p.UseTestHarness());

        await host.Services.GetRequiredService<IQueueSender>().SendAsync("twice", new HarnessPing(2));
        await host.Harness().WaitForDeliveriesAsync(1);

        host.Harness().Sent.Should().HaveCount(1);
        host.Harness().Deliveries.Should().HaveCount(1);
        await host.StopAsync();
    }

    [Fact]
    public async Task WaitForDeliveries_NeverHappens_TimesOutNamingWhatItAwaited()
    {
        using var host = await TestHost.StartAsync(_ => { });
        var harness = host.Harness();
        harness.DefaultTimeout = TimeSpan.FromMilliseconds(50);

        var act = () => harness.WaitForDeliveriesAsync(3, d => d.ConsumerGroup == "nobody");

        (await act.Should().ThrowAsync<TimeoutException>()).Which.Message.Should()
            .Be("The test harness waited 00:00:00.0500000 for 3 settled deliveries matching d => d.ConsumerGroup == \"nobody\", in vain: 0 deliveries settled and 0 messages sent so far.");
    }

    [Fact]
    public async Task WaitUntil_NeverHolds_TimesOutNamingTheCondition()
    {
        using var host = await TestHost.StartAsync(_ => { });
        var harness = host.Harness();
        harness.DefaultTimeout = TimeSpan.FromMilliseconds(50);

        var act = () => harness.WaitUntilAsync(h => h.Sent.Count > 5);

        (await act.Should().ThrowAsync<TimeoutException>()).Which.Message.Should().Contain("for h => h.Sent.Count > 5, in vain");
    }

    [Fact]
    public void Consumed_BodyAsBytesFromABroker_IsReadWithTheHostsSerializer()
    {
        var serializer = new Patterns.Serialization.JsonMessageSerializer();
        var registry = new MessageTypeRegistry();
        var harness = new PatternsTestHarness(serializer, registry);
        var writer = new System.Buffers.ArrayBufferWriter<byte>();
        serializer.Serialize(writer, new HarnessPing(9), typeof(HarnessPing));
        var envelope = new Envelope { MessageId = Guid.NewGuid(), MessageType = registry.GetName(typeof(HarnessPing)), Payload = writer.WrittenMemory };

        harness.RecordDelivery("g", envelope, Settlement.Ack);
        harness.RecordDelivery("g", envelope with { MessageType = "other" }, Settlement.Ack);

        harness.Consumed<HarnessPing>().Should().Equal(new HarnessPing(9));
    }
}

public sealed class TimerTrackerTests
{
    [Fact]
    public async Task RedeliveryDelay_OnFakeTimeProvider_WaitsForTheTimerThenAdvances()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var attempts = 0;
        using var host = await TestHost.StartAsync(
            b => b.AddMessageQueue(q => q.AddQueue("later").AddConsumer<HarnessPing>("later", (m, c, ct) =>
                Interlocked.Increment(ref attempts) == 1 ? throw new InvalidOperationException("first time") : default,
                o =>
                {
                    o.MaxRedeliveries = 1;
                    o.RedeliveryDelay = TimeSpan.FromMinutes(5);
                })),
            patterns: p => p.UseTimeProvider(time));

        // Timers the host already runs count too: wait for one more than those, the redelivery's.
        var running = time.PendingTimers;
        await host.Services.GetRequiredService<IQueueSender>().SendAsync("later", new HarnessPing(1));
        await time.WaitForPendingTimersAsync(running + 1).WaitAsync(TestHost.Wait);
        Volatile.Read(ref attempts).Should().Be(1);
        fake.Advance(TimeSpan.FromMinutes(5));

        await host.Harness().WaitForDeliveriesAsync(1, d => d.Outcome == SettlementKind.Ack);
        Volatile.Read(ref attempts).Should().Be(2);
        await host.StopAsync();
    }

    [Fact]
    public async Task PendingTimers_CountsATimerOnlyOnceItIsArmed_SoMovingTheClockThenFiresIt()
    {
        // A test waits for a pending timer, then moves the clock. The timer used to be counted before the wrapped clock
        // armed it: a test that moved the clock in between armed it at the new time, due one delay later, and it never
        // fired (Consumer_MaxRedeliveries_RedeliversAfterDelayThenDeadLetters timed out so, now and then).
        var fake = new FakeTimeProvider();
        var inner = new GatedTimeProvider(fake);
        var time = new TimerTracker(inner);
        var fired = 0;
        var creating = Task.Run(() => time.CreateTimer(_ => Interlocked.Increment(ref fired), null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan));
        await inner.Entered.Task.WaitAsync(TestHost.Wait);

        time.PendingTimers.Should().Be(0, "the wrapped clock has not armed the timer yet");
        var waiting = time.WaitForPendingTimersAsync();
        waiting.IsCompleted.Should().BeFalse();

        inner.Release.SetResult();
        using var timer = await creating.WaitAsync(TestHost.Wait);
        await waiting.WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromSeconds(1));
        Volatile.Read(ref fired).Should().Be(1);
    }

    [Fact]
    public void PendingTimers_CountsScheduledTimersUntilTheyFireOrAreDisposed()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var fired = 0;

        using var once = time.CreateTimer(_ => fired++, null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        var idle = time.CreateTimer(_ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        var later = time.CreateTimer(_ => { }, null, TimeSpan.FromSeconds(9), Timeout.InfiniteTimeSpan);
        time.PendingTimers.Should().Be(2);

        fake.Advance(TimeSpan.FromSeconds(1));
        fired.Should().Be(1);
        time.PendingTimers.Should().Be(1);
        later.Dispose();
        time.PendingTimers.Should().Be(0);
        idle.Change(TimeSpan.FromSeconds(2), Timeout.InfiniteTimeSpan).Should().BeTrue();
        time.PendingTimers.Should().Be(1);
        time.GetUtcNow().Should().Be(fake.GetUtcNow());
    }
}

/// <summary>A clock whose <see cref="CreateTimer"/> stops, once, until released: the moment between a timer asked for and armed.</summary>
internal sealed class GatedTimeProvider(TimeProvider inner) : TimeProvider
{
    public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public override DateTimeOffset GetUtcNow() => inner.GetUtcNow();

    public override long GetTimestamp() => inner.GetTimestamp();

    public override long TimestampFrequency => inner.TimestampFrequency;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        if (Entered.TrySetResult())
        {
            Release.Task.Wait(TestHost.Wait);
        }

        return inner.CreateTimer(callback, state, dueTime, period);
    }
}
