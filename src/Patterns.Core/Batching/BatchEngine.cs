using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.Resilience;
using Patterns.Telemetry;
using Patterns.Threading;
using Patterns.Transport;
using Polly;

namespace Patterns.Batching;

/// <summary>What happened to an add.</summary>
internal enum AddStatus
{
    Added,
    Full,
    Completed,
}

/// <summary>
/// The batching machinery shared by in-process batchers and transport batch consumers. Producers append to the
/// open batch under one lock (no allocation per item); a full batch is handed to a handler worker through an
/// unbounded channel, which stays bounded because the batcher never holds more than its capacity of items. Batches
/// reuse pooled buffers, so a batcher in steady state allocates nothing per batch either.
/// </summary>
/// <remarks>
/// Handler workers never take the producers' lock for a handled batch: they count what they freed on counters of
/// their own (<see cref="ReleaseCounters"/>), give the buffer back through a lock-free list, and signal a producer
/// waiting for space or a flush waiter only when one exists. Producers hold the number of items they added and a
/// cached limit (released + capacity) under the lock, and read the workers' counter only when they reach that
/// limit. With one handler worker, batches are handled in hand-off order, so "every batch up to sequence n is
/// handled" is the count of handled batches; with several, a flush is tracked under the lock as before.
/// </remarks>
internal abstract class BatchEngine<T> : Batcher<T>
{
    /// <summary>How many times an idle worker spins (see <see cref="SpinForNextBatch"/>) before it parks.</summary>
    private const int WorkerSpins = 20;

    private static readonly bool SpinBeforeParking = Environment.ProcessorCount > 1;

    private readonly int _maxCount;
    private readonly long _maxSize;
    private readonly bool _hasMaxSize;
    private readonly bool _hasMaxAge;
    private readonly long _maxAgeTimestamp;
    private readonly int _capacity;
    private readonly BatchFullMode _fullMode;
    private readonly int _workers;
    private readonly bool _workerPerKey;
    private readonly bool _tracked;
    private readonly bool _simple;
    private readonly BatchKeyIndex<T>? _keys;
    private readonly string _name;
    private readonly Channel<BatchBuffer<T>>[] _channels;
    private readonly Task _completion;
    private readonly CancellationTokenSource _stop = new();
    private readonly ResiliencePipeline? _pipeline;
    private readonly bool _retryOnly;
    private readonly int _poolLimit;
    private readonly bool _inOrder;
    private readonly TagList _tags;
    private BatchBuffer<T>? _open;
    private ITimer? _timer;
    private long _timerDue = long.MaxValue;

    // Producers' side, under the gate: items added so far and the most that may be added before the workers'
    // counter must be read again (released + capacity; long.MinValue once completing).
    private long _added;
    private long _addLimit;

    // Workers' side: what they handled, on cache lines of their own.
    private ReleaseCounters _released;

    // Buffers for new batches: _free under the gate, _returned pushed lock-free by workers, _pooled counts both.
    private BatchBuffer<T>? _free;
    private BatchBuffer<T>? _returned;
    private int _pooled;

    // Set by a producer that waits for space (under the gate); taken and completed by the worker that frees space.
    private TaskCompletionSource? _spaceSignal;
    private List<(long Target, TaskCompletionSource Signal)>? _flushWaiters;
    private int _flushPending;
    private HashSet<long>? _doneAhead;
    private long _handedOff;
    private long _lowestIncomplete = 1;
    private bool _completing;
    private bool _draining;
    private bool _drainFlushScheduled;
    private CancellationTokenRegistration _drainRegistration;

    protected BatchEngine(BatchOptions options, BatchKeyIndex<T>? keys, bool tracked, TimeProvider timeProvider, ILogger logger, string name, string system)
    {
        _maxCount = options.MaxCount;
        _hasMaxSize = options.MaxSize is not null;
        _maxSize = options.MaxSize ?? long.MaxValue;
        _hasMaxAge = options.MaxAge != Timeout.InfiniteTimeSpan;
        _maxAgeTimestamp = _hasMaxAge ? (long)Math.Ceiling(options.MaxAge.Ticks * (double)timeProvider.TimestampFrequency / TimeSpan.TicksPerSecond) : long.MaxValue;
        _capacity = options.Capacity;
        _fullMode = options.FullMode;
        _workers = options.HandlerConcurrency;
        _keys = keys;
        _tracked = tracked;
        _simple = keys is null && !tracked && !_hasMaxSize;
        _name = name;
        Time = timeProvider;
        Logger = logger;
        _tags = PatternsTelemetry.Tags(system, name);
        _poolLimit = (_capacity / _maxCount) + _workers + 2;
        _addLimit = _capacity;
        _inOrder = _workers == 1;

        // With several workers a handled batch takes the gate (flush tracking), which would end a bias every time.
        Gate = new BiasedGate(biasable: _inOrder);

        var tags = _tags;
        _pipeline = PipelineFactory.Create(options, timeProvider, args =>
        {
            PatternsTelemetry.Retried.Add(1, tags);
            BatchingLog.Retrying(logger, args.Outcome.Exception, name, args.AttemptNumber + 1, -1, args.RetryDelay);
        });
        _retryOnly = _pipeline is not null && options.Retry is not null && options.CircuitBreaker is null
            && options.AttemptTimeout is null && options.MaxConcurrentCalls is null && options.ConfigurePipeline is null;

        // One key's batches must go to one worker so they are handled in order; without keys the workers share a queue.
        _workerPerKey = keys is not null && _workers > 1;
        _channels = new Channel<BatchBuffer<T>>[_workerPerKey ? _workers : 1];
        for (var i = 0; i < _channels.Length; i++)
        {
            _channels[i] = Channel.CreateUnbounded<BatchBuffer<T>>(new UnboundedChannelOptions
            {
                SingleReader = _workerPerKey || _workers == 1,
                SingleWriter = true, // every write happens under the batcher's lock
            });
        }

        var tasks = new Task[_workers];
        for (var i = 0; i < tasks.Length; i++)
        {
            var reader = _channels[_workerPerKey ? i : 0].Reader;
            tasks[i] = Task.Run(() => RunWorkerAsync(reader));
        }

        _completion = Task.WhenAll(tasks);
        _completion.ContinueWith(static (_, s) => ((BatchEngine<T>)s!)._drainRegistration.Dispose(), this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    public sealed override string Name => _name;

    public sealed override int Count
    {
        get
        {
            // Released first: it never runs ahead of what was added, so the difference is never negative.
            var released = Volatile.Read(ref _released.Items);
            return (int)Math.Max(0, Volatile.Read(ref _added) - released);
        }
    }

    public sealed override int Capacity => _capacity;

    public sealed override Task Completion => _completion;

    internal BiasedGate Gate { get; }

    internal int Workers => _workerPerKey ? _workers : 1;

    internal BatchFullMode FullMode => _fullMode;

    protected TimeProvider Time { get; }

    protected ILogger Logger { get; }

    protected CancellationToken StopToken => _stop.Token;

    public sealed override ValueTask<bool> AddAsync(T item, CancellationToken cancellationToken = default)
    {
        if (_simple)
        {
            // The common case inline: no key, no size, room in the open batch and in the batcher.
            var gate = Gate;
            var owner = gate.EnterAsProducer();
            var open = _open;

            // _addLimit is long.MinValue once completing, so one comparison covers capacity and completion.
            if (open is not null && _added < _addLimit && open.TryAppend(item))
            {
                _added++;
                if (open.Count >= _maxCount)
                {
                    HandOffLocked(open);
                    _open = null;
                }

                gate.Exit(owner);
                return new ValueTask<bool>(true);
            }

            gate.Exit(owner);
        }

        return AddCoreAsync(item, SizeOf(item), default, null, cancellationToken);
    }

    public sealed override bool TryAdd(T item)
    {
        var size = SizeOf(item);
        if (_keys is not null)
        {
            return _keys.TryAdd(this, item, size, default, null);
        }

        var owner = Gate.EnterAsProducer();
        try
        {
            if (CheckLocked() != AddStatus.Added)
            {
                return false;
            }

            AppendLocked(ref _open, null, 0, item, size, default, null);
            return true;
        }
        finally
        {
            Gate.Exit(owner);
        }
    }

    public sealed override Task FlushAsync(CancellationToken cancellationToken = default)
    {
        TaskCompletionSource signal;
        Gate.Enter();
        try
        {
            HandOffAllOpenLocked();
            var target = _handedOff;
            if (target <= HandledThroughLocked())
            {
                return Task.CompletedTask;
            }

            signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            (_flushWaiters ??= []).Add((target, signal));
            if (_inOrder)
            {
                // The worker reads the flag after counting a handled batch; the full fence here and the re-read
                // below mean that either it sees the flag or this sees its count.
                Interlocked.Exchange(ref _flushPending, 1);
                CompleteFlushWaitersLocked(Volatile.Read(ref _released.Batches))?.ForEach(static s => s.TrySetResult());
            }
        }
        finally
        {
            Gate.Exit();
        }

        return signal.Task.WaitAsync(cancellationToken);
    }

    public sealed override Task CompleteAsync(CancellationToken drainDeadline = default)
    {
        TaskCompletionSource? waiting = null;
        Gate.Enter();
        try
        {
            if (!_completing)
            {
                _completing = true;
                BatchingLog.Completing(Logger, _name, Count);
                HandOffAllOpenLocked();
                foreach (var channel in _channels)
                {
                    channel.Writer.TryComplete();
                }

                _timer?.Dispose();
                _timer = null;
                _timerDue = long.MaxValue;
                _addLimit = long.MinValue;
                waiting = Interlocked.Exchange(ref _spaceSignal, null);
            }
        }
        finally
        {
            Gate.Exit();
        }

        // Producers waiting for space wake up, find the batcher completed and throw.
        waiting?.TrySetResult();
        if (_completion.IsCompleted)
        {
            return _completion;
        }

        return drainDeadline.CanBeCanceled ? WaitWithDeadlineAsync(drainDeadline) : _completion;
    }

    /// <summary>
    /// Transport consumers, while their subscription drains on shutdown: every batch that opens is flushed as soon as
    /// the thread pool gets to it (the deliveries still to come may never fill it), and handlers see a cancelled
    /// token once <paramref name="drainDeadline"/> passes.
    /// </summary>
    internal void BeginDrain(CancellationToken drainDeadline)
    {
        _drainRegistration = drainDeadline.UnsafeRegister(static s => ((CancellationTokenSource)s!).Cancel(), _stop);
        var owner = Gate.EnterAsProducer();
        try
        {
            _draining = true;
            ScheduleDrainFlushLocked();
        }
        finally
        {
            Gate.Exit(owner);
        }
    }

    /// <summary>The item's size for <see cref="BatchOptions.MaxSize"/>.</summary>
    internal abstract long SizeOf(T item);

    /// <summary>Adds one item (with its envelope and settlement ticket for transport consumers).</summary>
    internal ValueTask<bool> AddCoreAsync(T item, long size, in Envelope envelope, object? ticket, CancellationToken cancellationToken)
    {
        if (_keys is not null)
        {
            return _keys.AddAsync(this, item, size, envelope, ticket, cancellationToken);
        }

        AddStatus status;
        Gate.Enter();
        try
        {
            status = CheckLocked();
            if (status == AddStatus.Added)
            {
                AppendLocked(ref _open, null, 0, item, size, envelope, ticket);
                return new ValueTask<bool>(true);
            }
        }
        finally
        {
            Gate.Exit();
        }

        if (status == AddStatus.Completed)
        {
            ThrowCompleted();
        }

        return _fullMode == BatchFullMode.Wait ? AddSlowAsync(item, size, envelope, ticket, cancellationToken) : new ValueTask<bool>(RejectOrDrop());
    }

    /// <summary>Whether one more item fits; under pressure with nothing being handled, flushes the open batches so waiters can progress.</summary>
    internal AddStatus CheckLocked()
    {
        if (_completing)
        {
            return AddStatus.Completed;
        }

        if (HasSpaceLocked())
        {
            return AddStatus.Added;
        }

        if (_handedOff == Volatile.Read(ref _released.Batches))
        {
            // Only open batches hold the capacity (many keys, none full): flush them, or nothing would ever free space.
            HandOffAllOpenLocked();
        }

        return AddStatus.Full;
    }

    /// <summary>Appends to the batch in <paramref name="slot"/>, opening one when needed and handing it off when a limit is reached (<paramref name="slot"/> is then cleared).</summary>
    internal void AppendLocked(ref BatchBuffer<T>? slot, object? key, int worker, T item, long size, in Envelope envelope, object? ticket)
    {
        var buffer = slot;
        if (buffer is null)
        {
            buffer = slot = OpenLocked(key, worker);
        }
        else if (_hasMaxSize && buffer.Size + size > _maxSize)
        {
            HandOffLocked(buffer);
            buffer = slot = OpenLocked(key, worker);
        }

        buffer.Append(item, size, _maxCount, _tracked, envelope, ticket);
        _added++;
        if (buffer.Count >= _maxCount || (_hasMaxSize && buffer.Size >= _maxSize))
        {
            HandOffLocked(buffer);
            slot = null;
        }
    }

    internal void HandOffLocked(BatchBuffer<T> buffer)
    {
        buffer.Sequence = ++_handedOff;
        _channels[buffer.Worker].Writer.TryWrite(buffer);
    }

    internal bool IsExpired(BatchBuffer<T> buffer, long now) => now - buffer.OpenedAt >= _maxAgeTimestamp;

    internal long DueAt(BatchBuffer<T> buffer) => buffer.OpenedAt + _maxAgeTimestamp;

    /// <summary>Waits until the batcher may have space; throws when it completes meanwhile.</summary>
    internal ValueTask WaitForSpaceAsync(CancellationToken cancellationToken)
    {
        Task signal;
        var owner = Gate.EnterAsProducer();
        try
        {
            if (_completing)
            {
                ThrowCompleted();
            }

            if (HasSpaceLocked())
            {
                return default;
            }

            var source = _spaceSignal;
            if (source is null)
            {
                source = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                Interlocked.Exchange(ref _spaceSignal, source);
            }
            else
            {
                Interlocked.MemoryBarrier();
            }

            // A worker that freed space before the signal was visible did not see it: look again after the fence.
            if (HasSpaceLocked())
            {
                return default;
            }

            signal = source.Task;
        }
        finally
        {
            Gate.Exit(owner);
        }

        return new ValueTask(cancellationToken.CanBeCanceled ? signal.WaitAsync(cancellationToken) : signal);
    }

    /// <summary>Applies a drop or reject full mode: returns <see langword="false"/> (dropped) or throws.</summary>
    internal bool RejectOrDrop()
    {
        if (_fullMode == BatchFullMode.Reject)
        {
            throw new QueueFullException($"Batcher '{_name}' is full ({_capacity} items) and rejects new items (FullMode = Reject).");
        }

        PatternsTelemetry.Dropped.Add(1, _tags);
        BatchingLog.ItemDropped(Logger, _name, _capacity);
        return false;
    }

    internal void ThrowCompleted() =>
        throw new InvalidOperationException($"Batcher '{_name}' is completed and accepts no more items.");

    /// <summary>Calls the user's handler for one batch.</summary>
    protected abstract ValueTask InvokeHandlerAsync(Batch<T> batch, CancellationToken cancellationToken);

    /// <summary>
    /// Called once per batch after its retries, with the final failure marks: dead-letters (in-process) or settles
    /// every item (transport). Called only when something failed, unless the batcher tracks envelopes.
    /// </summary>
    protected abstract ValueTask CompleteBatchAsync(BatchBuffer<T> buffer);

    private async ValueTask<bool> AddSlowAsync(T item, long size, Envelope envelope, object? ticket, CancellationToken cancellationToken)
    {
        while (true)
        {
            await WaitForSpaceAsync(cancellationToken).ConfigureAwait(false);
            var owner = Gate.EnterAsProducer();
            try
            {
                var status = CheckLocked();
                if (status == AddStatus.Added)
                {
                    AppendLocked(ref _open, null, 0, item, size, envelope, ticket);
                    return true;
                }

                if (status == AddStatus.Completed)
                {
                    ThrowCompleted();
                }
            }
            finally
            {
                Gate.Exit(owner);
            }
        }
    }

    private async Task WaitWithDeadlineAsync(CancellationToken drainDeadline)
    {
        using (drainDeadline.UnsafeRegister(static s => ((CancellationTokenSource)s!).Cancel(), _stop))
        {
            await _completion.ConfigureAwait(false);
        }
    }

    private BatchBuffer<T> OpenLocked(object? key, int worker)
    {
        var buffer = RentLocked();
        buffer.Key = key;
        buffer.Worker = worker;
        if (_draining)
        {
            ScheduleDrainFlushLocked();
        }

        if (_hasMaxAge)
        {
            var now = Time.GetTimestamp();
            buffer.OpenedAt = now;
            if (_timerDue == long.MaxValue)
            {
                ArmLocked(now + _maxAgeTimestamp, now);
            }
        }

        return buffer;
    }

    private void ScheduleDrainFlushLocked()
    {
        if (!_drainFlushScheduled && !_completing)
        {
            _drainFlushScheduled = true;
            ThreadPool.UnsafeQueueUserWorkItem(static engine => engine.DrainFlush(), this, preferLocal: false);
        }
    }

    private void DrainFlush()
    {
        Gate.Enter();
        try
        {
            _drainFlushScheduled = false;
            HandOffAllOpenLocked();
        }
        finally
        {
            Gate.Exit();
        }
    }

    private void HandOffAllOpenLocked()
    {
        if (_open is { } open)
        {
            HandOffLocked(open);
            _open = null;
        }

        _keys?.HandOffAllLocked(this);
    }

    /// <summary>Whether one more item fits; reads the workers' counter only when the cached limit is reached.</summary>
    private bool HasSpaceLocked()
    {
        if (_added < _addLimit)
        {
            return true;
        }

        if (_completing)
        {
            return false;
        }

        _addLimit = Volatile.Read(ref _released.Items) + _capacity;
        return _added < _addLimit;
    }

    /// <summary>The sequence up to which every handed-off batch has been handled.</summary>
    private long HandledThroughLocked() => _inOrder ? Volatile.Read(ref _released.Batches) : _lowestIncomplete - 1;

    /// <summary>Takes the flush waiters whose batches are all handled; clears the pending flag when none is left.</summary>
    private List<TaskCompletionSource>? CompleteFlushWaitersLocked(long handledThrough)
    {
        List<TaskCompletionSource>? flushed = null;
        if (_flushWaiters is { Count: > 0 } waiters)
        {
            for (var i = waiters.Count - 1; i >= 0; i--)
            {
                if (waiters[i].Target <= handledThrough)
                {
                    (flushed ??= []).Add(waiters[i].Signal);
                    waiters.RemoveAt(i);
                }
            }
        }

        if (_flushWaiters is not { Count: > 0 })
        {
            Volatile.Write(ref _flushPending, 0);
        }

        return flushed;
    }

    /// <summary>A buffer for a new batch: a recycled one when there is one.</summary>
    private BatchBuffer<T> RentLocked()
    {
        var buffer = _free ?? Interlocked.Exchange(ref _returned, null);
        if (buffer is null)
        {
            return new BatchBuffer<T>();
        }

        _free = buffer.NextFree;
        buffer.NextFree = null;
        Interlocked.Decrement(ref _pooled);
        return buffer;
    }

    /// <summary>Gives a reset buffer back without the gate (any thread); beyond the pool's limit its arrays go back to the shared pool.</summary>
    private void Recycle(BatchBuffer<T> buffer)
    {
        if (Interlocked.Increment(ref _pooled) > _poolLimit)
        {
            Interlocked.Decrement(ref _pooled);
            buffer.ReturnArrays();
            return;
        }

        var head = Volatile.Read(ref _returned);
        while (true)
        {
            buffer.NextFree = head;
            var seen = Interlocked.CompareExchange(ref _returned, buffer, head);
            if (seen == head)
            {
                return;
            }

            head = seen;
        }
    }

    private void ArmLocked(long due, long now)
    {
        if (due >= _timerDue || _completing)
        {
            return;
        }

        _timerDue = due;
        var ticks = (long)Math.Ceiling((due - now) * (double)TimeSpan.TicksPerSecond / Time.TimestampFrequency);
        var dueIn = TimeSpan.FromTicks(Math.Max(1, ticks));
        if (_timer is null)
        {
            _timer = Time.CreateTimer(static s => ((BatchEngine<T>)s!).OnAgeTimer(), this, dueIn, Timeout.InfiniteTimeSpan);
        }
        else
        {
            _timer.Change(dueIn, Timeout.InfiniteTimeSpan);
        }
    }

    private void OnAgeTimer()
    {
        Gate.Enter();
        try
        {
            _timerDue = long.MaxValue;
            if (_completing)
            {
                return;
            }

            var now = Time.GetTimestamp();
            var next = long.MaxValue;
            if (_open is { } open)
            {
                if (IsExpired(open, now))
                {
                    HandOffLocked(open);
                    _open = null;
                }
                else
                {
                    next = DueAt(open);
                }
            }

            if (_keys is not null)
            {
                next = Math.Min(next, _keys.HandOffExpiredLocked(this, now));
            }

            if (next != long.MaxValue)
            {
                ArmLocked(next, now);
            }
        }
        finally
        {
            Gate.Exit();
        }
    }

    private async Task RunWorkerAsync(ChannelReader<BatchBuffer<T>> reader)
    {
        do
        {
            do
            {
                while (reader.TryRead(out var buffer))
                {
                    var pending = ProcessAsync(buffer);
                    if (!pending.IsCompletedSuccessfully)
                    {
                        await pending.ConfigureAwait(false);
                    }
                }
            }
            while (SpinForNextBatch(reader));
        }
        while (await reader.WaitToReadAsync().ConfigureAwait(false));
    }

    /// <summary>
    /// Before a worker parks, it watches the channel for a few microseconds: producers that fill batches back to back
    /// hand the next one over within that time, and a parked worker would cost them a thread-pool wake-up per batch
    /// (the largest cost per item when batches fill fast). Spins never sleep, and a single-core machine does not spin.
    /// </summary>
    private static bool SpinForNextBatch(ChannelReader<BatchBuffer<T>> reader)
    {
        if (!SpinBeforeParking)
        {
            return false;
        }

        var spinner = default(SpinWait);
        for (var i = 0; i < WorkerSpins; i++)
        {
            if (reader.TryPeek(out _))
            {
                return true;
            }

            spinner.SpinOnce(sleep1Threshold: -1);
        }

        return false;
    }

    /// <summary>Handles one batch, retries what failed, settles, and recycles the buffer. Never throws.</summary>
    private ValueTask ProcessAsync(BatchBuffer<T> buffer)
    {
        if (BatchingTelemetry.BatchSize.Enabled)
        {
            BatchingTelemetry.BatchSize.Record(buffer.Count, _tags);
        }

        if (_pipeline is not null && !_retryOnly)
        {
            return ProcessThroughPipelineAsync(buffer);
        }

        ValueTask pending;
        try
        {
            pending = InvokeHandlerAsync(new Batch<T>(buffer), _stop.Token);
        }
        catch (Exception ex)
        {
            buffer.FailAll(ex);
            return RetryAndFinishAsync(buffer);
        }

        if (pending.IsCompletedSuccessfully)
        {
            if (buffer.FailedCount == 0 && !_tracked)
            {
                Release(buffer);
                return default;
            }

            return RetryAndFinishAsync(buffer);
        }

        return AwaitHandlerAsync(pending, buffer);
    }

    private async ValueTask AwaitHandlerAsync(ValueTask pending, BatchBuffer<T> buffer)
    {
        try
        {
            await pending.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            buffer.FailAll(ex);
        }

        await RetryAndFinishAsync(buffer).ConfigureAwait(false);
    }

    private async ValueTask RetryAndFinishAsync(BatchBuffer<T> buffer)
    {
        if (buffer.FailedCount > 0 && _pipeline is not null && !_stop.IsCancellationRequested)
        {
            // The first attempt already ran; Polly sees its failure as its first outcome and decides the retries.
            await ExecuteAttemptsAsync(new AttemptState(this, buffer, firstAttemptDone: true)).ConfigureAwait(false);
        }

        await FinishAsync(buffer).ConfigureAwait(false);
    }

    private async ValueTask ProcessThroughPipelineAsync(BatchBuffer<T> buffer)
    {
        await ExecuteAttemptsAsync(new AttemptState(this, buffer, firstAttemptDone: false)).ConfigureAwait(false);
        await FinishAsync(buffer).ConfigureAwait(false);
    }

    private async ValueTask ExecuteAttemptsAsync(AttemptState state)
    {
        try
        {
            await _pipeline!.ExecuteAsync(static (s, ct) => s.RunAsync(ct), state, _stop.Token).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // Retries exhausted, or the pipeline itself refused (breaker open, concurrency limit): whatever is
            // still marked failed is dead-lettered. A refusal before the first attempt fails every item.
            if (!state.Attempted)
            {
                state.Buffer.FailAll(ex);
            }
        }
    }

    private async ValueTask FinishAsync(BatchBuffer<T> buffer)
    {
        if (buffer.FailedCount > 0 || _tracked)
        {
            try
            {
                await CompleteBatchAsync(buffer).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // A completion hook must not stop the worker; it logs its own failures.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                BatchingLog.DeadLetterCallbackFailed(Logger, ex, _name);
            }
        }

        Release(buffer);
    }

    /// <summary>Recycles a handled batch and frees its capacity, without the producers' gate unless a flush waits on several workers.</summary>
    private void Release(BatchBuffer<T> buffer)
    {
        var count = buffer.Count;
        var sequence = buffer.Sequence;
        buffer.Reset();
        Recycle(buffer);
        List<TaskCompletionSource>? flushed = null;
        if (!_inOrder)
        {
            // Several workers finish out of order: the lowest unhandled sequence is tracked under the gate.
            Gate.Enter();
            try
            {
                if (sequence == _lowestIncomplete)
                {
                    _lowestIncomplete++;
                    while (_doneAhead is { Count: > 0 } ahead && ahead.Remove(_lowestIncomplete))
                    {
                        _lowestIncomplete++;
                    }
                }
                else
                {
                    (_doneAhead ??= []).Add(sequence);
                }

                flushed = CompleteFlushWaitersLocked(_lowestIncomplete - 1);
            }
            finally
            {
                Gate.Exit();
            }
        }

        // Both are full fences: a producer that publishes a space signal, or a flush that sets the pending flag,
        // before these counts are visible is seen by the reads below; one that publishes after sees the counts.
        Interlocked.Add(ref _released.Items, count);
        var handled = Interlocked.Increment(ref _released.Batches);
        if (Volatile.Read(ref _spaceSignal) is not null)
        {
            Interlocked.Exchange(ref _spaceSignal, null)?.TrySetResult();
        }

        if (_inOrder && Volatile.Read(ref _flushPending) != 0)
        {
            Gate.Enter();
            try
            {
                flushed = CompleteFlushWaitersLocked(handled);
            }
            finally
            {
                Gate.Exit();
            }
        }

        flushed?.ForEach(static s => s.TrySetResult());
    }

    private BatchBuffer<T> RentRetryBuffer()
    {
        Gate.Enter();
        try
        {
            return RentLocked();
        }
        finally
        {
            Gate.Exit();
        }
    }

    private void ReturnRetryBuffer(BatchBuffer<T> buffer)
    {
        buffer.Reset();
        Recycle(buffer);
    }

    /// <summary>One batch's attempts inside the resilience pipeline: the first on the whole batch, then each retry on a batch of the items still failing.</summary>
    private sealed class AttemptState(BatchEngine<T> engine, BatchBuffer<T> buffer, bool firstAttemptDone)
    {
        public BatchBuffer<T> Buffer { get; } = buffer;

        public bool Attempted { get; private set; } = firstAttemptDone;

        private int _attempt = firstAttemptDone ? 1 : 0;
        private bool _replayFirstFailure = firstAttemptDone;

        public async ValueTask RunAsync(CancellationToken cancellationToken)
        {
            if (_replayFirstFailure)
            {
                _replayFirstFailure = false;
                ThrowFirstFailure();
            }

            Attempted = true;
            if (_attempt == 0)
            {
                _attempt = 1;
                try
                {
                    await engine.InvokeHandlerAsync(new Batch<T>(Buffer), cancellationToken).ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    Buffer.FailAll(ex);
                }

                ThrowFirstFailure();
                return;
            }

            var retry = engine.RentRetryBuffer();
            var map = new int[Buffer.FailedCount];
            try
            {
                retry.Key = Buffer.Key;
                retry.Attempt = _attempt++;
                var failures = Buffer.Failures!;
                var n = 0;
                for (var i = 0; i < Buffer.Count; i++)
                {
                    if (failures[i] is not null)
                    {
                        map[n++] = i;
                        retry.Append(Buffer.Items[i], 0, int.MaxValue, engine._tracked, engine._tracked ? Buffer.Envelopes![i] : default, null);
                    }
                }

                try
                {
                    await engine.InvokeHandlerAsync(new Batch<T>(retry), cancellationToken).ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    retry.FailAll(ex);
                }

                Buffer.Attempt = retry.Attempt;
                for (var j = 0; j < retry.Count; j++)
                {
                    if (retry.Failures?[j] is { } failure)
                    {
                        Buffer.MarkFailed(map[j], failure);
                    }
                    else
                    {
                        Buffer.ClearFailure(map[j]);
                    }
                }
            }
            finally
            {
                engine.ReturnRetryBuffer(retry);
            }

            ThrowFirstFailure();
        }

        private void ThrowFirstFailure()
        {
            if (Buffer.FailedCount == 0)
            {
                return;
            }

            foreach (var failure in Buffer.Failures!)
            {
                if (failure is not null)
                {
                    ExceptionDispatchInfo.Throw(failure);
                }
            }
        }
    }
}

/// <summary>
/// What the handler workers have handled: items (capacity they freed) and batches (by hand-off sequence when there
/// is one worker). Padded to cache lines of their own, so producers adding items do not share a line with them.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 192)]
internal struct ReleaseCounters
{
    [FieldOffset(64)]
    public long Items;

    [FieldOffset(72)]
    public long Batches;
}
