using System.Buffers;

namespace Patterns.PeerLinks.Wire;

/// <summary>
/// Builds a <see cref="ReadOnlySequence{T}"/> over arrays of at most <see cref="MaxSegmentBytes"/> bytes, so that a large
/// message, sent or received, never needs an array on the large-object heap (85,000 bytes and up).
/// </summary>
internal sealed class SegmentChain
{
    /// <summary>The largest segment: below the large-object threshold.</summary>
    public const int MaxSegmentBytes = 64 * 1024;

    private Segment? _first;
    private Segment? _last;

    public long Length => _last is null ? 0 : _last.RunningIndex + _last.Memory.Length;

    public void Add(ReadOnlyMemory<byte> memory)
    {
        if (memory.IsEmpty)
        {
            return;
        }

        var segment = new Segment(memory, _last);
        _first ??= segment;
        _last = segment;
    }

    public ReadOnlySequence<byte> ToSequence() =>
        _first is null ? ReadOnlySequence<byte>.Empty : new ReadOnlySequence<byte>(_first, 0, _last!, _last!.Memory.Length);

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, Segment? previous)
        {
            Memory = memory;
            if (previous is not null)
            {
                RunningIndex = previous.RunningIndex + previous.Memory.Length;
                previous.Next = this;
            }
        }
    }
}

/// <summary>
/// An <see cref="IBufferWriter{T}"/> that writes into segments growing from 256 bytes to 64 KiB, for serializing a body
/// without one array as large as the body (a serializer that asks for a bigger span at once still gets one).
/// </summary>
internal sealed class SegmentWriter : IBufferWriter<byte>
{
    private const int FirstSegmentBytes = 256;

    // Created only when a second segment starts: most bodies fit in the first, which is handed on without a chain.
    private SegmentChain? _chain;
    private byte[] _current = [];
    private int _start;
    private int _used;

    /// <summary>Gets what was written so far.</summary>
    public ReadOnlySequence<byte> Written
    {
        get
        {
            if (_chain is null)
            {
                return _used == _start ? ReadOnlySequence<byte>.Empty : new ReadOnlySequence<byte>(_current.AsMemory(_start, _used - _start));
            }

            Seal();
            return _chain.ToSequence();
        }
    }

    public void Advance(int count)
    {
        if (count < 0 || _used + count > _current.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, $"Advanced past the {_current.Length - _used} bytes available.");
        }

        _used += count;
    }

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _current.AsMemory(_used);
    }

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _current.AsSpan(_used);
    }

    private void Ensure(int sizeHint)
    {
        var wanted = Math.Max(sizeHint, 1);
        if (_current.Length - _used >= wanted)
        {
            return;
        }

        Seal();
        var next = Math.Min(Math.Max(_current.Length * 2, FirstSegmentBytes), SegmentChain.MaxSegmentBytes);
        _current = new byte[Math.Max(next, wanted)];
        _start = 0;
        _used = 0;
    }

    /// <summary>Adds what was written since the last seal to the chain; later writes go on in the same array after it.</summary>
    private void Seal()
    {
        if (_used > _start)
        {
            (_chain ??= new SegmentChain()).Add(_current.AsMemory(_start, _used - _start));
            _start = _used;
        }
    }
}
