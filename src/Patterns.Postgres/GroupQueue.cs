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
        while (true)
        {
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

            await _runGroup(group).ConfigureAwait(false);
        }
    }

    /// <summary>An operation that can wait in the queue.</summary>
    internal abstract class Pending
    {
        /// <summary>Gets the operation's outcome, set by the group that runs it.</summary>
        public TaskCompletionSource<TResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
