using System.Runtime.CompilerServices;

namespace Patterns.Consuming;

/// <summary>
/// Each thread's consume context, one slot per message type that has filtered consumers. The context stays in its slot
/// while a message uses it (it says so itself), so taking it and giving it back cost no store here: only a message that
/// finds the slot empty or its context busy writes the slot, with the new context it had to make. A thread-static field
/// of a generic class is reached through a runtime helper when the type argument is a class (shared generic code); this
/// non-generic one is read inline, and the slot is an array index.
/// </summary>
internal static class FreeContexts
{
    private static int s_lastSlot = -1;

    [ThreadStatic]
    private static Slot[]? t_slots;

    /// <summary>Gets a slot of its own for a message type's contexts.</summary>
    public static int NewSlot() => Interlocked.Increment(ref s_lastSlot);

    /// <summary>Gets this thread's context in <paramref name="slot"/> (free or in use), or null when there is none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ConsumeContext? Get(int slot)
    {
        var slots = t_slots;
        return slots is null || (uint)slot >= (uint)slots.Length ? null : slots[slot].Context;
    }

    /// <summary>Makes <paramref name="context"/> this thread's context in <paramref name="slot"/>.</summary>
    public static void Set(int slot, ConsumeContext context)
    {
        var slots = t_slots;
        if (slots is null || (uint)slot >= (uint)slots.Length)
        {
            slots = Grow(slot);
        }

        slots[slot].Context = context;
    }

    /// <summary>Empties <paramref name="slot"/> on this thread.</summary>
    public static void Clear(int slot)
    {
        var slots = t_slots;
        if (slots is not null && (uint)slot < (uint)slots.Length)
        {
            slots[slot].Context = null;
        }
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
