using System.Runtime.CompilerServices;

namespace Patterns.Threading;

/// <summary>
/// A test-and-test-and-set spin lock: one atomic to enter, a plain release store to exit. The critical sections it guards
/// (a batcher's, an in-memory lane's) are a few dozen instructions and never run user code, so this is cheaper per item than a monitor,
/// whose exit is a second atomic. Not reentrant.
/// </summary>
internal sealed class SpinGate
{
    private int _taken;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Enter()
    {
        if (Interlocked.CompareExchange(ref _taken, 1, 0) != 0)
        {
            EnterContended();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Exit() => Volatile.Write(ref _taken, 0);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void EnterContended()
    {
        var spinner = default(SpinWait);
        do
        {
            spinner.SpinOnce();
        }
        while (Volatile.Read(ref _taken) != 0 || Interlocked.CompareExchange(ref _taken, 1, 0) != 0);
    }
}
