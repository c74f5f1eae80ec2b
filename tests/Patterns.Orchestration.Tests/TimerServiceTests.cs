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
}
