using System.Collections.Concurrent;
using System.Threading.Channels;
using Grpc.Core;
using Patterns.PeerLinks.Wire;

namespace Patterns.PeerLinks.Links;

/// <summary>
/// The one writer of one stream. It drains, in this order, the latest cumulative acknowledgement, queued control
/// frames and a sequence, packing as many frames as fit into each gRPC message. The queues outlive a connection,
/// so what was not written goes out on the next one.
/// </summary>
/// <remarks>
/// A bulk writer (<paramref name="yieldEachMessage"/>) hands its thread back to the thread pool between two gRPC messages
/// when the first was written without waiting: while the link is saturated its writes rarely wait, and it would otherwise
/// keep a pool thread for as long as the queue holds data, with the control streams' work items queued behind it. A gRPC
/// message is at most <see cref="FrameBatch.MaxBytes"/>, so the writer holds a thread for one such message at a time.
/// </remarks>
internal sealed class LinkWriter(bool yieldEachMessage = false)
{
    private readonly ConcurrentQueue<byte[]> _control = new();
    private readonly Channel<bool> _signal = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });
    private long _ack = -1;

    public OutboundSequence? Sequence { get; set; }

    private long _bytesWritten;

    /// <summary>Gets the bytes of gRPC messages written so far (how much bulk work went ahead of a control frame, in the benchmark).</summary>
    public long BytesWritten => Volatile.Read(ref _bytesWritten);

    // 1 while a wake-up is pending (signalled and not yet taken by the writer): further wakes then cost one read, not
    // the channel's lock, however many senders and settlements queue frames meanwhile.
    private int _woken;

    public void Wake()
    {
        if (Volatile.Read(ref _woken) == 0 && Interlocked.Exchange(ref _woken, 1) == 0)
        {
            _signal.Writer.TryWrite(true);
        }
    }

    public void Enqueue(byte[] frame)
    {
        _control.Enqueue(frame);
        Wake();
    }

    /// <summary>Sends a cumulative acknowledgement; a later one replaces one not yet written.</summary>
    public void Acknowledge(long seq)
    {
        long current;
        do
        {
            current = Volatile.Read(ref _ack);
            if (current >= seq)
            {
                return;
            }
        }
        while (Interlocked.CompareExchange(ref _ack, seq, current) != current);

        Wake();
    }

    /// <summary>Forgets control frames meant for an earlier connection (their content is resent in full on the next one).</summary>
    public void ClearControl() => _control.Clear();

    public async Task RunAsync(IAsyncStreamWriter<FrameBatch> stream, CancellationToken cancellationToken)
    {
        var batch = FrameBatch.Rent();
        var lastAck = -1L;
        var ranOn = false;
        try
        {
            while (true)
            {
                // Taken before draining, so a frame queued after this point wakes the writer again.
                Interlocked.Exchange(ref _woken, 0);
                var ack = Volatile.Read(ref _ack);
                if (ack > lastAck)
                {
                    Append(batch, Frames.Int64Frame(FrameType.Ack, ack));
                    lastAck = ack;
                }

                while (_control.TryPeek(out var frame) && batch.Length + frame.Length <= FrameBatch.MaxBytes)
                {
                    _control.TryDequeue(out _);
                    Append(batch, frame);
                }

                Sequence?.Fill(batch);
                if (batch.Length == 0)
                {
                    ranOn = false;
                    await _signal.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                    continue;
                }

                if (yieldEachMessage && ranOn)
                {
                    // The previous message was written without waiting and this one follows it at once: the rest of
                    // the work goes behind what is queued on the pool (a lone message is written without a hop).
                    await FairShare.Yield();
                }

                var writing = stream.WriteAsync(batch, cancellationToken);
                ranOn = writing.IsCompleted;
                await writing.ConfigureAwait(false);
                Volatile.Write(ref _bytesWritten, _bytesWritten + batch.Length);
                batch.Length = 0;
            }
        }
        finally
        {
            batch.Return();
        }
    }

    private static void Append(FrameBatch batch, byte[] frame)
    {
        frame.CopyTo(batch.Buffer.AsSpan(batch.Length));
        batch.Length += frame.Length;
    }
}
