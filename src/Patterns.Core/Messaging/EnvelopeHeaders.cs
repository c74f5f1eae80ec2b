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
}
