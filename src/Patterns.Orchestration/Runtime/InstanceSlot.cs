using Patterns.Orchestration.Engine;

namespace Patterns.Orchestration.Runtime;

/// <summary>One instance in this process: its mailbox and, while cached, its live executor (the warm path never replays).</summary>
internal sealed class InstanceSlot(string instanceId)
{
    private readonly Queue<WorkItem> _items = new();
    private bool _running;

    public string InstanceId { get; } = instanceId;

    public WorkflowExecutor? Executor { get; set; }

    /// <summary>Adds an item; returns true when the caller must start processing (nobody is).</summary>
    public bool Add(WorkItem item)
    {
        lock (_items)
        {
            _items.Enqueue(item);
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
        lock (_items)
        {
            if (_items.Count == 0)
            {
                _running = false;
                return null;
            }

            var batch = new List<WorkItem>(_items.Count);
            while (_items.TryDequeue(out var item))
            {
                batch.Add(item);
            }

            return batch;
        }
    }

    public bool IsIdle
    {
        get
        {
            lock (_items)
            {
                return !_running && _items.Count == 0;
            }
        }
    }
}
