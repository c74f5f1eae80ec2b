namespace Patterns.Messaging;

/// <summary>Names of the headers that Patterns itself writes on an <see cref="Envelope"/>.</summary>
public static class EnvelopeHeaders
{
    /// <summary>Why the message was dead-lettered.</summary>
    public const string DeadLetterReason = "patterns-dead-letter-reason";

    /// <summary>The full CLR type name of the exception that dead-lettered the message.</summary>
    public const string ExceptionType = "patterns-exception-type";

    /// <summary>The message of the exception that dead-lettered the message.</summary>
    public const string ExceptionMessage = "patterns-exception-message";

    /// <summary>The stack trace of the exception that dead-lettered the message.</summary>
    public const string ExceptionStackTrace = "patterns-exception-stacktrace";

    /// <summary>The address (queue or subscription) the message was dead-lettered from.</summary>
    public const string DeadLetterSource = "patterns-dead-letter-source";

    /// <summary>When the message was dead-lettered (ISO 8601, from the transport's <see cref="TimeProvider"/>).</summary>
    public const string DeadLetteredAt = "patterns-dead-lettered-at";

    /// <summary>Marks a response envelope as carrying a remote error rather than a result.</summary>
    public const string ResponseError = "patterns-response-error";

    /// <summary>
    /// When the message may be handled, at the earliest (ISO 8601, UTC). Set from <see cref="MessageOptions.DeliverAt"/> or
    /// <see cref="MessageOptions.Delay"/>; the consumer path puts a message off until then.
    /// </summary>
    public const string DeliverAt = "patterns-deliver-at";

    /// <summary>
    /// When the message expires (ISO 8601, UTC). Set from <see cref="MessageOptions.TimeToLive"/>, or by request-response from
    /// the request's timeout; the consumer path dead-letters a message that arrives later, with the reason
    /// <see cref="ExpiredReason"/>, and never hands it to a handler.
    /// </summary>
    public const string ExpiresAt = "patterns-expires-at";

    /// <summary>
    /// Marks a message that a consumer handed back without handling it (<see cref="Transport.Settlement.Release"/>): its
    /// <see cref="Envelope.DeliveryCount"/> did not move, but a consumer that records what it took in a transaction (a
    /// stream source with a durable snapshot store) may have committed it before handing it back, so it reads its inbox
    /// for a message that carries this header as it does for a redelivery. The value is <c>1</c>.
    /// </summary>
    public const string Released = "patterns-released";

    /// <summary>The dead-letter reason of a message whose time to live ended before it was handled.</summary>
    public const string ExpiredReason = "expired";

    /// <summary>Gets a value indicating whether a header is one that dead-lettering writes (removed again when a dead letter is replayed).</summary>
    /// <param name="name">The header name.</param>
    /// <returns><see langword="true"/> for the dead-letter reason, source and time, and the exception headers.</returns>
    public static bool IsDeadLetterHeader(string name) =>
        name.StartsWith("patterns-dead-letter", StringComparison.Ordinal)
        || name.StartsWith("patterns-exception", StringComparison.Ordinal)
        || name == DeadLetteredAt;
}
