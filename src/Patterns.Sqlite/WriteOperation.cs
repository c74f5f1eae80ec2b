using System.Threading.Tasks.Sources;

namespace Patterns.Sqlite;

/// <summary>
/// One queued write (an append, a delete, a checkpoint, ...). The writer runs it inside a shared transaction and
/// completes it only after that transaction commits; a write that throws is rolled back alone (to its savepoint) and
/// fails alone.
/// </summary>
internal abstract class WriteOperation(CancellationToken cancellationToken)
{
    /// <summary>Gets the caller's token: a write cancelled before the writer reaches it is skipped.</summary>
    public CancellationToken CancellationToken { get; } = cancellationToken;

    /// <summary>Gets how many events this write appends (counted against the per-commit event limit).</summary>
    public virtual int EventCount => 0;

    /// <summary>Gets or sets the error this write failed with inside the transaction; it is reported after the commit.</summary>
    public Exception? Error { get; set; }

    /// <summary>Runs the write on the writer's connection, inside the open transaction.</summary>
    public abstract ValueTask ExecuteAsync(SqliteWriter writer);

    /// <summary>Completes the caller's task with the result, after the commit.</summary>
    public abstract void Complete();

    /// <summary>Fails the caller's task.</summary>
    public abstract void Fail(Exception error);
}

/// <summary>A write with a result, awaited by the caller through a <see cref="ValueTask{T}"/> backed by the operation itself.</summary>
internal abstract class WriteOperation<T>(CancellationToken cancellationToken) : WriteOperation(cancellationToken), IValueTaskSource<T>
{
    private ManualResetValueTaskSourceCore<T> _core = new() { RunContinuationsAsynchronously = true };

    /// <summary>Gets the caller's view of the operation.</summary>
    public ValueTask<T> Task => new(this, _core.Version);

    /// <summary>Gets or sets the result to report when the transaction commits.</summary>
    protected T Result { get; set; } = default!;

    public override void Complete() => _core.SetResult(Result);

    public override void Fail(Exception error) => _core.SetException(error);

    T IValueTaskSource<T>.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<T>.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource<T>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}

/// <summary>A synchronous write described by a static delegate and its state.</summary>
internal sealed class DelegateWrite<TState, T>(TState state, Func<SqliteWriter, TState, T> execute, CancellationToken cancellationToken)
    : WriteOperation<T>(cancellationToken)
{
    public override ValueTask ExecuteAsync(SqliteWriter writer)
    {
        Result = execute(writer, state);
        return ValueTask.CompletedTask;
    }
}
