namespace Patterns.Storage;

/// <summary>
/// A lease store that lets a standby wait for a lease to become free instead of retrying at a fixed interval: it wakes
/// the standby when another process releases a lease, and when the holder's lease runs out (its owner died, or stopped
/// renewing). Optional: <see cref="ILeaseStore"/> implementations without it are retried every third of the lease's duration.
/// </summary>
public interface ILeaseWatch
{
    /// <summary>
    /// Waits until lease <paramref name="name"/> may be taken: another process released or took over a lease (as far
    /// as the store can tell), or the current holder's lease expires; at most <paramref name="timeout"/>. It may return
    /// early: the caller then tries to take the lease, and waits again if it is still held.
    /// </summary>
    /// <param name="name">The lease's name.</param>
    /// <param name="timeout">The longest wait.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task that completes when the lease may be free.</returns>
    ValueTask WaitForLeaseAsync(string name, TimeSpan timeout, CancellationToken cancellationToken = default);
}
