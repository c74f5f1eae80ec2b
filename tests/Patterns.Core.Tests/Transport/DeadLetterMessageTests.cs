using System.Globalization;
using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.Core.Tests.Transport;

/// <summary>The dead letter every transport records, and the envelope a replay sends back.</summary>
public sealed class DeadLetterMessageTests
{
    private static readonly DateTimeOffset At = new(2026, 12, 7, 10, 30, 0, TimeSpan.Zero);

    [Fact]
    public void Create_ThrownException_RecordsReasonSourceTimeAndTheException()
    {
        var failure = Thrown(new FormatException("bad amount"));

        var dead = DeadLetterMessage.Create(Message(), "orders", Settlement.DeadLetter("refused", failure), At);

        dead.Reason.Should().Be("refused");
        dead.Source.Should().Be("orders");
        dead.DeadLetteredAt.Should().Be(At);
        dead.ExceptionType.Should().Be(typeof(FormatException).FullName);
        dead.ExceptionMessage.Should().Be("bad amount");
        Header(dead, EnvelopeHeaders.DeadLetterReason).Should().Be("refused");
        Header(dead, EnvelopeHeaders.DeadLetterSource).Should().Be("orders");
        Header(dead, EnvelopeHeaders.DeadLetteredAt).Should().Be(At.ToString("O", CultureInfo.InvariantCulture));
        Header(dead, EnvelopeHeaders.ExceptionType).Should().Be(typeof(FormatException).FullName);
        Header(dead, EnvelopeHeaders.ExceptionMessage).Should().Be("bad amount");
        Header(dead, EnvelopeHeaders.ExceptionStackTrace).Should().Contain(nameof(Thrown));
    }

    [Fact]
    public void Create_ExceptionNeverThrown_HasNoStackTraceHeader()
    {
        var dead = DeadLetterMessage.Create(Message(), "orders", Settlement.DeadLetter("refused", new FormatException("bad")), At);

        dead.Envelope.TryGetHeader(EnvelopeHeaders.ExceptionStackTrace, out _).Should().BeFalse();
        Header(dead, EnvelopeHeaders.ExceptionMessage).Should().Be("bad");
    }

    [Fact]
    public void Create_NoException_HasNoExceptionHeaders()
    {
        var dead = DeadLetterMessage.Create(Message(), "orders", Settlement.DeadLetter("expired"), At);

        dead.ExceptionType.Should().BeNull();
        dead.ExceptionMessage.Should().BeNull();
        dead.Envelope.Headers!.Keys.Should().BeEquivalentTo(
            EnvelopeHeaders.DeadLetterReason, EnvelopeHeaders.DeadLetterSource, EnvelopeHeaders.DeadLetteredAt);
    }

    [Fact]
    public void Create_SettlementWithoutReason_SaysDeadLettered() =>
        DeadLetterMessage.Create(Message(), "orders", Settlement.Ack, At).Reason.Should().Be("dead-lettered");

    [Fact]
    public void Create_LongReason_IsCutInTheHeaderOnly()
    {
        var exact = new string('r', DeadLetterMessage.MaxHeaderTextLength);
        var longer = exact + "r";

        var kept = DeadLetterMessage.Create(Message(), "orders", Settlement.DeadLetter(exact), At);
        var cut = DeadLetterMessage.Create(Message(), "orders", Settlement.DeadLetter(longer), At);

        Header(kept, EnvelopeHeaders.DeadLetterReason).Should().Be(exact);
        Header(cut, EnvelopeHeaders.DeadLetterReason).Should().Be(exact + "…");
        cut.Reason.Should().Be(longer);
    }

    [Fact]
    public void Create_RemoteHandlerFailure_NamesTheRemoteType()
    {
        var remote = new RemoteHandlerException("Billing.CardDeclinedException", "declined");

        var dead = DeadLetterMessage.Create(Message(), "orders", Settlement.DeadLetter("refused", remote), At);

        dead.ExceptionType.Should().Be("Billing.CardDeclinedException");
        RemoteHandlerException.TypeNameOf(new RemoteHandlerException("no type")).Should().Be(typeof(RemoteHandlerException).FullName);
    }

    [Fact]
    public void ForReplay_RemovesTheDeadLetterHeadersKeepsTheOthersAndResetsTheCount()
    {
        var dead = DeadLetterMessage.Create(
            Message().WithHeader("tenant", "acme") with { DeliveryCount = 4 },
            "orders",
            Settlement.DeadLetter("refused", Thrown(new FormatException("bad"))),
            At);

        var replay = DeadLetterMessage.ForReplay(dead.Envelope);

        replay.DeliveryCount.Should().Be(0);
        replay.Headers.Should().BeEquivalentTo(new Dictionary<string, string> { ["tenant"] = "acme" });
    }

    [Fact]
    public void ForReplay_OnlyDeadLetterHeaders_LeavesNoHeaders()
    {
        var dead = DeadLetterMessage.Create(Message() with { DeliveryCount = 4 }, "orders", Settlement.DeadLetter("refused"), At);

        var replay = DeadLetterMessage.ForReplay(dead.Envelope);

        replay.Headers.Should().BeNull();
        replay.DeliveryCount.Should().Be(0);
    }

    [Fact]
    public void ForReplay_NoHeaders_ResetsTheCount()
    {
        var replay = DeadLetterMessage.ForReplay(Message() with { DeliveryCount = 4 });

        replay.DeliveryCount.Should().Be(0);
        replay.Headers.Should().BeNull();
    }

    private static Envelope Message() => new() { MessageId = Guid.NewGuid(), Body = "m" };

    private static string? Header(DeadLetterMessage dead, string name) =>
        dead.Envelope.TryGetHeader(name, out var value) ? value : null;

    private static Exception Thrown(Exception exception)
    {
        try
        {
            throw exception;
        }
        catch (Exception caught)
        {
            return caught;
        }
    }
}
