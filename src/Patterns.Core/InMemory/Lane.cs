using System.Runtime.InteropServices;
using System.Threading.Channels;
using System.Threading.Tasks.Sources;
using Patterns.Threading;
using Patterns.Messaging;

namespace Patterns.InMemory;

/// <summary>
/// A bounded buffer of envelopes written by any number of senders and read by exactly one worker.
/// </summary>
/// <remarks>
/// <para>
/// Senders append to an array under a spin gate. The worker takes everything buffered at once by swapping that
/// array for its spare one, then hands the envelopes to the handler without touching the gate again, so a busy
/// lane costs the worker one gate entry per batch instead of a lock per message, and senders and the worker
/// rarely contend.
/// </para>
/// <para>
/// The bound counts every envelope not yet handed to a handler: those buffered plus those left in the worker's
/// current batch. A sender that finds the lane full either fails (<see cref="TryWrite"/>) or waits for room
/// (<see cref="WriteAsync"/>); the worker wakes waiting senders as it hands envelopes out.
/// </para>
/// </remarks>
internal sealed class Lane : IValueTaskSource<bool>
{
    private const int InitialSize = 16;

    private readonly SpinGate _gate = new();
    private int _capacity;
    private Envelope[] _incoming;
    private int _incomingCount;
    private Envelope[] _spare = [];

    // The worker's current batch: its size (set under the gate) and how many of it were handed out. The latter is
    // written by the worker per message and read by senders only when the lane looks full, so it sits on a cache line
    // of its own, together with the flag the worker polls per message.
    private int _batchCount;
    private WorkerLine _worker;

    private bool _completed;
    private bool _readerWaiting;
    private bool _readerDone;
    private ManualResetValueTaskSourceCore<bool> _readerSignal = new() { RunContinuationsAsynchronously = true };
    private Queue<TaskCompletionSource>? _writers;
    private long _writersWoken;

    public Lane(int capacity, InMemorySubscription? owner)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _capacity = capacity;
        _incoming = new Envelope[Math.Min(capacity, InitialSize)];
        Owner = owner;
    }

    /// <summary>Gets or sets the subscription whose worker reads this lane; <see langword="null"/> while nobody consumes.</summary>
    public InMemorySubscription? Owner { get; set; }

    /// <summary>Gets how many times a waiting sender was woken (for tests).</summary>
    internal long WritersWoken => Interlocked.Read(ref _writersWoken);

    /// <summary>Gets a value indicating whether <see cref="Complete"/> was called: the lane accepts nothing more.</summary>
    public bool IsCompleted => Volatile.Read(ref _completed);

    /// <summary>
    /// Gets a value indicating whether nothing is buffered and the worker has finished everything it took: it is parked
    /// waiting for envelopes, or it has left for good.
    /// </summary>
    public bool IsIdle
    {
        get
        {
            _gate.Enter();
            var idle = _incomingCount == 0 && (_readerWaiting || _readerDone);
            _gate.Exit();
            return idle;
        }
    }

    /// <summary>
    /// For a drain that gives up on a worker stuck in a handler: the id of the envelope that handler holds, if any, and
    /// how many envelopes wait behind it (buffered, or left in the worker's batch). Read without the worker's help.
    /// </summary>
    public (Guid? InFlight, int Waiting) Abandon()
    {
        _gate.Enter();
        var handedOut = Volatile.Read(ref _worker.HandedOut);
        var batch = _spare;
        Guid? inFlight = handedOut > 0 && handedOut <= _batchCount && handedOut <= batch.Length ? batch[handedOut - 1].MessageId : null;
        var waiting = _incomingCount + Math.Max(0, _batchCount - handedOut);
        _gate.Exit();
        return (inFlight, waiting);
    }

    /// <summary>
    /// Changes the bound, for a lane whose queue is split anew among more workers. Envelopes already buffered stay (in
    /// order) even beyond a smaller bound; senders find room again once the worker has taken the lane below it.
    /// </summary>
    public void SetCapacity(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _gate.Enter();
        var grew = capacity > _capacity;
        _capacity = capacity;
        var writers = grew ? TakeWriters() : null;
        _gate.Exit();
        Release(writers);
    }

    /// <summary>Appends an envelope when there is room; returns <see langword="false"/> when the lane is full or completed.</summary>
    public bool TryWrite(in Envelope envelope)
    {
        _gate.Enter();
        if (_completed || !HasRoom())
        {
            _gate.Exit();
            return false;
        }

        AppendAndExit(envelope);
        return true;
    }

    /// <summary>Appends an envelope, waiting for room while the lane is full.</summary>
    /// <exception cref="ChannelClosedException">The lane was completed (its worker detached) before there was room.</exception>
    public async ValueTask WriteAsync(Envelope envelope, CancellationToken cancellationToken)
    {
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            _gate.Enter();
            if (_completed)
            {
                _gate.Exit();
                throw new ChannelClosedException();
            }

            if (HasRoom())
            {
                AppendAndExit(envelope);
                return;
            }

            var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            (_writers ??= new Queue<TaskCompletionSource>()).Enqueue(waiter);
            Volatile.Write(ref _worker.WritersWaiting, true);
            _gate.Exit();

            try
            {
                await waiter.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Woken just as it gave up: its turn goes to the next sender, or nobody would use the room it was woken for.
                if (!waiter.TrySetCanceled(cancellationToken))
                {
                    WakeWriters();
                }

                throw;
            }
        }
    }

    /// <summary>Stops accepting envelopes. What is buffered can still be read; waiting senders are released and fail.</summary>
    public void Complete()
    {
        _gate.Enter();
        _completed = true;
        var wake = _readerWaiting;
        _readerWaiting = false;
        var writers = TakeWriters(all: true);
        _gate.Exit();
        if (wake)
        {
            _readerSignal.SetResult(false);
        }

        Release(writers);
    }

    /// <summary>Drops everything buffered (for a lane nobody reads) and returns how many envelopes that was.</summary>
    public int Clear()
    {
        _gate.Enter();
        var count = _incomingCount;
        Array.Clear(_incoming, 0, count);
        _incomingCount = 0;
        var writers = TakeWriters(all: true);
        _gate.Exit();
        Release(writers);
        return count;
    }

    /// <summary>
    /// For the worker: takes every buffered envelope as one batch, in the order they were written. The previous
    /// batch (which the worker must have finished) becomes the spare buffer.
    /// </summary>
    public bool TryTake(out Envelope[] batch, out int count)
    {
        // The previous batch is finished: clear it outside the gate so it holds no references, then reuse it.
        var spare = _spare;
        if (_batchCount > 0)
        {
            Array.Clear(spare, 0, _batchCount);
        }

        _gate.Enter();
        count = _incomingCount;
        if (count == 0)
        {
            _batchCount = 0;
            _worker.HandedOut = 0;
            var idleWriters = TakeWriters();
            _gate.Exit();
            Release(idleWriters);
            batch = [];
            return false;
        }

        batch = _incoming;
        _incoming = spare.Length > 0 ? spare : new Envelope[Math.Min(_capacity, InitialSize)];
        _incomingCount = 0;
        _batchCount = count;
        _worker.HandedOut = 0;
        var writers = count < _capacity ? TakeWriters() : null;
        _gate.Exit();
        _spare = batch;
        Release(writers);
        return true;
    }

    /// <summary>For the worker: records that the first <paramref name="handedOut"/> envelopes of the batch went to the handler.</summary>
    public void MarkHandedOut(int handedOut)
    {
        Volatile.Write(ref _worker.HandedOut, handedOut);
        if (Volatile.Read(ref _worker.WritersWaiting))
        {
            WakeWriters();
        }
    }

    /// <summary>Wakes as many waiting senders as there is room for.</summary>
    private void WakeWriters()
    {
        _gate.Enter();
        var writers = HasRoom() ? TakeWriters() : null;
        _gate.Exit();
        Release(writers);
    }

    /// <summary>
    /// For the worker, after <see cref="TryTake"/> found nothing: completes with <see langword="true"/> when an envelope
    /// arrives, or <see langword="false"/> once the lane is completed and empty.
    /// </summary>
    public ValueTask<bool> WaitToReadAsync()
    {
        _gate.Enter();
        if (_incomingCount > 0)
        {
            _gate.Exit();
            return new ValueTask<bool>(true);
        }

        if (_completed)
        {
            _readerDone = true;
            _gate.Exit();
            return new ValueTask<bool>(false);
        }

        _readerSignal.Reset();
        _readerWaiting = true;
        var version = _readerSignal.Version;
        _gate.Exit();
        return new ValueTask<bool>(this, version);
    }

    bool IValueTaskSource<bool>.GetResult(short token) => _readerSignal.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<bool>.GetStatus(short token) => _readerSignal.GetStatus(token);

    void IValueTaskSource<bool>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _readerSignal.OnCompleted(continuation, state, token, flags);

    private void Release(List<TaskCompletionSource>? writers)
    {
        if (writers is null)
        {
            return;
        }

        var missed = false;
        foreach (var writer in writers)
        {
            if (writer.TrySetResult())
            {
                Interlocked.Increment(ref _writersWoken);
            }
            else
            {
                missed = true; // it gave up meanwhile: another sender gets its turn
            }
        }

        if (missed)
        {
            WakeWriters();
        }
    }

    // Under the gate.
    private bool HasRoom()
    {
        var pending = _incomingCount + _batchCount;
        return pending < _capacity || pending - Volatile.Read(ref _worker.HandedOut) < _capacity;
    }

    // Under the gate, after HasRoom: appends, leaves the gate, and wakes the worker if it was waiting.
    private void AppendAndExit(in Envelope envelope)
    {
        var items = _incoming;
        if (_incomingCount == items.Length)
        {
            var grown = new Envelope[(int)Math.Min(_capacity, (long)items.Length * 2)];
            Array.Copy(items, grown, _incomingCount);
            _incoming = items = grown;
        }

        items[_incomingCount++] = envelope;
        var wake = _readerWaiting;
        _readerWaiting = false;
        _gate.Exit();
        if (wake)
        {
            _readerSignal.SetResult(true);
        }
    }

    // Under the gate: hands the caller the waiting senders to release after leaving the gate, in the order they came: as
    // many as there is room for, or all of them (the lane completed or was cleared). Waking more than fit only sent the
    // rest back to wait, each with a new waiter: with thousands of senders waiting (10,000 workflows dispatching their
    // activities at once), every envelope handed out woke all of them, and the lane's cost grew with the square of the
    // senders waiting.
    private List<TaskCompletionSource>? TakeWriters(bool all = false)
    {
        if (_writers is not { Count: > 0 } writers)
        {
            return null;
        }

        var room = all ? int.MaxValue : Math.Max(1, _capacity - (_incomingCount + _batchCount - Volatile.Read(ref _worker.HandedOut)));
        List<TaskCompletionSource>? taken = null;
        while (room > 0 && writers.TryDequeue(out var writer))
        {
            if (!writer.Task.IsCompleted)
            {
                (taken ??= []).Add(writer);
                room--;
            }

            // Otherwise it gave up (cancelled) and leaves its place to the next.
        }

        if (writers.Count == 0)
        {
            _writers = null;
            Volatile.Write(ref _worker.WritersWaiting, false);
        }

        return taken;
    }

    /// <summary>The fields the worker writes or polls per message, padded so senders' writes never share their cache line.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 192)]
    private struct WorkerLine
    {
        [FieldOffset(64)]
        public int HandedOut;

        [FieldOffset(68)]
        public bool WritersWaiting;
    }
}
