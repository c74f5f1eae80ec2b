namespace Patterns.Postgres;

/// <summary>
/// The queue behind group commit: while one operation runs, the ones that arrive wait here, and when it ends they run
/// together as one group (then the next group, until the queue is empty). Each queued operation completes with its
/// own outcome.
/// </summary>
/// <typeparam name="TItem">A queued operation.</typeparam>
/// <typeparam name="TResult">The outcome of one operation.</typeparam>
internal sealed class GroupQueue<TItem, TResult>
    where TItem : GroupQueue<TItem, TResult>.Pending
{
    /// <summary>The most turns of the thread pool <see cref="GatherAsync"/> waits for callers to come back.</summary>
    private const int MaxGatherYields = 8;

    private readonly Lock _gate = new();
    private readonly Func<List<TItem>, Task> _runGroup;
    private List<TItem> _queued = [];
    private bool _running;

    /// <param name="runGroup">Runs a group and completes every operation in it; never throws.</param>
    public GroupQueue(Func<List<TItem>, Task> runGroup) => _runGroup = runGroup;

    /// <summary>Gets how many operations wait for the next group.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _queued.Count;
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="runAlone"/> at once when nothing runs; otherwise queues <paramref name="item"/> for the
    /// next group. Cancellation counts only while the operation waits; once its group runs, it runs to the end.
    /// </summary>
    public async ValueTask<TResult> RunAsync(TItem item, Func<CancellationToken, ValueTask<TResult>> runAlone, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        bool queued;
        lock (_gate)
        {
            queued = _running;
            if (queued)
            {
                _queued.Add(item);
            }
            else
            {
                _running = true;
            }
        }

        if (queued)
        {
            using var registration = cancellationToken.Register(static state =>
            {
                var (queue, pending) = ((GroupQueue<TItem, TResult>, TItem))state!;
                queue.Withdraw(pending);
            }, (this, item));
            return await item.Completion.Task.ConfigureAwait(false);
        }

        try
        {
            return await runAlone(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            Release();
        }
    }

    private void Withdraw(TItem item)
    {
        lock (_gate)
        {
            if (!_queued.Remove(item))
            {
                return;
            }
        }

        item.Completion.TrySetCanceled();
    }

    /// <summary>Ends the running operation: the next group, if any queued meanwhile, starts on the thread pool.</summary>
    private void Release()
    {
        lock (_gate)
        {
            if (_queued.Count == 0)
            {
                _running = false;
                return;
            }
        }

        _ = Task.Run(DrainAsync);
    }

    private async Task DrainAsync()
    {
        var previous = 0;
        while (true)
        {
            if (previous > 1)
            {
                await GatherAsync(previous).ConfigureAwait(false);
            }

            List<TItem> group;
            lock (_gate)
            {
                if (_queued.Count == 0)
                {
                    _running = false;
                    return;
                }

                group = _queued;
                _queued = [];
            }

            previous = group.Count;
            await _runGroup(group).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// After a group of <paramref name="completed"/> operations, lets their callers (whose continuations were just
    /// queued to the thread pool) come back with their next operation before the next group is taken, while the queue
    /// keeps growing and is smaller than that group, for at most <see cref="MaxGatherYields"/> turns of the thread pool.
    /// Without it, callers that append in a loop split into a large group and a small one that each wait for a commit.
    /// </summary>
    private async ValueTask GatherAsync(int completed)
    {
        var seen = Count;
        for (var turn = 0; turn < MaxGatherYields && seen < completed; turn++)
        {
            await Task.Yield();
            var now = Count;
            if (now == seen && turn > 0)
            {
                return;
            }

            seen = now;
        }
    }

    /// <summary>An operation that can wait in the queue.</summary>
    internal abstract class Pending
    {
        /// <summary>Gets the operation's outcome, set by the group that runs it.</summary>
        public TaskCompletionSource<TResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
