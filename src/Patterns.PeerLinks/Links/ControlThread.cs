using System.Collections.Concurrent;
using System.Runtime.CompilerServices;

namespace Patterns.PeerLinks.Links;

/// <summary>
/// A node's thread of its own for its control streams' loops (the writers and the readers of the links it dials and of
/// the sessions peers dial), when the node uses one (off by default, see <see cref="UsedByNewNodes"/>): a control
/// loop's wait for a wake-up, a read or a write resumes here instead of queuing on the thread pool, where a saturated
/// bulk flow keeps a queue of work ahead of it.
/// </summary>
/// <remarks>
/// <para>
/// Only the awaits written as <c>await thread.Resume(task)</c> come back here: the thread's own work runs with no
/// <see cref="SynchronizationContext"/> set, so nothing it calls (a sender released by an acknowledgement, a subscription
/// announced) captures the thread and continues on it. What the control loops run between two awaits is short and never
/// blocks: parsing frames, queuing frames, completing waiters (whose continuations go to the pool).
/// </para>
/// <para>
/// The hops inside <c>HttpClient</c> and Kestrel (the HTTP/2 connection's read and write loops) still run on the pool.
/// Once the node stops, the thread ends, and what is still posted to it runs on the pool.
/// </para>
/// </remarks>
internal sealed class ControlThread : SynchronizationContext, IDisposable
{
    private readonly ConcurrentQueue<(SendOrPostCallback Callback, object? State)> _work = new();
    private readonly SemaphoreSlim _ready = new(0);
    private readonly Thread _thread;
    private int _stopped;

    public ControlThread(string name)
    {
        _thread = new Thread(Run) { IsBackground = true, Name = name };
        _thread.Start();
    }

    /// <summary>
    /// Gets or sets whether nodes created from now on give their control loops a thread of their own. Off by default: on
    /// a busy machine it measured slower than the pool (each hop to this thread wakes it through the operating system,
    /// where a pool thread is usually running already); the control-stream benchmark compares both.
    /// </summary>
    public static bool UsedByNewNodes { get; set; }

    /// <summary>Gets whether the calling thread is this one.</summary>
    public bool IsCurrent => Thread.CurrentThread == _thread;

    /// <summary>Gets how many callbacks the thread took (counted as each starts; the tests check that control work went through it).</summary>
    public long Ran => Volatile.Read(ref _ran);

    private long _ran;

    public override void Post(SendOrPostCallback d, object? state)
    {
        if (Volatile.Read(ref _stopped) != 0)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static s => s.Callback(s.State), (Callback: d, State: state), preferLocal: false);
            return;
        }

        _work.Enqueue((d, state));
        _ready.Release();

        // Stopped meanwhile: the thread's last look may have come before this item, so it goes to the pool from here
        // (each item is taken once, by whichever look finds it).
        if (Volatile.Read(ref _stopped) != 0)
        {
            HandToPool();
        }
    }

    public override void Send(SendOrPostCallback d, object? state) => throw new NotSupportedException("The control thread only takes posted work.");

    public override SynchronizationContext CreateCopy() => this;

    /// <summary>Awaits <paramref name="task"/> and continues on this thread.</summary>
    public Resumption Resume(Task task) => new(this, task);

    /// <summary>Awaits <paramref name="task"/> and continues on this thread.</summary>
    public Resumption<T> Resume<T>(Task<T> task) => new(this, task.ConfigureAwait(true).GetAwaiter());

    /// <summary>Awaits <paramref name="task"/> and continues on this thread.</summary>
    public Resumption<T> Resume<T>(ValueTask<T> task) => new(this, task.ConfigureAwait(true).GetAwaiter());

    public void Dispose()
    {
        Interlocked.Exchange(ref _stopped, 1);
        _ready.Release();
    }

    private void Run()
    {
        while (true)
        {
            _ready.Wait();
            if (_work.TryDequeue(out var item))
            {
                Interlocked.Increment(ref _ran);
                item.Callback(item.State);
            }
            else if (Volatile.Read(ref _stopped) != 0)
            {
                break;
            }
        }

        HandToPool();
    }

    /// <summary>The thread has stopped: what is still queued runs on the pool.</summary>
    private void HandToPool()
    {
        while (_work.TryDequeue(out var item))
        {
            ThreadPool.UnsafeQueueUserWorkItem(static s => s.Callback(s.State), item, preferLocal: false);
        }
    }

    /// <summary>
    /// Registers <paramref name="register"/>'s continuation with this thread as the current context, so the awaited
    /// operation posts it here; the context is restored at once, so the caller's own work never runs under it.
    /// </summary>
    private void OnCompleted(Action continuation, Action<Action> register)
    {
        var previous = Current;
        SetSynchronizationContext(this);
        try
        {
            register(continuation);
        }
        finally
        {
            SetSynchronizationContext(previous);
        }
    }

    /// <summary>An await of a task whose continuation runs on the control thread.</summary>
    internal readonly struct Resumption(ControlThread thread, Task task) : ICriticalNotifyCompletion
    {
        public bool IsCompleted => task.IsCompleted;

        public Resumption GetAwaiter() => this;

        public void GetResult() => task.GetAwaiter().GetResult();

        public void OnCompleted(Action continuation) => UnsafeOnCompleted(continuation);

        public void UnsafeOnCompleted(Action continuation)
        {
            var t = task;
            thread.OnCompleted(continuation, c => t.ConfigureAwait(true).GetAwaiter().UnsafeOnCompleted(c));
        }
    }

    /// <summary>An await of a task with a result whose continuation runs on the control thread.</summary>
    internal readonly struct Resumption<T> : ICriticalNotifyCompletion
    {
        private readonly ControlThread _thread;
        private readonly ConfiguredTaskAwaitable<T>.ConfiguredTaskAwaiter _task;
        private readonly ConfiguredValueTaskAwaitable<T>.ConfiguredValueTaskAwaiter _valueTask;
        private readonly bool _isValueTask;

        public Resumption(ControlThread thread, ConfiguredTaskAwaitable<T>.ConfiguredTaskAwaiter task)
        {
            _thread = thread;
            _task = task;
        }

        public Resumption(ControlThread thread, ConfiguredValueTaskAwaitable<T>.ConfiguredValueTaskAwaiter valueTask)
        {
            _thread = thread;
            _valueTask = valueTask;
            _isValueTask = true;
        }

        public bool IsCompleted => _isValueTask ? _valueTask.IsCompleted : _task.IsCompleted;

        public Resumption<T> GetAwaiter() => this;

        public T GetResult() => _isValueTask ? _valueTask.GetResult() : _task.GetResult();

        public void OnCompleted(Action continuation) => UnsafeOnCompleted(continuation);

        public void UnsafeOnCompleted(Action continuation)
        {
            if (_isValueTask)
            {
                var v = _valueTask;
                _thread.OnCompleted(continuation, c => v.UnsafeOnCompleted(c));
            }
            else
            {
                var t = _task;
                _thread.OnCompleted(continuation, c => t.UnsafeOnCompleted(c));
            }
        }
    }
}
