namespace Patterns.Etl;

/// <summary>
/// How long table sinks (SQLite, PostgreSQL) keep the ids of the messages a queue or subscription source loaded
/// (<see cref="EtlCommit.Consumed"/>), and when a writer removes older ones: in a batch's transaction, at most 10,000 at a
/// time, at its first batch, again at the next while a prune deleted a full 10,000, and otherwise at most once an hour. A message delivered again later than the retention after its batch committed would
/// be loaded again; a broker hands back an unacknowledged message when the consumer's connection drops, so the
/// retention only has to outlast the longest outage of the loading process.
/// </summary>
public static class EtlConsumedRecord
{
    /// <summary>The default retention: 7 days (as the kernel's inbox, <c>PatternsOptions.InboxRetention</c>).</summary>
    public static readonly TimeSpan DefaultRetention = TimeSpan.FromDays(7);

    /// <summary>The name of the table that holds the consumed message ids (one row per job, partition and message id).</summary>
    public const string Table = "patterns_etl_consumed";

    /// <summary>How often a writer prunes, at most.</summary>
    internal static readonly TimeSpan PruneInterval = TimeSpan.FromHours(1);

    /// <summary>
    /// The error of a batch that records a message id already recorded: the check before the batch missed it (a race with
    /// another copy's commit), so the batch fails rather than load the message twice. None of its messages is at fault:
    /// the source hands each back without counting a delivery, and the next check skips that one.
    /// </summary>
    internal static EtlAlreadyConsumedException AlreadyConsumed(EtlSinkContext context, string? messageId, Exception inner) =>
        new(
            $"ETL job '{context.Job}'{(context.Partition.Length > 0 ? $" (partition '{context.Partition}')" : string.Empty)}: the batch covers message {messageId ?? "(id in the inner error)"}, which another batch already loaded " +
            $"({Table} records it; the check before this batch missed it). The batch is rolled back and its messages are handed back without counting a delivery; the next run skips that message and loads the others.",
            inner);

    /// <summary>Validates a retention option.</summary>
    internal static void Validate(List<string> errors, string owner, TimeSpan retention)
    {
        if (retention <= TimeSpan.Zero && retention != Timeout.InfiniteTimeSpan)
        {
            errors.Add($"{owner}.ConsumedRetention must be positive or Timeout.InfiniteTimeSpan (was {retention}).");
        }
    }
}

/// <summary>
/// A batch failed because it records a message id a committed batch already recorded (see
/// <see cref="EtlConsumedRecord.AlreadyConsumed"/>): no message of the batch is at fault, so none counts a delivery.
/// </summary>
internal sealed class EtlAlreadyConsumedException(string message, Exception inner) : InvalidOperationException(message, inner)
{
    /// <summary>Whether <paramref name="failure"/> is, or wraps, this error.</summary>
    public static bool Caused(Exception? failure)
    {
        for (var error = failure; error is not null; error = error.InnerException)
        {
            if (error is EtlAlreadyConsumedException)
            {
                return true;
            }
        }

        return false;
    }
}

/// <summary>
/// When a writer's next prune is due. A prune deletes at most <see cref="Chunk"/> ids (through the index on
/// <c>(job, partition, consumed_at)</c>), so it never holds a batch's transaction for long; one that deleted a full chunk
/// leaves more behind, and the next batch prunes again.
/// </summary>
internal sealed class EtlConsumedPruning(TimeSpan retention)
{
    /// <summary>The most ids one prune deletes.</summary>
    public const int Chunk = 10_000;

    private DateTimeOffset _next = DateTimeOffset.MinValue;

    /// <summary>Records how many ids a prune deleted: a full chunk makes the next batch prune again.</summary>
    public void Pruned(long deleted)
    {
        if (deleted >= Chunk)
        {
            _next = DateTimeOffset.MinValue;
        }
    }

    /// <summary>Returns the cut-off (ids recorded before it go) when a prune is due now, and schedules the next.</summary>
    public DateTimeOffset? Due(DateTimeOffset now)
    {
        if (retention == Timeout.InfiniteTimeSpan || now < _next)
        {
            return null;
        }

        _next = now + EtlConsumedRecord.PruneInterval;
        return now - retention;
    }
}
