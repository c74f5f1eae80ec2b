namespace Patterns.Storage;

/// <summary>
/// Runs work only while holding a lease: takes it (standing by while another owner holds it: until it is released or
/// expires when the store is an <see cref="ILeaseWatch"/>, else a third of its duration at a time), renews it every third of
/// its duration, cancels the work when it is lost, and releases it when the work ends for good. One mechanism for every
/// single-active-owner runner (subscriptions, projections, the outbox relay, pipelines).
/// </summary>
internal sealed class LeaseRunner(ILeaseStore leases, string name, string owner, TimeSpan duration, TimeProvider timeProvider)
{
    /// <summary>Adds an error to <paramref name="errors"/> unless <paramref name="duration"/> is a lease duration options accept (1 second to 1 hour).</summary>
    public static void ValidateDuration(List<string> errors, string option, TimeSpan duration)
    {
        if (duration < TimeSpan.FromSeconds(1) || duration > TimeSpan.FromHours(1))
        {
            errors.Add($"{option} must be between 1 second and 1 hour (was {duration}).");
        }
    }

    /// <summary>What the owned work reports when it returns.</summary>
    public enum Outcome
    {
        /// <summary>The work is over (it faulted or finished): release the lease and stop.</summary>
        Done,

        /// <summary>The work noticed that it lost the lease (a fenced commit failed): stand by again.</summary>
        Lost,

        /// <summary>The work gives the lease up for another owner (load balancing): release it and stand by again.</summary>
        Yield,
    }

    /// <summary>Runs <paramref name="work"/> whenever this owner holds the lease, until <paramref name="stopping"/> or the work is done.</summary>
    /// <param name="work">The work; its token is cancelled on stop or when the lease is lost.</param>
    /// <param name="onStandby">Called when another owner holds the lease.</param>
    /// <param name="onLost">Called when the lease was lost while working (with the lost lease).</param>
    /// <param name="onError">Called when the store fails while taking, renewing or releasing the lease.</param>
    /// <param name="stopping">Stops the runner; the lease is then released.</param>
    /// <param name="mayTake">Asked before each try to take the lease; while it says no, the runner stands by a third of the duration at a time (null: always try).</param>
    /// <returns>A task that completes when the runner stops.</returns>
    public async Task RunAsync(
        Func<Lease, CancellationToken, Task<Outcome>> work,
        Action onStandby,
        Action<Lease> onLost,
        Action<Exception> onError,
        CancellationToken stopping,
        Func<CancellationToken, ValueTask<bool>>? mayTake = null)
    {
        var interval = duration / 3;
        while (!stopping.IsCancellationRequested)
        {
            if (mayTake is not null && !await MayTakeAsync(mayTake, onError, stopping).ConfigureAwait(false))
            {
                onStandby();
                try
                {
                    await Task.Delay(interval, timeProvider, stopping).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                continue;
            }

            Lease? lease;
            try
            {
                lease = await leases.TryAcquireLeaseAsync(name, owner, duration, stopping).ConfigureAwait(false);
            }
            catch (Exception) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                // The store is unreachable: try again after a renewal interval rather than give up for good.
                onError(ex);
                lease = null;
            }

            if (lease is null)
            {
                onStandby();
                if (!await StandByAsync(interval, onError, stopping).ConfigureAwait(false))
                {
                    return;
                }

                continue;
            }

            using var owned = CancellationTokenSource.CreateLinkedTokenSource(stopping);
            var renewal = RenewAsync(lease, interval, owned, onError);
            var outcome = Outcome.Lost;
            try
            {
                outcome = await work(lease, owned.Token).ConfigureAwait(false);
            }
            finally
            {
                await owned.CancelAsync().ConfigureAwait(false);
                await renewal.ConfigureAwait(false);
                if (stopping.IsCancellationRequested || outcome is Outcome.Done or Outcome.Yield)
                {
                    await ReleaseAsync(lease, onError).ConfigureAwait(false);
                }
            }

            if (outcome == Outcome.Done)
            {
                return;
            }

            if (!stopping.IsCancellationRequested && outcome == Outcome.Lost)
            {
                onLost(lease);
            }
        }
    }

    private static async ValueTask<bool> MayTakeAsync(Func<CancellationToken, ValueTask<bool>> mayTake, Action<Exception> onError, CancellationToken stopping)
    {
        try
        {
            return await mayTake(stopping).ConfigureAwait(false);
        }
        catch (Exception ex) when (!stopping.IsCancellationRequested)
        {
            onError(ex);
            return true; // unsure: taking it is safe (the lease decides), leaving it may orphan it
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Waits before the next try to take the lease; false when the runner stops meanwhile.</summary>
    private async Task<bool> StandByAsync(TimeSpan interval, Action<Exception> onError, CancellationToken stopping)
    {
        try
        {
            if (leases is ILeaseWatch watch)
            {
                try
                {
                    // Woken when the holder releases the lease or its lease runs out, not a whole interval later.
                    await watch.WaitForLeaseAsync(name, interval, stopping).ConfigureAwait(false);
                    return !stopping.IsCancellationRequested;
                }
                catch (Exception ex) when (!stopping.IsCancellationRequested)
                {
                    onError(ex); // the store failed: wait the interval instead
                }
            }

            await Task.Delay(interval, timeProvider, stopping).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            return false;
        }
    }

    private async Task RenewAsync(Lease lease, TimeSpan interval, CancellationTokenSource owned, Action<Exception> onError)
    {
        try
        {
            while (true)
            {
                await Task.Delay(interval, timeProvider, owned.Token).ConfigureAwait(false);
                if (await leases.RenewLeaseAsync(lease, duration, owned.Token).ConfigureAwait(false) is null)
                {
                    await owned.CancelAsync().ConfigureAwait(false);
                    return;
                }
            }
        }
        catch (Exception) when (owned.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            // The store cannot be reached: stop working before the lease may have expired; the work resumes once it is back.
            onError(ex);
            await owned.CancelAsync().ConfigureAwait(false);
        }
    }

    private async Task ReleaseAsync(Lease lease, Action<Exception> onError)
    {
        try
        {
            await leases.ReleaseLeaseAsync(lease, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // It expires on its own.
            onError(ex);
        }
    }
}
