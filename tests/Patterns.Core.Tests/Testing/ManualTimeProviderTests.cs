#pragma warning disable CS0618 // the obsolete clock is still tested until it is removed
using Patterns.Testing;

namespace Patterns.Core.Tests.Testing;

public sealed class ManualTimeProviderTests
{
    [Fact]
    public void Advance_FiresDueTimersInDueOrder()
    {
        var time = new ManualTimeProvider();
        var fired = new List<string>();
        using var late = time.CreateTimer(_ => fired.Add("late"), null, TimeSpan.FromSeconds(3), Timeout.InfiniteTimeSpan);
        using var early = time.CreateTimer(_ => fired.Add("early"), null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        using var never = time.CreateTimer(_ => fired.Add("never"), null, TimeSpan.FromSeconds(10), Timeout.InfiniteTimeSpan);

        time.Advance(TimeSpan.FromSeconds(5));

        fired.Should().Equal("early", "late");
        time.PendingTimers.Should().Be(1);
    }

    [Fact]
    public void Advance_PeriodicTimer_FiresOncePerPeriod()
    {
        var time = new ManualTimeProvider();
        var count = 0;
        using var timer = time.CreateTimer(_ => count++, null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));

        time.Advance(TimeSpan.FromSeconds(3.5));

        count.Should().Be(3);
    }

    [Fact]
    public async Task TaskDelay_OnManualTime_CompletesOnlyWhenAdvanced()
    {
        var time = new ManualTimeProvider();
        var delay = Task.Delay(TimeSpan.FromMinutes(1), time);

        delay.IsCompleted.Should().BeFalse();
        time.Advance(TimeSpan.FromMinutes(1));

        await delay.WaitAsync(TimeSpan.FromSeconds(30));
        time.GetUtcNow().Should().Be(new DateTimeOffset(2000, 1, 1, 0, 1, 0, TimeSpan.Zero));
    }

    [Fact]
    public void SetUtcNow_Backwards_Throws()
    {
        var time = new ManualTimeProvider();

        var act = () => time.SetUtcNow(time.GetUtcNow().AddSeconds(-1));

        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*only moves forward*");
    }
}
