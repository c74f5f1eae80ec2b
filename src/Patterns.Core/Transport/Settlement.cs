using Patterns.Messaging;

namespace Patterns.Transport;

/// <summary>What a consumer decided about one delivery.</summary>
public enum SettlementKind
{
    /// <summary>Handled; the transport forgets the message.</summary>
    Ack,

    /// <summary>Not handled yet; the transport delivers it again after <see cref="Settlement.Delay"/>.</summary>
    Retry,

    /// <summary>Will never be handled; the transport moves it to the dead-letter queue with the reason.</summary>
    DeadLetter,
}

/// <summary>
/// The outcome of handling one delivery, returned by a <see cref="DeliveryHandler"/> and carried out by the transport.
/// </summary>
public readonly struct Settlement
{
    private Settlement(SettlementKind kind, TimeSpan delay, string? reason, Exception? exception, bool deferred = false)
    {
        Kind = kind;
        Delay = delay;
        Reason = reason;
        Exception = exception;
        IsDeferral = deferred;
    }

    /// <summary>Gets an acknowledgement.</summary>
    public static Settlement Ack => default;

    /// <summary>Gets what to do with the message.</summary>
    public SettlementKind Kind { get; }

    /// <summary>Gets how long to wait before redelivery (<see cref="SettlementKind.Retry"/> only).</summary>
    public TimeSpan Delay { get; }

    /// <summary>Gets why the message is retried or dead-lettered.</summary>
    public string? Reason { get; }

    /// <summary>Gets the exception that caused the retry or dead-letter, if any.</summary>
    public Exception? Exception { get; }

    /// <summary>
    /// Gets a value indicating whether this <see cref="SettlementKind.Retry"/> puts the message off without counting a
    /// delivery (<see cref="Defer"/>): it was not handed to a handler, so its <see cref="Envelope.DeliveryCount"/> stays.
    /// </summary>
    public bool IsDeferral { get; }

    /// <summary>Asks the transport to deliver the message again.</summary>
    /// <param name="delay">How long to wait first; <see cref="TimeSpan.Zero"/> for at once.</param>
    /// <param name="exception">The failure that caused the retry.</param>
    /// <returns>The settlement.</returns>
    public static Settlement Retry(TimeSpan delay, Exception? exception = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);
        return new(SettlementKind.Retry, delay, exception?.Message, exception);
    }

    /// <summary>
    /// Asks the transport to deliver the message again after <paramref name="delay"/> without counting a delivery: the
    /// kernel's consumer path puts off a message that is scheduled for later, or that it could not check against the
    /// inbox, this way. A transport carries it out like <see cref="Retry"/>, with the envelope <see cref="NextDelivery"/>
    /// returns; it may deliver it early (the consumer path puts it off again) but never drops it.
    /// </summary>
    /// <param name="delay">How long to wait; must be positive.</param>
    /// <param name="reason">Why, for logs.</param>
    /// <returns>The settlement.</returns>
    public static Settlement Defer(TimeSpan delay, string reason)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(delay, TimeSpan.Zero);
        ArgumentException.ThrowIfNullOrWhiteSpace(reason);
        return new(SettlementKind.Retry, delay, reason, null, deferred: true);
    }

    /// <summary>
    /// Hands the message back to be delivered again at once without counting a delivery: the consumer is stopping (or
    /// let go of the message) before its handler settled it, so no handling was attempted and no retry limit should move
    /// towards dead-lettering it. A transport carries it out like a <see cref="Retry"/> with no delay and the envelope
    /// <see cref="NextDelivery"/> returns (its <see cref="Envelope.DeliveryCount"/> unchanged, with the header
    /// <see cref="EnvelopeHeaders.Released"/> added, so that a consumer can tell a message it may have taken before from
    /// a first delivery); <see cref="IsDeferral"/> is true.
    /// </summary>
    /// <param name="reason">Why, for logs.</param>
    /// <returns>The settlement.</returns>
    public static Settlement Release(string reason)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(reason);
        return new(SettlementKind.Retry, TimeSpan.Zero, reason, null, deferred: true);
    }

    /// <summary>
    /// Returns the envelope a transport delivers again for a <see cref="SettlementKind.Retry"/>: the delivered one with
    /// <see cref="Envelope.DeliveryCount"/> one higher, or unchanged for a deferral (<see cref="Defer"/>); a release
    /// (<see cref="Release"/>) also carries the header <see cref="EnvelopeHeaders.Released"/>. Every transport uses it, so
    /// delivery counts and the release mark mean the same everywhere.
    /// </summary>
    /// <param name="delivered">The envelope as it was delivered.</param>
    /// <returns>The envelope to deliver again.</returns>
    public Envelope NextDelivery(in Envelope delivered) =>
        !IsDeferral ? delivered with { DeliveryCount = delivered.DeliveryCount + 1 }
        : Delay == TimeSpan.Zero ? MarkReleased(delivered)
        : delivered;

    /// <summary>Gets whether a consumer handed <paramref name="envelope"/> back before (<see cref="Release"/>) without handling it.</summary>
    internal static bool WasReleased(in Envelope envelope) => envelope.Headers?.ContainsKey(EnvelopeHeaders.Released) == true;

    private static Envelope MarkReleased(in Envelope delivered) =>
        WasReleased(delivered) ? delivered : delivered.WithHeader(EnvelopeHeaders.Released, "1");

    /// <summary>Asks the transport to move the message to its dead-letter queue.</summary>
    /// <param name="reason">Why; recorded on the dead-lettered envelope.</param>
    /// <param name="exception">The failure, recorded on the dead-lettered envelope.</param>
    /// <returns>The settlement.</returns>
    public static Settlement DeadLetter(string reason, Exception? exception = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(reason);
        return new(SettlementKind.DeadLetter, TimeSpan.Zero, reason, exception);
    }

    /// <summary>The settlement a transport gives a message whose <see cref="DeliveryHandler"/> threw instead of settling it.</summary>
    internal static Settlement HandlerThrew(Exception exception) =>
        DeadLetter($"The delivery handler threw {exception.GetType().Name}: {exception.Message}", exception);
}
