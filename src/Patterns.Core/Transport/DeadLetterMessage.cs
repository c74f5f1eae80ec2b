using System.Globalization;
using Patterns.Messaging;

namespace Patterns.Transport;

/// <summary>A message in a dead-letter queue, with why it is there.</summary>
/// <param name="Envelope">The message as it was last delivered, with the dead-letter headers added.</param>
/// <param name="Source">The queue (or subscription group) it was dead-lettered from.</param>
/// <param name="Reason">Why it was dead-lettered.</param>
/// <param name="ExceptionType">The full type name of the exception, if one caused it.</param>
/// <param name="ExceptionMessage">The exception's message, if one caused it.</param>
/// <param name="DeadLetteredAt">When it was dead-lettered.</param>
public sealed record DeadLetterMessage(
    Envelope Envelope,
    string Source,
    string Reason,
    string? ExceptionType,
    string? ExceptionMessage,
    DateTimeOffset DeadLetteredAt)
{
    /// <summary>The longest reason, exception message or stack trace kept in a header; longer text is cut with an ellipsis.</summary>
    public const int MaxHeaderTextLength = 4096;

    /// <summary>
    /// Describes a message that a <see cref="SettlementKind.DeadLetter"/> settlement moves to the dead-letter queue of
    /// <paramref name="source"/>: the envelope with the dead-letter headers (<see cref="EnvelopeHeaders"/>) added, and the
    /// reason, exception and time. Every transport dead-letters through it, so dead letters look the same everywhere.
    /// </summary>
    /// <param name="envelope">The message as it was delivered.</param>
    /// <param name="source">The queue (or consumer group) it is dead-lettered from.</param>
    /// <param name="settlement">The dead-letter settlement.</param>
    /// <param name="deadLetteredAt">Now, from the transport's <see cref="TimeProvider"/>.</param>
    /// <returns>The dead letter.</returns>
    public static DeadLetterMessage Create(in Envelope envelope, string source, in Settlement settlement, DateTimeOffset deadLetteredAt)
    {
        ArgumentNullException.ThrowIfNull(source);
        var exception = settlement.Exception;
        var reason = settlement.Reason ?? exception?.Message ?? "dead-lettered";
        var headers = new List<KeyValuePair<string, string>>(6)
        {
            new(EnvelopeHeaders.DeadLetterReason, Truncate(reason)),
            new(EnvelopeHeaders.DeadLetterSource, source),
            new(EnvelopeHeaders.DeadLetteredAt, deadLetteredAt.ToString("O", CultureInfo.InvariantCulture)),
        };
        string? exceptionType = null;
        string? exceptionMessage = null;
        if (exception is not null)
        {
            exceptionType = RemoteHandlerException.TypeNameOf(exception);
            exceptionMessage = exception.Message;
            headers.Add(new(EnvelopeHeaders.ExceptionType, exceptionType));
            headers.Add(new(EnvelopeHeaders.ExceptionMessage, Truncate(exceptionMessage)));
            if (exception.StackTrace is { } stack)
            {
                headers.Add(new(EnvelopeHeaders.ExceptionStackTrace, Truncate(stack)));
            }
        }

        return new DeadLetterMessage(envelope.WithHeaders(headers), source, reason, exceptionType, exceptionMessage, deadLetteredAt);
    }

    /// <summary>Returns the envelope to send back to its queue when a dead letter is replayed: the dead-letter headers removed, the delivery count reset.</summary>
    /// <param name="envelope">The dead-lettered envelope.</param>
    /// <returns>The envelope to replay.</returns>
    public static Envelope ForReplay(in Envelope envelope)
    {
        if (envelope.Headers is not { } headers)
        {
            return envelope with { DeliveryCount = 0 };
        }

        var kept = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in headers)
        {
            if (!EnvelopeHeaders.IsDeadLetterHeader(key))
            {
                kept[key] = value;
            }
        }

        return envelope with { Headers = kept.Count == 0 ? null : kept, DeliveryCount = 0 };
    }

    private static string Truncate(string text) => text.Length <= MaxHeaderTextLength ? text : text[..MaxHeaderTextLength] + "…";
}
