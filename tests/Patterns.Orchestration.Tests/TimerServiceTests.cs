using Microsoft.Extensions.Time.Testing;
using Patterns.Orchestration.History;
using Patterns.Orchestration.Runtime;

namespace Patterns.Orchestration.Tests;

/// <summary>The in-memory timer queue: its one armed timer goes off when the earliest timer is due, never before.</summary>
public sealed class TimerServiceTests
{
    [Fact]
    public void ATimerDueInLessThanAMillisecond_GoesOffOnceWhenDue_NeverSpinningBefore()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var fired = new List<TimerRecord>();
        using var timers = new TimerService(time, fired.Add);
        var halfMillisecond = TimeSpan.FromTicks(TimeSpan.TicksPerMillisecond / 2);

        timers.Schedule(new TimerRecord { InstanceId = "a", Run = 1, Seq = 1, DueTicks = (time.GetUtcNow() + halfMillisecond).UtcTicks });
        timers.Schedule(new TimerRecord { InstanceId = "b", Run = 1, Seq = 1, DueTicks = (time.GetUtcNow() + TimeSpan.FromMilliseconds(3)).UtcTicks });

        timers.Ticks.Should().Be(0, "armed for the next whole millisecond, not at zero (which went off at once and again until due)");
        time.Advance(halfMillisecond);
        fired.Should().BeEmpty();
        time.Advance(halfMillisecond);
        fired.Select(t => t.InstanceId).Should().Equal("a");
        timers.Ticks.Should().Be(1);

        time.Advance(TimeSpan.FromMilliseconds(2));
        fired.Select(t => t.InstanceId).Should().Equal("a", "b");
        timers.Ticks.Should().Be(2);
        timers.Count.Should().Be(0);
    }

    [Fact]
    public void AnEarlierTimerScheduledWhileArmedForALaterOne_GoesOffAtItsOwnDueTime()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var fired = new List<(string Id, DateTimeOffset At)>();
        using var timers = new TimerService(time, t => fired.Add((t.InstanceId, time.GetUtcNow())));
        var start = time.GetUtcNow();

        timers.Schedule(new TimerRecord { InstanceId = "late", Run = 1, Seq = 1, DueTicks = (start + TimeSpan.FromSeconds(10)).UtcTicks });
        time.Advance(TimeSpan.FromSeconds(1));
        timers.Schedule(new TimerRecord { InstanceId = "early", Run = 1, Seq = 1, DueTicks = (start + TimeSpan.FromSeconds(2)).UtcTicks });
        timers.Schedule(new TimerRecord { InstanceId = "between", Run = 1, Seq = 1, DueTicks = (start + TimeSpan.FromSeconds(5)).UtcTicks });

        time.Advance(TimeSpan.FromSeconds(1));
        fired.Should().Equal(new[] { ("early", start + TimeSpan.FromSeconds(2)) }, "the armed timer moved to the earlier due time");
        time.Advance(TimeSpan.FromSeconds(3));
        fired.Select(f => f.Id).Should().Equal("early", "between");
        time.Advance(TimeSpan.FromSeconds(4.999));
        fired.Should().HaveCount(2);
        time.Advance(TimeSpan.FromMilliseconds(1));
        fired.Should().Equal(("early", start + TimeSpan.FromSeconds(2)), ("between", start + TimeSpan.FromSeconds(5)), ("late", start + TimeSpan.FromSeconds(10)));
        timers.Ticks.Should().Be(3, "one tick per due time, none early");
    }

    [Fact]
    public void ATimerAlreadyDueWhenScheduled_GoesOffAtOnce_AndTheOthersKeepTheirTimes()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var fired = new List<string>();
        using var timers = new TimerService(time, t => fired.Add(t.InstanceId));
        var start = time.GetUtcNow();

        timers.Schedule(new TimerRecord { InstanceId = "later", Run = 1, Seq = 1, DueTicks = (start + TimeSpan.FromSeconds(1)).UtcTicks });
        timers.Schedule(new TimerRecord { InstanceId = "overdue", Run = 1, Seq = 1, DueTicks = (start - TimeSpan.FromSeconds(1)).UtcTicks });
        time.Advance(TimeSpan.Zero);

        fired.Should().Equal("overdue");
        time.Advance(TimeSpan.FromSeconds(1));
        fired.Should().Equal("overdue", "later");
        timers.Count.Should().Be(0);
    }
}
