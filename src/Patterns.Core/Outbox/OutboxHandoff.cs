using Patterns.Storage;

namespace Patterns.Outbox;

/// <summary>
/// Hands the outbox messages this process's sessions committed to this process's relay in memory, with the sequence
/// numbers the store gave them, so the relay need not read back what its own process just wrote.
/// </summary>
/// <remarks>
/// <para>
/// The relay takes from here only the message with the next sequence number after the last one it handed over, so a
/// run of handed-over numbers has no gap where a message it was not given (committed by another process, or by this one
/// outside a session) could sit; such a message leaves a gap, and the relay reads the store to fill it. A session's
/// commit takes a ticket before it starts and returns it when it ends (with its messages when it committed), so the relay
/// can tell a gap that a commit of this process still in progress will fill from one only the store can fill.
/// </para>
/// <para>
/// Nothing is kept, and no ticket taken, while no relay of this process owns the outbox (<see cref="Open"/>,
/// <see cref="Close"/>; the relay opens it only for a store that declares
/// <see cref="IUnitOfWorkStorage.NumbersOutboxConsecutively"/>). At most <see cref="Capacity"/> messages and
/// <see cref="ByteBudget"/> bytes of payload are kept: a message not kept leaves a gap, which the store read fills. So a message
/// given here and never taken is not lost: it is in the store, which the relay reads whenever it cannot account for
/// what the store announced.
/// </para>
/// </remarks>
internal sealed class OutboxHandoff
{
    /// <summary>The most messages kept for the relay; the store read covers the rest.</summary>
    internal const int Capacity = 10_000;

    /// <summary>The most payload bytes kept by default (16 MiB): with the transport down, what does not fit stays only in the store.</summary>
    internal const long DefaultByteBudget = 16L * 1024 * 1024;

    private readonly Lock _gate = new();
    private readonly Dictionary<long, StoredOutboxMessage> _pending = [];
    private readonly SortedSet<long> _active = [];
    private TaskCompletionSource _changed = NewSignal();
    private readonly long _byteBudget;
    private long _started;
    private long _highest;
    private long _bytes;
    private bool _open;

    /// <summary>Initializes a new instance of the <see cref="OutboxHandoff"/> class that keeps at most <see cref="DefaultByteBudget"/> payload bytes.</summary>
    public OutboxHandoff()
        : this(DefaultByteBudget)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="OutboxHandoff"/> class.</summary>
    /// <param name="byteBudget">The most payload bytes kept.</param>
    internal OutboxHandoff(long byteBudget) => _byteBudget = byteBudget;

    /// <summary>Gets the payload bytes kept.</summary>
    internal long KeptBytes
    {
        get
        {
            lock (_gate)
            {
                return _bytes;
            }
        }
    }

    /// <summary>Gets the most payload bytes kept.</summary>
    internal long ByteBudget => _byteBudget;

    /// <summary>Gets a task that completes at the next change: a commit ended, or the handoff opened or closed. Take it before looking.</summary>
    public Task Changed
    {
        get
        {
            lock (_gate)
            {
                return _changed.Task;
            }
        }
    }

    /// <summary>Gets the ticket of the latest commit begun: every commit begun later gets a greater one.</summary>
    public long Mark
    {
        get
        {
            lock (_gate)
            {
                return _started;
            }
        }
    }

    /// <summary>Gets a value indicating whether no commit of this process is in progress.</summary>
    public bool Idle
    {
        get
        {
            lock (_gate)
            {
                return _active.Count == 0;
            }
        }
    }

    /// <summary>Gets the highest sequence number kept, or 0 when none is: after a <see cref="Take"/> that took nothing, a kept message means a gap before it.</summary>
    public long HighestPending
    {
        get
        {
            lock (_gate)
            {
                return _highest;
            }
        }
    }

    /// <summary>
    /// Drops every kept message numbered <paramref name="sequence"/> or below: the relay read the store after taking
    /// this many, and the read did not return them, so they are no longer there (another relay sent and removed them
    /// before this one owned the outbox).
    /// </summary>
    /// <param name="sequence">The highest number kept before the read.</param>
    public void DropThrough(long sequence)
    {
        lock (_gate)
        {
            DropThroughLocked(sequence);
        }
    }

    /// <summary>Called by a session before it commits a unit that holds outbox messages.</summary>
    /// <returns>The ticket to pass to <see cref="Complete"/> when the commit ends, however it ends; 0 while closed (no relay of this process waits for it).</returns>
    public long Begin()
    {
        lock (_gate)
        {
            if (!_open)
            {
                return 0;
            }

            var ticket = ++_started;
            _active.Add(ticket);
            return ticket;
        }
    }

    /// <summary>Called by a session when its commit ended.</summary>
    /// <param name="ticket">The ticket from <see cref="Begin"/>.</param>
    /// <param name="lastSequence">The sequence number of the unit's last message (the store numbers a unit's messages consecutively); 0 when the commit failed.</param>
    /// <param name="messages">The unit's messages, in the order they were enqueued.</param>
    /// <param name="committedAt">When the unit committed.</param>
    public void Complete(long ticket, long lastSequence, IReadOnlyList<OutboxMessage> messages, DateTimeOffset committedAt)
    {
        if (ticket == 0)
        {
            return; // begun while closed: its messages are read from the store
        }

        TaskCompletionSource changed;
        lock (_gate)
        {
            _active.Remove(ticket);
            if (_open && lastSequence > 0)
            {
                var first = lastSequence - messages.Count + 1;
                for (var i = 0; i < messages.Count && _pending.Count < Capacity; i++)
                {
                    var size = messages[i].Payload.Length;
                    if (_bytes + size > _byteBudget)
                    {
                        break; // over the budget: the rest of the unit leaves a gap, which the store read fills
                    }

                    if (_pending.TryAdd(first + i, new StoredOutboxMessage(first + i, messages[i], committedAt)))
                    {
                        _bytes += size;
                        _highest = Math.Max(_highest, first + i);
                    }
                }
            }

            changed = _changed;
            _changed = NewSignal();
        }

        changed.TrySetResult();
    }

    /// <summary>Gets a value indicating whether every commit with a ticket up to <paramref name="mark"/> has ended (and handed its messages over).</summary>
    /// <param name="mark">A <see cref="Mark"/>.</param>
    /// <returns>True when none of those commits is still in progress.</returns>
    public bool Settled(long mark)
    {
        lock (_gate)
        {
            return _active.Count == 0 || _active.Min > mark;
        }
    }

    /// <summary>Starts keeping messages for this process's relay (it owns the outbox now); drops anything kept before.</summary>
    public void Open() => Reset(open: true);

    /// <summary>Stops keeping messages (the relay stopped or lost the outbox) and drops what was kept.</summary>
    public void Close() => Reset(open: false);

    /// <summary>
    /// Moves into <paramref name="into"/> the messages numbered <paramref name="after"/> + 1, + 2, ... without a gap, up
    /// to <paramref name="maxCount"/>, and drops every kept message numbered <paramref name="after"/> or below (the
    /// store read handed it over).
    /// </summary>
    /// <param name="after">The last sequence number the relay handed over.</param>
    /// <param name="maxCount">The most messages to take.</param>
    /// <param name="into">Receives the messages, in sequence order.</param>
    /// <returns>How many were taken.</returns>
    public int Take(long after, int maxCount, List<StoredOutboxMessage> into)
    {
        lock (_gate)
        {
            if (_pending.Count == 0)
            {
                return 0;
            }

            var taken = 0;
            while (taken < maxCount && _pending.Remove(after + taken + 1, out var message))
            {
                _bytes -= message.Message.Payload.Length;
                into.Add(message);
                taken++;
            }

            if (after + taken >= _highest)
            {
                // The run reached the highest kept: whatever is left is at or below the relay's position.
                Clear();
            }
            else if (taken == 0)
            {
                // A gap (or messages the store read already handed over): drop those at or below the relay's position.
                DropThroughLocked(after);
            }

            return taken;
        }
    }

    private void Reset(bool open)
    {
        TaskCompletionSource changed;
        lock (_gate)
        {
            _open = open;
            Clear();
            changed = _changed;
            _changed = NewSignal();
        }

        changed.TrySetResult();
    }

    private void DropThroughLocked(long sequence)
    {
        if (sequence >= _highest)
        {
            Clear();
            return;
        }

        foreach (var (kept, message) in _pending)
        {
            if (kept <= sequence)
            {
                _pending.Remove(kept);
                _bytes -= message.Message.Payload.Length;
            }
        }
    }

    private void Clear()
    {
        _pending.Clear();
        _highest = 0;
        _bytes = 0;
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
