using System.Runtime.CompilerServices;

namespace Patterns.PeerLinks.Links;

/// <summary>
/// How the bulk loops share the thread pool with the control streams. A saturated bulk stream's reads and writes
/// complete without waiting, so its loop would keep a pool thread for as long as data flows, and the control streams'
/// work items (a pong, an acknowledgement, a settlement) would wait in the pool's queue behind it. Before a gRPC message
/// that follows one handled without waiting, a bulk loop queues the rest of its work behind what is already queued.
/// </summary>
internal static class FairShare
{
    /// <summary>Continues behind the work already queued on the thread pool.</summary>
    /// <remarks>
    /// <see cref="Task.Yield"/> queues to the current <see cref="SynchronizationContext"/> or non-default
    /// <see cref="TaskScheduler"/> when there is one, and to the thread pool otherwise. The bulk loops never have one:
    /// the link's loops start on the pool (<c>Task.Run</c>), the session's run in ASP.NET Core's gRPC handlers (no
    /// context), and every await before a hand-back is <c>ConfigureAwait(false)</c>, so nothing captured is left by
    /// then. The tests rely on the same rule to see the order of the work on a single-threaded context of their own.
    /// </remarks>
    public static YieldAwaitable Yield() => Task.Yield();
}
