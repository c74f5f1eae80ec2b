using System.Runtime.CompilerServices;

namespace Patterns.Threading;

/// <summary>
/// A spin lock that a single busy producer thread enters without an atomic instruction. After
/// <see cref="BiasAfter"/> producer entries in a row from one thread, the gate is biased to that thread: it then
/// enters by setting a flag of its own and checking that nobody holds the lock, both plain memory operations. Any
/// other thread takes the lock with a compare-exchange, then runs a process-wide memory barrier
/// (<see cref="Interlocked.MemoryBarrierProcessWide"/>, a few hundred nanoseconds) so that either it sees the owner's
/// flag and waits for the owner to leave, or the owner sees the lock taken and goes the slow way. A producer entry
/// from another thread ends the bias; other entries (timers, flushes, completion) leave it in place.
/// </summary>
/// <remarks>
/// The critical sections are short and never block, wait or run user code, so the threads that wait spin. Not
/// reentrant. Entries return the owner token they used (or <see langword="null"/>); the matching exit takes it.
/// </remarks>
internal sealed class BiasedGate(bool biasable)
{
    /// <summary>Producer entries in a row from one thread before the gate is biased to it.</summary>
    internal const int BiasAfter = 128;

    private Owner? _owner;
    private int _taken;
    private int _streakThread;
    private int _streak;

    /// <summary>Gets whether the gate is biased to a thread now (for tests).</summary>
    internal bool IsBiased => Volatile.Read(ref _owner) is not null;

    /// <summary>Enters as a producer: without an atomic when the gate is biased to this thread.</summary>
    /// <returns>The owner token when entered the fast way; pass it to <see cref="Exit(Owner?)"/>.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Owner? EnterAsProducer()
    {
        var owner = Volatile.Read(ref _owner);
        if (owner is not null && owner.ThreadId == Environment.CurrentManagedThreadId)
        {
            Volatile.Write(ref owner.Inside, 1);

            // Another thread that took the lock before this flag was visible to it has run the process-wide barrier
            // (so this read sees the lock taken) or will see the flag and wait; a thread that ended the bias has
            // replaced the owner.
            if (Volatile.Read(ref _taken) == 0 && ReferenceEquals(Volatile.Read(ref _owner), owner))
            {
                return owner;
            }

            Volatile.Write(ref owner.Inside, 0);
        }

        EnterSlow(producer: true);
        return null;
    }

    /// <summary>Enters as anything but a producer (a timer, a flush, completion, a worker): never biases the gate.</summary>
    public void Enter() => EnterSlow(producer: false);

    /// <summary>Leaves after <see cref="EnterAsProducer"/>.</summary>
    /// <param name="entered">What <see cref="EnterAsProducer"/> returned.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Exit(Owner? entered)
    {
        if (entered is not null)
        {
            Volatile.Write(ref entered.Inside, 0);
        }
        else
        {
            Volatile.Write(ref _taken, 0);
        }
    }

    /// <summary>Leaves after <see cref="Enter"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Exit() => Volatile.Write(ref _taken, 0);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void EnterSlow(bool producer)
    {
        if (Interlocked.CompareExchange(ref _taken, 1, 0) != 0)
        {
            var spinner = default(SpinWait);
            do
            {
                spinner.SpinOnce();
            }
            while (Volatile.Read(ref _taken) != 0 || Interlocked.CompareExchange(ref _taken, 1, 0) != 0);
        }

        var me = Environment.CurrentManagedThreadId;
        var owner = _owner;
        if (owner is null)
        {
            if (producer && biasable)
            {
                if (_streakThread == me)
                {
                    if (++_streak >= BiasAfter)
                    {
                        Volatile.Write(ref _owner, new Owner(me));
                    }
                }
                else
                {
                    _streakThread = me;
                    _streak = 1;
                }
            }

            return;
        }

        if (owner.ThreadId == me)
        {
            // The owner itself, come the slow way: it is not inside the fast way.
            return;
        }

        if (producer)
        {
            // Another producer: end the bias. An owner that reads the new value after this goes the slow way.
            Volatile.Write(ref _owner, null);
            _streakThread = me;
            _streak = 1;
        }

        Interlocked.MemoryBarrierProcessWide();
        var waiter = default(SpinWait);
        while (Volatile.Read(ref owner.Inside) != 0)
        {
            waiter.SpinOnce(sleep1Threshold: -1);
        }
    }

    /// <summary>The thread a gate is biased to, and whether it is inside now.</summary>
    internal sealed class Owner(int threadId)
    {
        public readonly int ThreadId = threadId;

        public int Inside;
    }
}
