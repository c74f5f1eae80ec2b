using Patterns.Orchestration.Engine;

namespace Patterns.Orchestration.Runtime;

/// <summary>One instance in this process: its mailbox and, while cached, its live executor (the warm path never replays).</summary>
internal sealed class InstanceSlot(string instanceId, WorkflowRuntime runtime) : IThreadPoolWorkItem
{
    // Null while empty: a cached instance that waits keeps no buffer (100,000 suspended instances add up), and a batch is
    // handed over whole instead of copied. The slot itself is the lock (it is never handed outside the runtime), so it
    // needs no lock object of its own either.
    private List<WorkItem>? _items;
    private bool _running;

    // Counts the batches added, so that an eviction chosen when the instance went idle is dropped if it was used since.
    private int _generation;

    // Set when the slot was evicted and left the map: an item added now goes to a new slot (see WorkflowRuntime.EnqueueAll).
    private bool _retired;

    public string InstanceId { get; } = instanceId;

    public WorkflowExecutor? Executor { get; set; }

    /// <summary>Runs the slot's workflow tasks (queued to the thread pool when the slot gets a place).</summary>
    void IThreadPoolWorkItem.Execute() => _ = runtime.ProcessAsync(this);

    /// <summary>Adds items at once, so that they are taken in one batch.</summary>
    /// <returns>
    /// <see cref="AddResult.Start"/> when the caller must start processing (nobody is), <see cref="AddResult.Queued"/> when
    /// the slot's processing will take them, <see cref="AddResult.Retired"/> (nothing added) when the slot was evicted.
    /// </returns>
    public AddResult Add(ReadOnlySpan<WorkItem> items)
    {
        lock (this)
        {
            if (_retired)
            {
                return AddResult.Retired;
            }

            (_items ??= new List<WorkItem>(items.Length)).AddRange(items);
            _generation++;
            if (_running)
            {
                return AddResult.Queued;
            }

            _running = true;
            return AddResult.Start;
        }
    }

    /// <summary>Gets the number of batches added so far (see <see cref="TryEvict"/>).</summary>
    public int Generation
    {
        get
        {
            lock (this)
            {
                return _generation;
            }
        }
    }

    /// <summary>
    /// Drops the live executor and retires the slot if nothing was added since <paramref name="generation"/>, nobody
    /// processes it and its executor waits only for what a replay rebuilds: the next item for the instance goes to a new
    /// slot, which replays the history.
    /// </summary>
    public bool TryEvict(int generation)
    {
        lock (this)
        {
            // Checked again here, where nobody runs the executor: what the caller saw when it went idle may have changed since
            // (an item that came right after scheduled an activity, whose result must find the instance live).
            if (_running || _items is not null || _retired || _generation != generation || Executor is not { IsEvictable: true })
            {
                return false;
            }

            Executor = null;
            _retired = true;
            return true;
        }
    }

    /// <summary>Gets whether items wait to be taken (the slot's processing yields its place to older waiters if so).</summary>
    public bool HasItems
    {
        get
        {
            lock (this)
            {
                return _items is not null;
            }
        }
    }

    /// <summary>Takes every waiting item, or returns null and marks the slot idle.</summary>
    public List<WorkItem>? Take()
    {
        lock (this)
        {
            var batch = _items;
            _items = null;
            if (batch is null)
            {
                _running = false;
            }

            return batch;
        }
    }

    /// <summary>
    /// Retires the slot if nobody processes it and nothing waits in it: the next item for the instance goes to a new slot
    /// (an item added to a slot already out of the map would be processed there, beside the new slot's).
    /// </summary>
    public bool TryRetireIdle()
    {
        lock (this)
        {
            if (_running || _items is not null || _retired)
            {
                return false;
            }

            _retired = true;
            return true;
        }
    }

    public enum AddResult
    {
        Queued,
        Start,
        Retired,
    }
}
