using System.Collections.Concurrent;
using System.Threading.Tasks.Sources;
using Patterns.Transport;

namespace Patterns.Batching;

/// <summary>
/// The pending settlement of one delivery while its item waits in a batch: the transport awaits it, the batch
/// completes it. Pooled per consumer, so a delivery allocates nothing for it in steady state.
/// </summary>
internal sealed class SettlementSource : IValueTaskSource<Settlement>
{
    private readonly ConcurrentQueue<SettlementSource> _pool;
    private ManualResetValueTaskSourceCore<Settlement> _core = new() { RunContinuationsAsynchronously = true };

    private SettlementSource(ConcurrentQueue<SettlementSource> pool) => _pool = pool;

    public ValueTask<Settlement> Task => new(this, _core.Version);

    public static SettlementSource Rent(ConcurrentQueue<SettlementSource> pool) =>
        pool.TryDequeue(out var source) ? source : new SettlementSource(pool);

    public void Complete(in Settlement settlement) => _core.SetResult(settlement);

    public Settlement GetResult(short token)
    {
        try
        {
            return _core.GetResult(token);
        }
        finally
        {
            _core.Reset();
            _pool.Enqueue(this);
        }
    }

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}
