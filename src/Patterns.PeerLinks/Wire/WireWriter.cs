using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace Patterns.PeerLinks.Wire;

/// <summary>Writes little-endian primitives and length-prefixed UTF-8 strings to a buffer writer.</summary>
internal readonly struct WireWriter(IBufferWriter<byte> writer)
{
    public void Byte(byte value)
    {
        writer.GetSpan(1)[0] = value;
        writer.Advance(1);
    }

    public void Int32(int value)
    {
        BinaryPrimitives.WriteInt32LittleEndian(writer.GetSpan(4), value);
        writer.Advance(4);
    }

    public void Int64(long value)
    {
        BinaryPrimitives.WriteInt64LittleEndian(writer.GetSpan(8), value);
        writer.Advance(8);
    }

    public void Guid(Guid value)
    {
        value.TryWriteBytes(writer.GetSpan(16));
        writer.Advance(16);
    }

    public void String(string? value)
    {
        if (value is null)
        {
            Int32(-1);
            return;
        }

        var length = Encoding.UTF8.GetByteCount(value);
        Int32(length);
        Encoding.UTF8.GetBytes(value, writer.GetSpan(length));
        writer.Advance(length);
    }
}

/// <summary>Reads what <see cref="WireWriter"/> wrote; anything out of range is a <see cref="MalformedFrameException"/>.</summary>
internal ref struct WireReader(ReadOnlySpan<byte> span)
{
    private readonly ReadOnlySpan<byte> _span = span;
    private int _position;

    public readonly int Remaining => _span.Length - _position;

    public byte Byte() => Take(1)[0];

    public int Int32() => BinaryPrimitives.ReadInt32LittleEndian(Take(4));

    public long Int64() => BinaryPrimitives.ReadInt64LittleEndian(Take(8));

    public Guid Guid() => new(Take(16));

    public string? String()
    {
        var length = Int32();
        if (length == -1)
        {
            return null;
        }

        if (length < 0)
        {
            throw new MalformedFrameException($"a string length of {length}");
        }

        return Encoding.UTF8.GetString(Take(length));
    }

    /// <summary>Reads a string as <see cref="String()"/> does, reusing <paramref name="last"/>'s when the bytes are the same.</summary>
    public string? String(LastString last)
    {
        var length = Int32();
        if (length == -1)
        {
            return null;
        }

        if (length < 0)
        {
            throw new MalformedFrameException($"a string length of {length}");
        }

        return last.Get(Take(length));
    }

    public ReadOnlySpan<byte> Take(int count)
    {
        if (count < 0 || count > Remaining)
        {
            throw new MalformedFrameException($"a field of {count} bytes where {Remaining} remain");
        }

        var slice = _span.Slice(_position, count);
        _position += count;
        return slice;
    }
}
