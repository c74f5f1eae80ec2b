using System.Buffers;
using System.Buffers.Binary;
using Patterns.PeerLinks.Wire;

namespace Patterns.PeerLinks.Links;

/// <summary>
/// One message queued on a link: a small head followed by a payload that is never copied into a bigger buffer: it stays
/// in the segments it came in (at most 64 KiB each when the link serialized it), and chunks are cut from them. The head
/// is encoded already (a byte array), or, for a plain acknowledgement's settlement, written only when its frame is cut
/// (<see cref="AckSettlement"/>: no array per settlement).
/// </summary>
internal class OutEntry
{
    private readonly byte[]? _head;
    private readonly long _ackedSeq;

    public OutEntry(FrameType type, long subscription, byte[] head, ReadOnlySequence<byte> payload)
    {
        Type = type;
        Subscription = subscription;
        _head = head;
        HeadLength = head.Length;
        Payload = payload;
        Total = head.Length + (int)payload.Length;
    }

    /// <summary>An entry whose head a subclass writes (<see cref="CopyHead"/>) and sizes.</summary>
    protected OutEntry(FrameType type, int headLength)
    {
        Type = type;
        HeadLength = headLength;
        Payload = ReadOnlySequence<byte>.Empty;
        Total = headLength;
    }

    private OutEntry(long ackedSeq)
    {
        Type = FrameType.Settlement;
        _ackedSeq = ackedSeq;
        HeadLength = Frames.AckSettlementHeadBytes;
        Payload = ReadOnlySequence<byte>.Empty;
        Total = Frames.AckSettlementHeadBytes;
    }

    public long Seq { get; set; }

    public FrameType Type { get; }

    public long Subscription { get; }

    public int HeadLength { get; protected set; }

    public ReadOnlySequence<byte> Payload { get; }

    /// <summary>Gets the head's and the payload's bytes together (fixed when the entry is made: read on every chunk and acknowledgement).</summary>
    public int Total { get; protected set; }

    /// <summary>Gets or sets a value indicating whether a chunk of it was written (its bytes may be on the wire: they must not change).</summary>
    public bool Written { get; set; }

    /// <summary>The settlement of data frame <paramref name="dataSeq"/> as a plain acknowledgement (the common case).</summary>
    public static OutEntry AckSettlement(long dataSeq) => new(dataSeq);

    /// <summary>Copies the head's bytes from <paramref name="offset"/> into <paramref name="target"/> (as many as it holds).</summary>
    public virtual void CopyHead(int offset, Span<byte> target)
    {
        if (_head is { } head)
        {
            head.AsSpan(offset, target.Length).CopyTo(target);
            return;
        }

        Span<byte> written = stackalloc byte[Frames.AckSettlementHeadBytes];
        Frames.WriteAckSettlementHead(written, _ackedSeq);
        written.Slice(offset, target.Length).CopyTo(target);
    }
}

/// <summary>
/// Plain acknowledgements of many delivered messages in one <see cref="FrameType.Settlements"/> entry (protocol 2): the
/// settling side adds to the newest one until a chunk of it is written or it holds <see cref="FrameLimits.MaxAcksPerFrame"/>,
/// so settlements queued by several workers while the writer is busy go out as one frame.
/// </summary>
internal sealed class AckRun : OutEntry
{
    // Small at first: at low load most runs hold one acknowledgement; under load the array doubles as acknowledgements join.
    private long[] _seqs = new long[4];
    private int _count;

    public AckRun(long dataSeq)
        : base(FrameType.Settlements, Frames.AckRunPrefixBytes + 8)
    {
        _seqs[0] = dataSeq;
        _count = 1;
    }

    public int Count => _count;

    /// <summary>Adds one acknowledgement (only while <see cref="OutEntry.Written"/> is false, under the sequence's lock).</summary>
    public void Add(long dataSeq)
    {
        if (_count == _seqs.Length)
        {
            Array.Resize(ref _seqs, Math.Min(_seqs.Length * 2, FrameLimits.MaxAcksPerFrame));
        }

        _seqs[_count++] = dataSeq;
        HeadLength += 8;
        Total += 8;
    }

    public override void CopyHead(int offset, Span<byte> target)
    {
        if (offset == 0 && target.Length == HeadLength)
        {
            Frames.AckRunHead(target, _seqs.AsSpan(0, _count));
            return;
        }

        // Never cut (it is smaller than a chunk); kept correct for any cut all the same.
        var whole = new byte[HeadLength];
        Frames.AckRunHead(whole, _seqs.AsSpan(0, _count));
        whole.AsSpan(offset, target.Length).CopyTo(target);
    }
}

/// <summary>
/// The sequenced frames one side of a link sends: the send queue and the replay buffer in one structure,
/// bounded in bytes. A sender waits while the unacknowledged bytes exceed the capacity (a message larger than
/// the capacity is admitted alone). Entries stay until the other side acknowledges them, so a reconnect replays
/// everything after what it last received: nothing lost, and the receiver drops what it saw twice.
/// </summary>
internal sealed class OutboundSequence(long capacity, Action wakeWriter, Action<OutEntry>? onAssigned = null)
{
    private readonly Lock _gate = new();
    private readonly LinkedList<SpaceWaiter> _waiters = new();
    private OutEntry[] _ring = new OutEntry[64];
    private int _head;
    private int _count;
    private long _bytes;
    private long _nextSeq = 1;
    private long _cursorSeq = 1;
    private int _cursorOffset;
    private long _peakBytes;
    private Exception? _closed;
    private TaskCompletionSource? _drained;
    private AckRun? _openRun;

    public long Capacity => capacity;

    /// <summary>Gets the most bytes ever held at once: what back-pressure promises to bound.</summary>
    public long PeakBytes
    {
        get
        {
            lock (_gate)
            {
                return _peakBytes;
            }
        }
    }

    /// <summary>Gets the bytes held (queued or sent but unacknowledged).</summary>
    public long Bytes
    {
        get
        {
            lock (_gate)
            {
                return _bytes;
            }
        }
    }

    /// <summary>Gets the last sequence number handed out (0 while none is).</summary>
    public long LastAssigned
    {
        get
        {
            lock (_gate)
            {
                return _nextSeq - 1;
            }
        }
    }

    public bool HasUnsent
    {
        get
        {
            lock (_gate)
            {
                return _count > 0 && _cursorSeq < _nextSeq;
            }
        }
    }

    /// <summary>Returns a task that completes once every entry queued so far is acknowledged (or dropped by a reset).</summary>
    public Task WhenDrained()
    {
        lock (_gate)
        {
            return _count == 0 ? Task.CompletedTask : (_drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }
    }

    /// <summary>Queues an entry, waiting for space in bytes.</summary>
    public ValueTask AppendAsync(OutEntry entry, CancellationToken cancellationToken)
    {
        SpaceWaiter waiter;
        lock (_gate)
        {
            if (_closed is { } reason)
            {
                return ValueTask.FromException(reason);
            }

            if (_waiters.Count == 0 && Fits(entry.Total))
            {
                Add(entry);
                wakeWriter();
                return default;
            }

            waiter = new SpaceWaiter(entry);
            waiter.Node = _waiters.AddLast(waiter);
        }

        return new ValueTask(WaitAsync(waiter, cancellationToken));
    }

    /// <summary>Queues an entry without waiting (for frames bounded elsewhere, such as settlements bounded by credits).</summary>
    public void Append(OutEntry entry)
    {
        lock (_gate)
        {
            if (_closed is not null)
            {
                return;
            }

            Add(entry);
        }

        wakeWriter();
    }

    /// <summary>Queues entries without waiting, under one lock and with one wake-up (settlements of a batch of deliveries).</summary>
    public void AppendRange(List<OutEntry> entries)
    {
        lock (_gate)
        {
            if (_closed is not null)
            {
                return;
            }

            foreach (var entry in entries)
            {
                Add(entry);
            }
        }

        wakeWriter();
    }

    /// <summary>
    /// Queues plain acknowledgements of the data messages <paramref name="dataSeqs"/> without waiting (protocol 2): added
    /// to the last <see cref="AckRun"/> queued while no chunk of it is written and it has room (other entries may follow
    /// it: the order of settlements does not matter, each names its message), else to new ones.
    /// </summary>
    public void AppendAcks(ReadOnlySpan<long> dataSeqs)
    {
        if (dataSeqs.IsEmpty)
        {
            return;
        }

        lock (_gate)
        {
            if (_closed is not null)
            {
                return;
            }

            foreach (var seq in dataSeqs)
            {
                if (_openRun is not { Written: false } run || run.Count == FrameLimits.MaxAcksPerFrame)
                {
                    _openRun = new AckRun(seq);
                    Add(_openRun);
                    continue;
                }

                run.Add(seq);
                _bytes += 8;
                _peakBytes = Math.Max(_peakBytes, _bytes);
            }
        }

        wakeWriter();
    }

    /// <summary>The other side has everything up to <paramref name="seq"/>: drop it and let waiting senders in.</summary>
    /// <exception cref="MalformedFrameException">
    /// <paramref name="seq"/> is beyond the last sequence number handed out: a peer that says it received what was never
    /// sent breaks the protocol. Nothing changes (taken as said, it would drop entries and move the cursor past frames
    /// queued later, which would then never be written), and the caller closes the link.
    /// </exception>
    public void Ack(long seq)
    {
        List<SpaceWaiter>? granted = null;
        TaskCompletionSource? drained = null;
        lock (_gate)
        {
            if (seq >= _nextSeq)
            {
                throw new MalformedFrameException($"an acknowledgement of sequence number {seq}, but only up to {_nextSeq - 1} was sent");
            }

            while (_count > 0 && _ring[_head].Seq <= seq)
            {
                _bytes -= _ring[_head].Total;
                _ring[_head] = null!;
                _head = (_head + 1) % _ring.Length;
                _count--;
            }

            if (_cursorSeq <= seq)
            {
                _cursorSeq = seq + 1;
                _cursorOffset = 0;
            }

            while (_waiters.First is { } first && Fits(first.Value.Entry.Total))
            {
                _waiters.RemoveFirst();
                Add(first.Value.Entry);
                (granted ??= []).Add(first.Value);
            }

            if (_count == 0)
            {
                (drained, _drained) = (_drained, null);
            }
        }

        drained?.TrySetResult();
        if (granted is not null)
        {
            foreach (var waiter in granted)
            {
                waiter.Completion.TrySetResult();
            }

            wakeWriter();
        }
    }

    /// <summary>A new connection: send again everything after <paramref name="lastReceived"/>.</summary>
    public void Rewind(long lastReceived)
    {
        Ack(lastReceived);
        lock (_gate)
        {
            _cursorSeq = lastReceived + 1;
            _cursorOffset = 0;
        }

        wakeWriter();
    }

    /// <summary>
    /// The other side lost the session: every entry is dropped and handed back; numbering starts again. The senders
    /// waiting for room fail with <paramref name="failure"/>: they belong to the lost session, and admitted into the new
    /// numbering their entries could be sent on the next session (to a subscription that took the id meanwhile).
    /// </summary>
    public List<OutEntry> Reset(Exception failure)
    {
        var dropped = new List<OutEntry>();
        List<SpaceWaiter> waiting;
        TaskCompletionSource? drained;
        lock (_gate)
        {
            for (var i = 0; i < _count; i++)
            {
                dropped.Add(_ring[(_head + i) % _ring.Length]);
            }

            Array.Clear(_ring);
            _openRun = null;
            _head = 0;
            _count = 0;
            _bytes = 0;
            _nextSeq = 1;
            _cursorSeq = 1;
            _cursorOffset = 0;
            waiting = [.. _waiters];
            _waiters.Clear();
            (drained, _drained) = (_drained, null);
        }

        drained?.TrySetResult();
        foreach (var waiter in waiting)
        {
            waiter.Completion.TrySetException(failure);
        }

        wakeWriter();
        return dropped;
    }

    /// <summary>Closes the sequence: waiting and later senders fail with <paramref name="reason"/>.</summary>
    public List<OutEntry> Close(Exception reason)
    {
        lock (_gate)
        {
            _closed = reason;
        }

        return Reset(reason);
    }

    /// <summary>Writes frames from the cursor into <paramref name="batch"/> until it is full or nothing is left.</summary>
    public void Fill(FrameBatch batch)
    {
        lock (_gate)
        {
            while (_count > 0 && _cursorSeq < _nextSeq)
            {
                var index = (int)(_cursorSeq - _ring[_head].Seq);
                var entry = _ring[(_head + index) % _ring.Length];
                var space = FrameBatch.MaxBytes - batch.Length - FrameLimits.FrameHeaderBytes - FrameLimits.SequencedHeaderBytes;
                var remaining = entry.Total - _cursorOffset;
                var chunk = Math.Min(remaining, FrameLimits.MaxChunkBytes);
                if (chunk > space)
                {
                    // The next batch starts empty and always has room for a whole chunk; the first chunk carries the whole head.
                    return;
                }

                WriteChunk(batch, entry, _cursorOffset, chunk);
                entry.Written = true;
                _cursorOffset += chunk;
                if (_cursorOffset == entry.Total)
                {
                    _cursorSeq++;
                    _cursorOffset = 0;
                }
            }
        }
    }

    private static void WriteChunk(FrameBatch batch, OutEntry entry, int offset, int length)
    {
        var span = batch.Buffer.AsSpan(batch.Length);
        span[0] = (byte)entry.Type;
        BinaryPrimitives.WriteInt32LittleEndian(span[1..], FrameLimits.SequencedHeaderBytes + length);
        BinaryPrimitives.WriteInt64LittleEndian(span[5..], entry.Seq);
        BinaryPrimitives.WriteInt64LittleEndian(span[13..], entry.Subscription);
        BinaryPrimitives.WriteInt32LittleEndian(span[21..], entry.Total);
        BinaryPrimitives.WriteInt32LittleEndian(span[25..], offset);
        var target = span.Slice(FrameLimits.FrameHeaderBytes + FrameLimits.SequencedHeaderBytes, length);
        var headLength = entry.HeadLength;
        var written = 0;
        if (offset < headLength)
        {
            var fromHead = Math.Min(headLength - offset, length);
            entry.CopyHead(offset, target[..fromHead]);
            written = fromHead;
        }

        if (written < length)
        {
            var payloadOffset = offset + written - headLength;
            entry.Payload.Slice(payloadOffset, length - written).CopyTo(target[written..]);
        }

        batch.Length += FrameLimits.FrameHeaderBytes + FrameLimits.SequencedHeaderBytes + length;
    }

    private bool Fits(int size) => _bytes == 0 || _bytes + size <= capacity;

    private void Add(OutEntry entry)
    {
        if (_count == _ring.Length)
        {
            var bigger = new OutEntry[_ring.Length * 2];
            for (var i = 0; i < _count; i++)
            {
                bigger[i] = _ring[(_head + i) % _ring.Length];
            }

            _ring = bigger;
            _head = 0;
        }

        entry.Seq = _nextSeq++;
        onAssigned?.Invoke(entry);
        _ring[(_head + _count) % _ring.Length] = entry;
        _count++;
        _bytes += entry.Total;
        _peakBytes = Math.Max(_peakBytes, _bytes);
    }

    private async Task WaitAsync(SpaceWaiter waiter, CancellationToken cancellationToken)
    {
        using (cancellationToken.UnsafeRegister(
            static s =>
            {
                var (sequence, w) = ((OutboundSequence, SpaceWaiter))s!;
                sequence.Cancel(w);
            },
            (this, waiter)))
        {
            await waiter.Completion.Task.ConfigureAwait(false);
        }
    }

    private void Cancel(SpaceWaiter waiter)
    {
        lock (_gate)
        {
            if (waiter.Node?.List is null)
            {
                return;
            }

            _waiters.Remove(waiter.Node);
        }

        waiter.Completion.TrySetCanceled();
    }

    private sealed class SpaceWaiter(OutEntry entry)
    {
        public OutEntry Entry { get; } = entry;

        public TaskCompletionSource Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public LinkedListNode<SpaceWaiter>? Node { get; set; }
    }
}
