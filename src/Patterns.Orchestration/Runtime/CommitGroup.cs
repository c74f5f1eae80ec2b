using Patterns.Storage;

namespace Patterns.Orchestration.Runtime;

/// <summary>
/// Group commit: the units of work of many instances' workflow tasks that wait at the same time are merged and committed
/// as one (one store transaction, one writer turn), while the previous group commits. A group that fails is committed
/// again unit by unit, so each task gets its own outcome (a conflict fails only the instance that conflicts); unless
/// <paramref name="landed"/> finds that the group was committed all the same (the store reported an error after the
/// commit): committed again, each unit's append would be an idempotent retry while the rest of the unit commits a second
/// time, its outbox messages (activity tasks) among it.
/// </summary>
/// <param name="units">The store.</param>
/// <param name="maxUnits">How many units one commit carries at most.</param>
/// <param name="committed">Called with each commit's result.</param>
/// <param name="landed">Tells whether a unit whose commit failed is in the store all the same (false when not known).</param>
internal sealed class CommitGroup(
    IUnitOfWorkStorage units, int maxUnits, Action<UnitOfWorkResult>? committed = null, Func<UnitOfWork, CancellationToken, ValueTask<bool>>? landed = null)
{
    private readonly Lock _lock = new();
    private List<(UnitOfWork Work, TaskCompletionSource Done)> _pending = [];

    // The list of the last batch, emptied, taken as the next pending list (only the running commit loop gives one back):
    // a new list for each commit grew its array again from scratch, for every one of them.
    private List<(UnitOfWork Work, TaskCompletionSource Done)>? _spare;
    private bool _running;

    /// <summary>Gets how many store commits carried more than one unit (for tests and benchmarks).</summary>
    public long GroupedCommits { get; private set; }

    /// <summary>Gets how many units wait for the running commit (for benchmarks).</summary>
    public int Pending
    {
        get
        {
            lock (_lock)
            {
                return _pending.Count;
            }
        }
    }

    /// <summary>Raised when a unit joins those waiting for the running commit, with how many wait (tests wait on it instead of sleeping).</summary>
    public event Action<int>? Queued;

    public Task CommitAsync(UnitOfWork work, CancellationToken cancellationToken)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var waiting = 0;
        lock (_lock)
        {
            _pending.Add((work, done));
            if (_running)
            {
                waiting = _pending.Count;
            }
            else
            {
                _running = true;
            }
        }

        if (waiting > 0)
        {
            Queued?.Invoke(waiting);
            return done.Task;
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
                    _pending = _spare ?? [];
                    _spare = null;
                }
                else
                {
                    batch = _pending.GetRange(0, maxUnits);
                    _pending.RemoveRange(0, maxUnits);
                }
            }

            if (batch.Count > 1)
            {
                var merged = Merge(batch);
                bool committedAll;
                try
                {
                    var result = await units.CommitAsync(merged, cancellationToken).ConfigureAwait(false);
                    committed?.Invoke(result);
                    committedAll = true;
                }
                catch (Exception)
                {
                    // One unit conflicts, or the store failed, maybe after the commit: a unit is all or nothing, so one
                    // look tells which. Committed: every unit is done (committed again alone, each would store its
                    // outbox messages twice). Not committed, or not known: commit each alone below, so each learns its
                    // own outcome.
                    committedAll = await LandedAsync(merged, cancellationToken).ConfigureAwait(false);
                }

                if (committedAll)
                {
                    GroupedCommits++;
                    foreach (var (_, done) in batch)
                    {
                        done.TrySetResult();
                    }

                    Recycle(batch);
                    continue;
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

            Recycle(batch);
        }
    }

    private void Recycle(List<(UnitOfWork Work, TaskCompletionSource Done)> batch)
    {
        batch.Clear(); // drops the units and their completions
        lock (_lock)
        {
            _spare = batch;
        }
    }

    private async ValueTask<bool> LandedAsync(UnitOfWork merged, CancellationToken cancellationToken)
    {
        if (landed is null || cancellationToken.IsCancellationRequested)
        {
            return false;
        }

        try
        {
            return await landed(merged, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception)
        {
            return false; // not known: the units are committed again one by one
        }
    }

    // Index loops over the units' lists: a foreach over an IReadOnlyList boxes its enumerator, five of them per unit.
    private static UnitOfWork Merge(List<(UnitOfWork Work, TaskCompletionSource Done)> batch)
    {
        var merged = new UnitOfWork();
        HashSet<Lease>? fences = null;
        foreach (var (work, _) in batch)
        {
            var appends = work.Appends;
            for (var i = 0; i < appends.Count; i++)
            {
                var append = appends[i];
                merged.Append(append.StreamId, append.ExpectedVersion, append.Events, append.InlineProjection);
            }

            var documents = work.Documents;
            for (var i = 0; i < documents.Count; i++)
            {
                var change = documents[i];
                if (change.IsDelete)
                {
                    merged.Delete(change.Collection, change.Id);
                }
                else
                {
                    merged.Upsert(change.Collection, change.Id, change.Document);
                }
            }

            var claims = work.InboxClaims;
            for (var i = 0; i < claims.Count; i++)
            {
                merged.ClaimInbox(claims[i].Consumer, claims[i].MessageId);
            }

            var outbox = work.Outbox;
            for (var i = 0; i < outbox.Count; i++)
            {
                merged.Enqueue(outbox[i]);
            }

            var leases = work.Fences;
            for (var i = 0; i < leases.Count; i++)
            {
                if ((fences ??= []).Add(leases[i]))
                {
                    merged.RequireLease(leases[i]);
                }
            }
        }

        return merged;
    }
}
