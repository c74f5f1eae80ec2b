using System.Runtime.CompilerServices;
using Grpc.Core;

namespace Patterns.PeerLinks.Links;

/// <summary>
/// How the bulk loops share the thread pool with the control streams. A saturated bulk stream's reads and writes
/// complete without waiting, so its loop would keep a pool thread for as long as data flows, and the control streams'
/// work items (a pong, an acknowledgement, a settlement) would wait in the pool's queue behind it. After each gRPC
/// message that did not wait, a bulk loop queues the rest of its work behind what is already queued.
/// </summary>
internal static class FairShare
{
    /// <summary>Continues on the thread pool behind the work queued there (or in the current context, in tests).</summary>
    public static YieldAwaitable Yield() => Task.Yield();

    /// <summary>
    /// Reads the next gRPC message of a bulk stream; when it was already buffered (read without waiting), the thread
    /// first goes back to the pool, so the reader holds a thread for one message at a time.
    /// </summary>
    public static async ValueTask<bool> MoveNextFairlyAsync<T>(this IAsyncStreamReader<T> reader, CancellationToken cancellationToken)
    {
        var reading = reader.MoveNext(cancellationToken);
        if (reading.IsCompleted)
        {
            await Task.Yield();
        }

        return await reading.ConfigureAwait(false);
    }
}
