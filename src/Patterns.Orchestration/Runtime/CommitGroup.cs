using Patterns.Storage;

namespace Patterns.Orchestration.Runtime;

/// <summary>
/// Group commit: the units of work of many instances' workflow tasks that wait at the same time are merged and committed
/// as one (one store transaction, one writer turn), while the previous group commits. A group that fails is committed
/// again unit by unit, so each task gets its own outcome (a conflict fails only the instance that conflicts).
/// </summary>
internal sealed class CommitGroup(IUnitOfWorkStorage units, int maxUnits, Action<UnitOfWorkResult>? committed = null)
{
    private readonly Lock _lock = new();
    private List<(UnitOfWork Work, TaskCompletionSource Done)> _pending = [];
    private bool _running;

    /// <summary>Gets how many store commits carried more than one unit (for tests and benchmarks).</summary>
    public long GroupedCommits { get; private set; }

    public Task CommitAsync(UnitOfWork work, CancellationToken cancellationToken)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            _pending.Add((work, done));
            if (_running)
            {
                return done.Task;
            }

            _running = true;
        }

        _ = RunAsync(cancellationToken);
        return done.Task;
    }

    private async Task RunAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            List<(UnitOfWork Work, TaskCompletionSource Done)> batch;
            lock (_lock)
            {
                if (_pending.Count == 0)
                {
                    _running = false;
                    return;
                }

                if (_pending.Count <= maxUnits)
                {
                    batch = _pending;
                    _pending = [];
                }
                else
                {
                    batch = _pending.GetRange(0, maxUnits);
                    _pending.RemoveRange(0, maxUnits);
                }
            }

            if (batch.Count > 1)
            {
                try
                {
                    var result = await units.CommitAsync(Merge(batch), cancellationToken).ConfigureAwait(false);
                    committed?.Invoke(result);
                    GroupedCommits++;
                    foreach (var (_, done) in batch)
                    {
                        done.TrySetResult();
                    }

                    continue;
                }
                catch (Exception)
                {
                    // One unit conflicts (or the store failed): commit each alone below, so each learns its own outcome.
                }
            }

            foreach (var (work, done) in batch)
            {
                try
                {
                    var result = await units.CommitAsync(work, cancellationToken).ConfigureAwait(false);
                    committed?.Invoke(result);
                    done.TrySetResult();
                }
                catch (Exception ex)
                {
                    done.TrySetException(ex);
                }
            }
        }
    }

    private static UnitOfWork Merge(List<(UnitOfWork Work, TaskCompletionSource Done)> batch)
    {
        var merged = new UnitOfWork();
        HashSet<Lease>? fences = null;
        foreach (var (work, _) in batch)
        {
            foreach (var append in work.Appends)
            {
                merged.Append(append.StreamId, append.ExpectedVersion, append.Events, append.InlineProjection);
            }

            foreach (var change in work.Documents)
            {
                if (change.IsDelete)
                {
                    merged.Delete(change.Collection, change.Id);
                }
                else
                {
                    merged.Upsert(change.Collection, change.Id, change.Document);
                }
            }

            foreach (var claim in work.InboxClaims)
            {
                merged.ClaimInbox(claim.Consumer, claim.MessageId);
            }

            foreach (var message in work.Outbox)
            {
                merged.Enqueue(message);
            }

            foreach (var fence in work.Fences)
            {
                if ((fences ??= []).Add(fence))
                {
                    merged.RequireLease(fence);
                }
            }
        }

        return merged;
    }
}
