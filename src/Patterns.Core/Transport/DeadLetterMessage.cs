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
    DateTimeOffset DeadLetteredAt);
