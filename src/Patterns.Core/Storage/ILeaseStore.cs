namespace Patterns.Storage;

/// <summary>A named lease held by one owner until it expires, with a fencing token.</summary>
/// <param name="Name">The lease's name (a subscription, projection, pipeline or relay).</param>
/// <param name="Owner">The owner's id (one per process or per runner).</param>
/// <param name="Token">The fencing token: it increases each time the lease changes owner, and a renewal keeps it.</param>
/// <param name="ExpiresAt">When the lease expires unless renewed.</param>
public sealed record Lease(string Name, string Owner, long Token, DateTimeOffset ExpiresAt);

/// <summary>
/// Leases for single active ownership: a named subscription, projection, pipeline or relay runs in one process at a
/// time across every process that shares the store, and a standby takes over once the owner's lease expires.
/// </summary>
/// <remarks>
/// Expiry is read from the store's <see cref="TimeProvider"/>, so processes sharing a store need clocks that agree to
/// within a small fraction of the lease duration. Safety does not depend on clocks: a writer passes its lease to
/// <see cref="UnitOfWork.RequireLease"/>, and a commit made after another owner took over fails with
/// <see cref="LeaseLostException"/>.
/// </remarks>
public interface ILeaseStore
{
    /// <summary>
    /// Takes the lease when it is free, expired or already held by <paramref name="owner"/> (then it is renewed).
    /// Taking it from another owner, or after it was released, gives a greater fencing token.
    /// </summary>
    /// <param name="name">The lease's name.</param>
    /// <param name="owner">The caller's owner id.</param>
    /// <param name="duration">How long the lease lasts unless renewed.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The lease, or null when another owner holds it and it has not expired.</returns>
    ValueTask<Lease?> TryAcquireLeaseAsync(string name, string owner, TimeSpan duration, CancellationToken cancellationToken = default);

    /// <summary>Extends a lease the caller holds, keeping its token.</summary>
    /// <param name="lease">The lease held.</param>
    /// <param name="duration">The new duration, from now.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The renewed lease, or null when the lease was lost (another owner took it, or it was released).</returns>
    ValueTask<Lease?> RenewLeaseAsync(Lease lease, TimeSpan duration, CancellationToken cancellationToken = default);

    /// <summary>Gives a lease up so that a standby can take it at once; releasing a lease no longer held does nothing.</summary>
    /// <param name="lease">The lease held.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the lease is released.</returns>
    ValueTask ReleaseLeaseAsync(Lease lease, CancellationToken cancellationToken = default);
}
