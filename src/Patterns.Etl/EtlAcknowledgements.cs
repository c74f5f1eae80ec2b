namespace Patterns.Etl;

/// <summary>
/// A source whose input is acknowledged only once it is durable at the sink (a queue or subscription on a transport):
/// the loader tells it how far the committed batches reach, and ends it when the run ends.
/// </summary>
internal interface IEtlAcknowledgements
{
    /// <summary>Every row the source handed over up to <paramref name="position"/> is committed (loaded, or filtered out, or quarantined with a commit): acknowledge them. Called in commit order.</summary>
    /// <param name="position">The source position the commit covers.</param>
    void Acknowledge(long position);

    /// <summary>Takes the ids of the messages handed over up to <paramref name="position"/> that no earlier commit took (stream task, in commit order).</summary>
    /// <param name="position">The source position the commit covers.</param>
    /// <param name="positions">The source position of each message, in the order of the ids.</param>
    /// <returns>The message ids.</returns>
    IReadOnlyList<string> TakeConsumed(long position, out IReadOnlyList<long> positions);

    /// <summary>The run ended: what is not acknowledged goes back to the transport to be delivered again, and the subscription stops.</summary>
    /// <param name="failure">Why the run failed, or <see langword="null"/>.</param>
    /// <param name="blame">With a failure, the messages to blame (they count a failed delivery; the others are handed back uncounted) and what failed, for the dead-letter reason.</param>
    /// <returns>A task that completes when the subscription has stopped.</returns>
    ValueTask EndAsync(Exception? failure, EtlBlame blame);
}

/// <summary>
/// The messages a failed run blames: those at source positions <see cref="From"/> to <see cref="Through"/> count a failed
/// delivery (and are dead-lettered after <c>maxDeliveries</c>); the others are handed back uncounted.
/// </summary>
/// <param name="From">The first position blamed: a message before it (a batch committed before the one that failed covers it, or it made no row, or a stage failed on a later message's row) is handed back uncounted.</param>
/// <param name="Through">The last position blamed: the last of the batch that failed, or the position of the message whose row failed (then also <paramref name="From"/>).</param>
/// <param name="Cause">What failed, as dead-letter reasons name it: <c>stage 2 (Select)</c>, <c>the batch loaded by sink 'orders'</c>.</param>
internal readonly record struct EtlBlame(long From, long Through, string Cause)
{
    /// <summary>Blames the message at <paramref name="position"/> alone.</summary>
    public static EtlBlame One(long position, string cause) => new(position, position, cause);

    /// <summary>Blames no message.</summary>
    public static EtlBlame Nobody(string cause) => new(long.MaxValue, long.MinValue, cause);

    /// <summary>Whether the message at <paramref name="position"/> is blamed.</summary>
    public bool Covers(long position) => position >= From && position <= Through;
}
