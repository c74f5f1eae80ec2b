using Patterns.Storage;

namespace Patterns.Sqlite;

/// <summary>
/// A unit of work as one write: every part runs inside the writer's transaction under the savepoint the writer gives
/// each write, so a part that throws rolls back the whole unit (and only it) and fails its caller with that part's
/// exception. Units queued together share a commit like any other writes.
/// </summary>
/// <remarks>
/// The parts run in the order the in-memory store checks them: the appends (through <see cref="SqliteWriter.Append"/>,
/// so a second append to a stream sees the first and exact retries return their original result), the document
/// changes, the inline projections (which see the unit's documents), then the lease fences, the checkpoint
/// compare-and-sets, the inbox claims, the checkpoint saves and the outbox messages.
/// </remarks>
internal sealed class UnitOfWorkOperation(UnitOfWork work, Action outboxCommitted, CancellationToken cancellationToken)
    : WriteOperation<UnitOfWorkResult>(cancellationToken)
{
    public override int EventCount { get; } = work.Appends.Sum(static a => a.Events.Count);

    public override async ValueTask ExecuteAsync(SqliteWriter writer)
    {
        var appends = work.Appends;
        var results = new AppendResult[appends.Count];
        var inserted = new bool[appends.Count];
        for (var i = 0; i < appends.Count; i++)
        {
            var append = appends[i];
            results[i] = writer.Append(append.StreamId, append.ExpectedVersion, append.Events, out inserted[i]);
        }

        foreach (var change in work.Documents)
        {
            if (change.IsDelete)
            {
                writer.DeleteDocument(change.Collection, change.Id);
            }
            else
            {
                writer.UpsertDocument(change.Collection, change.Id, change.Document);
            }
        }

        for (var i = 0; i < appends.Count; i++)
        {
            if (inserted[i] && appends[i].InlineProjection is { } projection)
            {
                await writer.ProjectAsync(projection, results[i], appends[i].Events, CancellationToken).ConfigureAwait(false);
            }
        }

        foreach (var fence in work.Fences)
        {
            writer.CheckFence(fence);
        }

        foreach (var change in work.Checkpoints)
        {
            if (change.ExpectedPosition is { } expected && (writer.GetCheckpoint(change.Name) ?? 0) is var actual && actual != expected)
            {
                throw new CheckpointConflictException(change.Name, expected, actual);
            }
        }

        var now = writer.Now.UtcTicks;
        foreach (var claim in work.InboxClaims)
        {
            if (!writer.MarkHandled(claim.Consumer, claim.MessageId, now))
            {
                throw new DuplicateMessageException(claim.Consumer, claim.MessageId);
            }
        }

        foreach (var change in work.Checkpoints)
        {
            writer.SaveCheckpoint(change.Name, change.Position);
        }

        long lastSequence = 0;
        foreach (var message in work.Outbox)
        {
            lastSequence = writer.EnqueueOutbox(message, now);
        }

        Result = results.Length == 0 && lastSequence == 0 ? UnitOfWorkResult.Empty : new UnitOfWorkResult(results, lastSequence);
    }

    public override void Complete()
    {
        if (Result.LastOutboxSequence > 0)
        {
            outboxCommitted(); // committed: wake the relays waiting in WaitForOutboxAsync
        }

        base.Complete();
    }
}
