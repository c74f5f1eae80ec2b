using System.Collections.Concurrent;

namespace Patterns.Orchestration.Runtime;

internal sealed partial class WorkflowRuntime
{
    // The times instances went idle waiting only for what their history brings back, oldest first, with the slot's
    // generation then: an entry whose slot was used since is stale, and dropped when its turn comes.
    private readonly ConcurrentQueue<(InstanceSlot Slot, int Generation)> _idle = new();
    private int _evictions;

    /// <summary>Raised when an idle instance's live state is dropped from the cache (tests wait on it instead of sleeping).</summary>
    public event Action<string>? Evicted;

    /// <summary>Gets how many idle instances had their live state dropped from the cache (they replay on their next item).</summary>
    public int Evictions => Volatile.Read(ref _evictions);

    /// <summary>
    /// Records that an instance went idle waiting only for signals, updates or conditions, and evicts the instances that went
    /// idle longest ago beyond <see cref="OrchestrationOptions.MaxCachedIdleInstances"/>: their next item replays their
    /// history (the cold path), which rebuilds everything an idle instance holds.
    /// </summary>
    private void NoteIdle(InstanceSlot slot)
    {
        _idle.Enqueue((slot, slot.Generation));
        var limit = Options.MaxCachedIdleInstances;
        while (_idle.Count > limit && _idle.TryDequeue(out var oldest))
        {
            // A stale entry (the slot was used since, or left the map) fails here and is simply dropped.
            if (oldest.Slot.TryEvict(oldest.Generation))
            {
                _slots.TryRemove(new KeyValuePair<string, InstanceSlot>(oldest.Slot.InstanceId, oldest.Slot));
                Interlocked.Increment(ref _evictions);
                Evicted?.Invoke(oldest.Slot.InstanceId);
            }
        }
    }
}
