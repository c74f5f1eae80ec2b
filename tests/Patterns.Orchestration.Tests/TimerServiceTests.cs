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

    [Fact]
    public void ManyTimersDueAtOnce_GoAtMostTheBoundAtATime_EarliestFirst_EachOnce()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var handled = new List<(string Id, TaskCompletionSource Done)>();
        using var timers = new TimerService(time, t =>
        {
            var done = new TaskCompletionSource(); // continuations run inline: the next timer goes within SetResult
            handled.Add((t.InstanceId, done));
            return done.Task;
        }, maxInFlight: 2);
        var start = time.GetUtcNow();
        for (var i = 0; i < 5; i++)
        {
            timers.Schedule(new TimerRecord { InstanceId = $"t{i}", Run = 1, Seq = 1, DueTicks = (start + TimeSpan.FromMilliseconds(10 + i)).UtcTicks });
        }

        time.Advance(TimeSpan.FromSeconds(1));

        handled.Select(h => h.Id).Should().Equal("t0", "t1");
        timers.InFlight.Should().Be(2);
        timers.Count.Should().Be(3, "the others wait in the queue, not in flight");

        handled[1].Done.SetResult();
        handled.Select(h => h.Id).Should().Equal("t0", "t1", "t2");
        handled[0].Done.SetException(new InvalidOperationException("a failed workflow task frees its place too"));
        handled.Select(h => h.Id).Should().Equal("t0", "t1", "t2", "t3");
        handled[2].Done.SetResult();
        handled[3].Done.SetResult();
        handled.Select(h => h.Id).Should().Equal("t0", "t1", "t2", "t3", "t4");
        handled[4].Done.SetResult();

        timers.InFlight.Should().Be(0);
        timers.Count.Should().Be(0);
        time.Advance(TimeSpan.FromMinutes(1));
        handled.Should().HaveCount(5, "each timer went once");
    }

    [Fact]
    public void ATimerScheduledWhileTheBoundIsReached_GoesWhenAPlaceFrees()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var handled = new List<(string Id, TaskCompletionSource Done)>();
        using var timers = new TimerService(time, t =>
        {
            var done = new TaskCompletionSource();
            handled.Add((t.InstanceId, done));
            return done.Task;
        }, maxInFlight: 1);
        var start = time.GetUtcNow();
        timers.Schedule(new TimerRecord { InstanceId = "first", Run = 1, Seq = 1, DueTicks = (start + TimeSpan.FromSeconds(1)).UtcTicks });
        time.Advance(TimeSpan.FromSeconds(1));
        timers.Schedule(new TimerRecord { InstanceId = "overdue", Run = 1, Seq = 1, DueTicks = start.UtcTicks });
        time.Advance(TimeSpan.FromSeconds(1));
        handled.Select(h => h.Id).Should().Equal("first");

        handled[0].Done.SetResult();

        handled.Select(h => h.Id).Should().Equal("first", "overdue");
    }

    [Fact]
    public void TimersHandledAtOnce_WhileTheBoundIsReached_GoInALoop_NotOneNestedCallEach()
    {
        // A timer of an instance this process does not own is handed on at once (no task to wait for): with the bound
        // reached, each such timer used to free its place by firing the next from inside its own call, so a backlog of
        // them nested one call deeper each, as deep as the backlog (a stack overflow for a large one).
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var depths = new List<int>();
        using var timers = new TimerService(time, _ =>
        {
            depths.Add(new System.Diagnostics.StackTrace().FrameCount);
            return null;
        }, maxInFlight: 2);
        var start = time.GetUtcNow();
        for (var i = 0; i < 300; i++)
        {
            timers.Schedule(new TimerRecord { InstanceId = $"t{i}", Run = 1, Seq = 1, DueTicks = (start + TimeSpan.FromMilliseconds(1 + i)).UtcTicks });
        }

        time.Advance(TimeSpan.FromSeconds(1));

        depths.Should().HaveCount(300, "every due timer went");
        (depths.Max() - depths.Min()).Should().BeLessThan(20, "the stack does not grow with the backlog");
        timers.InFlight.Should().Be(0);
        timers.Count.Should().Be(0);
    }
}
