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
    /// <returns>The message ids.</returns>
    IReadOnlyList<string> TakeConsumed(long position);

    /// <summary>The run ended: what is not acknowledged goes back to the transport to be delivered again, and the subscription stops.</summary>
    /// <param name="failure">Why the run failed, or <see langword="null"/>.</param>
    /// <param name="failedFrom">With a failure, the first position to blame: a message before it (a batch committed before the one that failed covers it, or it made no row, or a stage failed on a later message's row) is handed back uncounted.</param>
    /// <param name="failedThrough">With a failure, the last position to blame: the last of the batch that failed, or the position of the row a stage failed on (then also <paramref name="failedFrom"/>). The messages between the two count a failed delivery.</param>
    /// <returns>A task that completes when the subscription has stopped.</returns>
    ValueTask EndAsync(Exception? failure, long failedFrom, long failedThrough);
}
