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
/// A bulk writer (<see cref="ForBulk"/>) hands its thread back to the thread pool before a gRPC message that follows,
/// without a wait in between, one written without waiting: while the link is saturated its writes rarely wait, and it
/// would otherwise keep a pool thread for as long as the queue holds data, with the control streams' work items queued
/// behind it. A gRPC message is at most <see cref="FrameBatch.MaxBytes"/>, so the writer holds a thread for one such
/// message at a time. A lone message (nothing queued behind it) is written without a hand-back.
/// </remarks>
internal sealed class LinkWriter
{
    private readonly ConcurrentQueue<byte[]> _control = new();
    private readonly Channel<bool> _signal = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });
    private long _ack = -1;

    private readonly bool _yieldEachMessage;

    // A traced probe's ping or pong in the gRPC message being built (ControlTrace; the benchmark's diagnostic mode).
    private int _tracedHop = -1;
    private long _tracedStamp;

    private LinkWriter(bool yieldEachMessage) => _yieldEachMessage = yieldEachMessage;

    /// <summary>Gets whether this writer hands its thread back between back-to-back gRPC messages (a bulk writer).</summary>
    public bool YieldsEachMessage => _yieldEachMessage;

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

    /// <summary>A writer of a control stream: its frames are few and small, and it writes them without handing its thread back.</summary>
    public static LinkWriter ForControl() => new(yieldEachMessage: false);

    /// <summary>A writer of a bulk stream: it hands its thread back between back-to-back gRPC messages (see the remarks).</summary>
    public static LinkWriter ForBulk() => new(yieldEachMessage: true);

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

    /// <summary>
    /// Forgets the acknowledgement of a session that is over: the next session numbers its frames from 1 again, and its
    /// first connection must not carry an acknowledgement of the old numbers (the peer, having sent the new session
    /// nothing or less, closes such a link as malformed; had it sent as much, the acknowledgement would drop frames the
    /// new session never delivered). Only while no connection runs (the writer is not running).
    /// </summary>
    public void ResetAcknowledgement() => Volatile.Write(ref _ack, -1);

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
                Drain(batch, ref lastAck);
                if (batch.Length == 0)
                {
                    var waking = _signal.Reader.ReadAsync(cancellationToken);
                    if (!waking.IsCompleted)
                    {
                        // The writer waits for work: the next message does not follow the last one at once. (A wake-up
                        // already pending, for frames the last drain took, is no wait and keeps the run going.)
                        ranOn = false;
                    }

                    await waking.ConfigureAwait(false);
                    continue;
                }

                if (ranOn)
                {
                    // The previous message was written without waiting and this one follows it at once: the rest of
                    // the work goes behind what is queued on the pool (a lone message is written without a hop), and
                    // what was queued for this stream meanwhile joins this message.
                    await FairShare.Yield();
                    Interlocked.Exchange(ref _woken, 0);
                    Drain(batch, ref lastAck);
                }

                var writing = stream.WriteAsync(batch, cancellationToken);
                ranOn = _yieldEachMessage && writing.IsCompleted;
                await writing.ConfigureAwait(false);
                if (ControlTrace.Enabled)
                {
                    TraceWritten();
                }

                Volatile.Write(ref _bytesWritten, _bytesWritten + batch.Length);
                batch.Length = 0;
            }
        }
        finally
        {
            batch.Return();
        }
    }

    /// <summary>Adds to <paramref name="batch"/>, as far as it has room, the latest acknowledgement, queued control frames and the sequence.</summary>
    private void Drain(FrameBatch batch, ref long lastAck)
    {
        var ack = Volatile.Read(ref _ack);
        if (ack > lastAck && batch.Length + FrameLimits.FrameHeaderBytes + sizeof(long) <= FrameBatch.MaxBytes)
        {
            Append(batch, Frames.Int64Frame(FrameType.Ack, ack));
            lastAck = ack;
        }

        while (_control.TryPeek(out var frame) && batch.Length + frame.Length <= FrameBatch.MaxBytes)
        {
            _control.TryDequeue(out _);
            Append(batch, frame);
            if (ControlTrace.Enabled)
            {
                TraceTaken(frame);
            }
        }

        Sequence?.Fill(batch);
    }

    // The traced probe's ping or pong went into the gRPC message being built (heartbeats and other frames do not count).
    private void TraceTaken(byte[] frame)
    {
        if (ControlTrace.Taken(frame, out var stamp) is var hop and >= 0)
        {
            _tracedHop = hop;
            _tracedStamp = stamp;
        }
    }

    // The gRPC message that carried the traced probe's ping or pong has been written.
    private void TraceWritten()
    {
        if (_tracedHop >= 0)
        {
            ControlTrace.Mark(_tracedHop + 1, _tracedStamp);
            _tracedHop = -1;
        }
    }

    private static void Append(FrameBatch batch, byte[] frame)
    {
        frame.CopyTo(batch.Buffer.AsSpan(batch.Length));
        batch.Length += frame.Length;
    }
}
