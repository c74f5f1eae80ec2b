namespace Patterns.Orchestration.Engine;

/// <summary>
/// Runs one workflow instance's code on a single thread, one continuation at a time, only while the engine drives it
/// (<see cref="RunUntilIdle"/>). It is both the <see cref="SynchronizationContext"/> that <c>await</c> returns to and the
/// <see cref="TaskScheduler"/> that <c>Task.Factory.StartNew</c> and <c>ContinueWith</c> use by default.
/// </summary>
/// <remarks>
/// Work that arrives from another thread, or while the engine is not driving the instance, escaped the scheduler:
/// <c>Task.Run</c>, <c>Task.Delay</c>, <c>ConfigureAwait(false)</c> or an awaited I/O call resumes on the thread pool. Such
/// work is never run; the scheduler records the escape and the engine fails the workflow task with a clear error.
/// </remarks>
internal sealed class WorkflowScheduler : TaskScheduler
{
    // A queue is only needed while the engine drives the instance (nothing else is ever queued): it is borrowed from the
    // thread for that time, so 100,000 waiting instances keep none.
    [ThreadStatic]
    private static Queue<(SendOrPostCallback Callback, object? State, Task? Task)>? t_spare;

    private readonly Context _context;
    private Queue<(SendOrPostCallback Callback, object? State, Task? Task)>? _queue;
    private Thread? _thread;
    private string? _escape;

    public WorkflowScheduler(Action onEscape)
    {
        _context = new Context(this);
        OnEscape = onEscape;
    }

    /// <summary>Gets the first escape seen, or null.</summary>
    public string? Escape
    {
        get
        {
            lock (_context)
            {
                return _escape;
            }
        }
    }

    /// <summary>Gets a value indicating whether the calling code runs on this scheduler now.</summary>
    public bool IsCurrent => _thread == Thread.CurrentThread && SynchronizationContext.Current == _context;

    private Action OnEscape { get; }

    /// <inheritdoc />
    public override int MaximumConcurrencyLevel => 1;

    /// <summary>Runs <paramref name="action"/> and then every continuation it queues, until none is left.</summary>
    public void RunUntilIdle(Action? action = null) => RunUntilIdle(static a => a?.Invoke(), action);

    /// <summary>
    /// Runs <paramref name="action"/> with <paramref name="state"/> and then every continuation it queues, until none is
    /// left (a static action with its state: a closure and a delegate for each workflow task add up over 100,000 timers).
    /// </summary>
    public void RunUntilIdle<TState>(Action<TState> action, TState state)
    {
        var previous = SynchronizationContext.Current;
        _thread = Thread.CurrentThread;
        SynchronizationContext.SetSynchronizationContext(_context);
        var borrowed = false;
        if (_queue is null)
        {
            _queue = t_spare ?? new();
            t_spare = null;
            borrowed = true;
        }

        try
        {
            action(state);
            while (true)
            {
                (SendOrPostCallback Callback, object? State, Task? Task) item;
                lock (_context)
                {
                    if (!_queue.TryDequeue(out item))
                    {
                        return;
                    }
                }

                if (item.Task is { } task)
                {
                    TryExecuteTask(task);
                }
                else
                {
                    item.Callback(item.State);
                }
            }
        }
        finally
        {
            _thread = null;
            SynchronizationContext.SetSynchronizationContext(previous);
            if (borrowed && _queue.Count == 0)
            {
                t_spare = _queue;
                _queue = null;
            }
        }
    }

    /// <summary>Records an escape (a workflow API called off the scheduler, or a task waiting on something that is not a workflow operation).</summary>
    public void ReportEscape(string description)
    {
        lock (_context)
        {
            _escape ??= description;
        }
    }

    /// <inheritdoc />
    protected override void QueueTask(Task task) => Enqueue(static _ => { }, null, task);

    /// <inheritdoc />
    protected override bool TryExecuteTaskInline(Task task, bool taskWasPreviouslyQueued) =>
        !taskWasPreviouslyQueued && _thread == Thread.CurrentThread && TryExecuteTask(task);

    /// <inheritdoc />
    protected override IEnumerable<Task>? GetScheduledTasks()
    {
        lock (_context)
        {
            return _queue is null ? [] : [.. _queue.Where(static i => i.Task is not null).Select(static i => i.Task!)];
        }
    }

    private void Enqueue(SendOrPostCallback callback, object? state, Task? task)
    {
        if (_thread != Thread.CurrentThread)
        {
            // Resumed from the thread pool or a timer: this is Task.Run, Task.Delay, ConfigureAwait(false) or I/O
            // completing. Running it would make the code's order depend on timing, so it never runs.
            ReportEscape("a continuation was scheduled from outside the workflow's scheduler, so the workflow awaited something that is not a " +
                "workflow operation (Task.Run, Task.Delay, a timer, I/O, or a task resumed with ConfigureAwait(false)); use the WorkflowContext's " +
                "activities, timers (ctx.DelayAsync) and waits instead");
            OnEscape();
            return;
        }

        lock (_context)
        {
            _queue!.Enqueue((callback, state, task)); // on the scheduler's thread, so while RunUntilIdle holds a queue
        }
    }

    private sealed class Context(WorkflowScheduler scheduler) : SynchronizationContext
    {
        public override void Post(SendOrPostCallback d, object? state) => scheduler.Enqueue(d, state, null);

        public override void Send(SendOrPostCallback d, object? state) =>
            throw new NotSupportedException("Workflow code cannot block on a synchronous send; await a workflow operation instead.");

        public override SynchronizationContext CreateCopy() => this;
    }
}
