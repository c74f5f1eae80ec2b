using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;

namespace Patterns.Messaging;

/// <summary>
/// Makes message ids without a random-number call per message: each thread draws 8 random bytes once and
/// counts in the other 8, so ids are unique across threads and processes with overwhelming probability.
/// </summary>
internal static class MessageIds
{
    [ThreadStatic]
    private static ulong t_prefix;

    [ThreadStatic]
    private static ulong t_counter;

    public static Guid Next()
    {
        if (t_prefix == 0)
        {
            Span<byte> random = stackalloc byte[8];
            do
            {
                RandomNumberGenerator.Fill(random);
                t_prefix = BinaryPrimitives.ReadUInt64LittleEndian(random);
            }
            while (t_prefix == 0);
        }

        Guid id = default;
        ref var halves = ref Unsafe.As<Guid, ulong>(ref id);
        halves = t_prefix;
        Unsafe.Add(ref halves, 1) = ++t_counter;
        return id;
    }
}
