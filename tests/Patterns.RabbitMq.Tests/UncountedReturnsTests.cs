namespace Patterns.RabbitMq.Tests;

/// <summary>The memory of hand-backs that went back by a plain requeue: per queue and message, taken once, bounded.</summary>
public sealed class UncountedReturnsTests
{
    [Fact]
    public void TryTake_FindsWhatWasAdded_OnceAndOnlyForItsQueue()
    {
        var returns = new UncountedReturns();
        var id = Guid.NewGuid();
        returns.Add("q", id, deliveryCount: 2, released: true);

        returns.TryTake("other", id, out _, out _).Should().BeFalse("another group's queue holds its own copy");
        returns.TryTake("q", Guid.NewGuid(), out _, out _).Should().BeFalse();
        returns.TryTake("q", id, out var count, out var released).Should().BeTrue();
        count.Should().Be(2);
        released.Should().BeTrue();
        returns.TryTake("q", id, out _, out _).Should().BeFalse("one requeue makes one redelivered copy");
        returns.Count.Should().Be(0);
    }

    [Fact]
    public void Add_BeyondCapacity_ForgetsTheOldestFirst()
    {
        var returns = new UncountedReturns();
        var ids = Enumerable.Range(0, UncountedReturns.Capacity + 1).Select(_ => Guid.NewGuid()).ToArray();
        foreach (var id in ids)
        {
            returns.Add("q", id, 0, released: false);
        }

        returns.Count.Should().Be(UncountedReturns.Capacity);
        returns.TryTake("q", ids[0], out _, out _).Should().BeFalse("the oldest entry was forgotten");
        returns.TryTake("q", ids[1], out _, out _).Should().BeTrue();
        returns.TryTake("q", ids[^1], out _, out _).Should().BeTrue();
    }

    [Fact]
    public void Add_OfOneMessageTooOften_CountsItsCopiesAgain()
    {
        var returns = new UncountedReturns();
        var id = Guid.NewGuid();
        for (var i = 0; i < UncountedReturns.MaxReturnsPerMessage; i++)
        {
            returns.Add("q", id, deliveryCount: 1, released: false).Should().BeTrue();
            returns.TryTake("q", id, out _, out _).Should().BeTrue();
        }

        returns.Add("q", id, deliveryCount: 1, released: false).Should().BeFalse("a copy refused every time must not loop uncounted for ever");
        returns.TryTake("q", id, out _, out _).Should().BeFalse();
        returns.Count.Should().Be(0);
        returns.Add("q", Guid.NewGuid(), 0, released: false).Should().BeTrue("the limit is per message");
    }
}
