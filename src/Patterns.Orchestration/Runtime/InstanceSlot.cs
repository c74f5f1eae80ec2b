using Patterns.Orchestration.Engine;

namespace Patterns.Orchestration.Runtime;

/// <summary>One instance in this process: its mailbox and, while cached, its live executor (the warm path never replays).</summary>
internal sealed class InstanceSlot(string instanceId)
{
    // Null while empty: a cached instance that waits keeps no buffer (100,000 suspended instances add up), and a batch is
    // handed over whole instead of copied. The slot itself is the lock (it is never handed outside the runtime), so it
    // needs no lock object of its own either.
    private List<WorkItem>? _items;
    private bool _running;

    public string InstanceId { get; } = instanceId;

    public WorkflowExecutor? Executor { get; set; }

    /// <summary>Adds an item; returns true when the caller must start processing (nobody is).</summary>
    public bool Add(WorkItem item) => Add([item]);

    /// <summary>Adds items at once, so that they are taken in one batch; returns true when the caller must start processing.</summary>
    public bool Add(ReadOnlySpan<WorkItem> items)
    {
        lock (this)
        {
            (_items ??= []).AddRange(items);
            if (_running)
            {
                return false;
            }

            _running = true;
            return true;
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

    public bool IsIdle
    {
        get
        {
            lock (this)
            {
                return !_running && _items is null;
            }
        }
    }
}
