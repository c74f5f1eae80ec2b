using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.Core.Tests.Transport;

/// <summary>The settlement values every transport carries out, and the envelopes they redeliver.</summary>
public sealed class SettlementTests
{
    [Fact]
    public void Ack_IsTheDefaultSettlement() =>
        Settlement.Ack.Kind.Should().Be(SettlementKind.Ack);

    [Fact]
    public void Retry_CarriesItsDelayAndTheExceptionsMessageAsReason()
    {
        var failure = new TimeoutException("later");

        var retry = Settlement.Retry(TimeSpan.FromSeconds(3), failure);

        retry.Kind.Should().Be(SettlementKind.Retry);
        retry.Delay.Should().Be(TimeSpan.FromSeconds(3));
        retry.Reason.Should().Be("later");
        retry.Exception.Should().BeSameAs(failure);
        retry.IsDeferral.Should().BeFalse();
    }

    [Fact]
    public void Retry_NegativeDelay_IsRefused()
    {
        var act = () => Settlement.Retry(TimeSpan.FromTicks(-1));

        act.Should().Throw<ArgumentOutOfRangeException>();
        Settlement.Retry(TimeSpan.Zero).Delay.Should().Be(TimeSpan.Zero);
    }

    [Fact]
    public void Defer_NoDelay_IsRefused()
    {
        var act = () => Settlement.Defer(TimeSpan.Zero, "not yet");

        act.Should().Throw<ArgumentOutOfRangeException>();
    }

    [Fact]
    public void NextDelivery_Retry_CountsOneMoreDelivery() =>
        Settlement.Retry(TimeSpan.Zero).NextDelivery(Message() with { DeliveryCount = 2 }).DeliveryCount.Should().Be(3);

    [Fact]
    public void NextDelivery_Defer_KeepsTheCountAndAddsNoReleaseMark()
    {
        var next = Settlement.Defer(TimeSpan.FromSeconds(1), "scheduled").NextDelivery(Message() with { DeliveryCount = 2 });

        next.DeliveryCount.Should().Be(2);
        next.TryGetHeader(EnvelopeHeaders.Released, out _).Should().BeFalse();
    }

    [Fact]
    public void NextDelivery_Release_KeepsTheCountAndMarksTheMessageOnce()
    {
        var release = Settlement.Release("stopping");

        var once = release.NextDelivery(Message() with { DeliveryCount = 2 });
        var twice = release.NextDelivery(once.WithHeader(EnvelopeHeaders.Released, "earlier"));

        once.DeliveryCount.Should().Be(2);
        once.TryGetHeader(EnvelopeHeaders.Released, out var mark).Should().BeTrue();
        mark.Should().Be("1");
        twice.TryGetHeader(EnvelopeHeaders.Released, out var kept).Should().BeTrue();
        kept.Should().Be("earlier", "a message released before is passed on as it is");
    }

    [Fact]
    public void DeadLetter_CarriesItsReasonAndException()
    {
        var failure = new FormatException("bad");

        var dead = Settlement.DeadLetter("refused", failure);

        dead.Kind.Should().Be(SettlementKind.DeadLetter);
        dead.Reason.Should().Be("refused");
        dead.Exception.Should().BeSameAs(failure);
        dead.Delay.Should().Be(TimeSpan.Zero);
        dead.IsDeferral.Should().BeFalse();
    }

    [Fact]
    public void HandlerThrew_DeadLettersNamingTheExceptionTypeAndMessage()
    {
        var failure = new InvalidOperationException("boom");

        var dead = Settlement.HandlerThrew(failure);

        dead.Kind.Should().Be(SettlementKind.DeadLetter);
        dead.Reason.Should().Be("The delivery handler threw InvalidOperationException: boom");
        dead.Exception.Should().BeSameAs(failure);
    }

    private static Envelope Message() => new() { MessageId = Guid.NewGuid(), Body = "m" };
}
