using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;

namespace Patterns.Messaging;

/// <summary>
/// A hash of partition keys that is the same in every process, on every platform and in every version: unlike
/// <see cref="object.GetHashCode"/>, which is randomized per process for strings. Use it wherever a key's partition
/// must outlive the process that chose it (state kept per partition, partitions shared by several processes).
/// </summary>
/// <remarks>
/// <para>
/// The hash is 32-bit FNV-1a over the key's bytes, finished with the murmur3 avalanche (<c>fmix32</c>). The bytes are
/// the UTF-8 encoding of a string (an unpaired surrogate counts as U+FFFD), and the little-endian bytes of the value of
/// a primitive: <see cref="bool"/> (one byte, 0 or 1), <see cref="byte"/>, <see cref="sbyte"/>, <see cref="char"/>,
/// <see cref="short"/>, <see cref="ushort"/>, <see cref="int"/>, <see cref="uint"/>, <see cref="long"/>,
/// <see cref="ulong"/>, an enum (its underlying value), <see cref="Guid"/> (its 16 bytes, as <see cref="Guid.TryWriteBytes(Span{byte})"/>
/// writes them), <see cref="DateTime"/> (its ticks) and <see cref="DateTimeOffset"/> (its UTC ticks).
/// </para>
/// <para>
/// Any other key uses <see cref="EqualityComparer{T}.Default"/>, which is stable across processes only if the type's
/// own <see cref="object.GetHashCode"/> is (records and tuples of strings are not): choose a string or primitive key,
/// or format the key as a string, when its partition must be stable.
/// </para>
/// </remarks>
public static class PartitionHash
{
    private const uint OffsetBasis = 2166136261;
    private const uint Prime = 16777619;

    /// <summary>The stable 32-bit hash of a key (see the remarks of <see cref="PartitionHash"/>).</summary>
    /// <typeparam name="TKey">The key type.</typeparam>
    /// <param name="key">The key; <see langword="null"/> hashes to 0.</param>
    /// <returns>The hash.</returns>
    public static uint Of<TKey>(TKey key)
    {
        if (key is null)
        {
            return 0;
        }

        if (!typeof(TKey).IsValueType)
        {
            return key is string text ? OfString(text) : OfObject(key);
        }

        // The JIT keeps only the branch of TKey: no boxing for primitive keys.
        if (typeof(TKey) == typeof(int))
        {
            return Of4(unchecked((uint)Unsafe.As<TKey, int>(ref key)));
        }

        if (typeof(TKey) == typeof(long))
        {
            return Of8(unchecked((ulong)Unsafe.As<TKey, long>(ref key)));
        }

        if (typeof(TKey) == typeof(Guid))
        {
            return OfGuid(Unsafe.As<TKey, Guid>(ref key));
        }

        if (typeof(TKey) == typeof(uint))
        {
            return Of4(Unsafe.As<TKey, uint>(ref key));
        }

        if (typeof(TKey) == typeof(ulong))
        {
            return Of8(Unsafe.As<TKey, ulong>(ref key));
        }

        if (typeof(TKey) == typeof(short) || typeof(TKey) == typeof(ushort) || typeof(TKey) == typeof(char))
        {
            return Of2(Unsafe.As<TKey, ushort>(ref key));
        }

        if (typeof(TKey) == typeof(byte) || typeof(TKey) == typeof(sbyte))
        {
            return Of1(Unsafe.As<TKey, byte>(ref key));
        }

        if (typeof(TKey) == typeof(bool))
        {
            return Of1(Unsafe.As<TKey, bool>(ref key) ? (byte)1 : (byte)0);
        }

        if (typeof(TKey) == typeof(DateTime))
        {
            return Of8(unchecked((ulong)Unsafe.As<TKey, DateTime>(ref key).Ticks));
        }

        if (typeof(TKey) == typeof(DateTimeOffset))
        {
            return Of8(unchecked((ulong)Unsafe.As<TKey, DateTimeOffset>(ref key).UtcTicks));
        }

        if (typeof(TKey).IsEnum)
        {
            return Unsafe.SizeOf<TKey>() switch
            {
                1 => Of1(Unsafe.As<TKey, byte>(ref key)),
                2 => Of2(Unsafe.As<TKey, ushort>(ref key)),
                4 => Of4(Unsafe.As<TKey, uint>(ref key)),
                _ => Of8(Unsafe.As<TKey, ulong>(ref key)),
            };
        }

        return Finish(unchecked((uint)EqualityComparer<TKey>.Default.GetHashCode(key)));
    }

    /// <summary>The partition of a key: its stable hash modulo <paramref name="partitions"/>.</summary>
    /// <typeparam name="TKey">The key type.</typeparam>
    /// <param name="key">The key; <see langword="null"/> goes to partition 0.</param>
    /// <param name="partitions">How many partitions (at least 1).</param>
    /// <returns>The partition, from 0 to <paramref name="partitions"/> - 1.</returns>
    public static int Partition<TKey>(TKey key, int partitions)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(partitions, 1);
        return partitions == 1 ? 0 : (int)(Of(key) % (uint)partitions);
    }

    /// <summary>The stable hash of a string: FNV-1a over its UTF-8 bytes, finished with the murmur3 avalanche.</summary>
    /// <param name="key">The string.</param>
    /// <returns>The hash.</returns>
    public static uint OfString(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        var hash = OffsetBasis;
        var chars = key.AsSpan();
        Span<byte> utf8 = stackalloc byte[4];
        var i = 0;
        while (i < chars.Length)
        {
            var c = chars[i];
            if (c < 0x80)
            {
                hash = (hash ^ c) * Prime;
                i++;
                continue;
            }

            Rune.DecodeFromUtf16(chars[i..], out var rune, out var consumed);
            var written = rune.EncodeToUtf8(utf8);
            hash = Add(hash, utf8[..written]);
            i += consumed;
        }

        return Finish(hash);
    }

    /// <summary>A key typed as <see cref="object"/> (or an interface) hashes as its runtime type would.</summary>
    private static uint OfObject(object key) => key switch
    {
        int value => Of(value),
        long value => Of(value),
        Guid value => Of(value),
        uint value => Of(value),
        ulong value => Of(value),
        short value => Of(value),
        ushort value => Of(value),
        char value => Of(value),
        byte value => Of(value),
        sbyte value => Of(value),
        bool value => Of(value),
        DateTime value => Of(value),
        DateTimeOffset value => Of(value),
        Enum value => OfEnum(value),
        _ => Finish(unchecked((uint)key.GetHashCode())),
    };

    private static uint OfEnum(Enum value) =>
        Type.GetTypeCode(value.GetType()) switch
        {
            TypeCode.Byte or TypeCode.SByte => Of1(unchecked((byte)Convert.ToInt64(value, CultureInfo.InvariantCulture))),
            TypeCode.Int16 or TypeCode.UInt16 => Of2(unchecked((ushort)Convert.ToInt64(value, CultureInfo.InvariantCulture))),
            TypeCode.Int32 or TypeCode.UInt32 => Of4(unchecked((uint)Convert.ToInt64(value, CultureInfo.InvariantCulture))),
            TypeCode.UInt64 => Of8(Convert.ToUInt64(value, CultureInfo.InvariantCulture)),
            _ => Of8(unchecked((ulong)Convert.ToInt64(value, CultureInfo.InvariantCulture))),
        };

    private static uint Of1(byte value) => OfLowBytes(value, 1);

    private static uint Of2(ushort value) => OfLowBytes(value, 2);

    private static uint Of4(uint value) => OfLowBytes(value, 4);

    private static uint Of8(ulong value) => OfLowBytes(value, 8);

    /// <summary>Hashes the <paramref name="size"/> low bytes of <paramref name="value"/>, little-endian: a primitive's own bytes.</summary>
    private static uint OfLowBytes(ulong value, int size)
    {
        Span<byte> bytes = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, value);
        return Finish(Add(OffsetBasis, bytes[..size]));
    }

    private static uint OfGuid(Guid value)
    {
        Span<byte> bytes = stackalloc byte[16];
        value.TryWriteBytes(bytes);
        return Finish(Add(OffsetBasis, bytes));
    }

    private static uint Add(uint hash, ReadOnlySpan<byte> bytes)
    {
        foreach (var b in bytes)
        {
            hash = (hash ^ b) * Prime;
        }

        return hash;
    }

    /// <summary>The murmur3 32-bit finalizer: spreads every input bit over the low bits that the modulo keeps.</summary>
    private static uint Finish(uint hash)
    {
        hash ^= hash >> 16;
        hash *= 0x85ebca6b;
        hash ^= hash >> 13;
        hash *= 0xc2b2ae35;
        hash ^= hash >> 16;
        return hash;
    }
}
