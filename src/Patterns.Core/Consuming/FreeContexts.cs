using System.Runtime.CompilerServices;

namespace Patterns.Consuming;

/// <summary>
/// Each thread's finished consume contexts, one slot per message type that has filtered consumers, for the next message
/// to take. A thread-static field of a generic class is reached through a runtime helper when the type argument is a
/// class (shared generic code); this non-generic one is read inline, and the slot is an array index.
/// </summary>
internal static class FreeContexts
{
    private static int s_lastSlot = -1;

    [ThreadStatic]
    private static Slot[]? t_slots;

    /// <summary>Gets a slot of its own for a message type's contexts.</summary>
    public static int NewSlot() => Interlocked.Increment(ref s_lastSlot);

    /// <summary>Takes this thread's free context in <paramref name="slot"/>, or null when there is none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ConsumeContext? Take(int slot)
    {
        var slots = t_slots;
        if (slots is null || (uint)slot >= (uint)slots.Length)
        {
            return null;
        }

        ref var free = ref slots[slot].Context;
        var context = free;
        free = null;
        return context;
    }

    /// <summary>Makes <paramref name="context"/> this thread's free context in <paramref name="slot"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Return(int slot, ConsumeContext context)
    {
        var slots = t_slots;
        if (slots is null || (uint)slot >= (uint)slots.Length)
        {
            slots = Grow(slot);
        }

        slots[slot].Context = context;
    }

    private static Slot[] Grow(int slot)
    {
        var grown = new Slot[Math.Max(slot + 1, 8)];
        t_slots?.CopyTo(grown, 0);
        t_slots = grown;
        return grown;
    }

    /// <summary>A context reference in a struct, so storing it into the array needs no covariance check.</summary>
    private struct Slot
    {
        public ConsumeContext? Context;
    }
}
