namespace Patterns.Storage;

/// <summary>
/// Runs work only while holding a lease: takes it (standing by while another owner holds it), renews it every third of
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
    }

    /// <summary>Runs <paramref name="work"/> whenever this owner holds the lease, until <paramref name="stopping"/> or the work is done.</summary>
    /// <param name="work">The work; its token is cancelled on stop or when the lease is lost.</param>
    /// <param name="onStandby">Called when another owner holds the lease.</param>
    /// <param name="onLost">Called when the lease was lost while working (with the lost lease).</param>
    /// <param name="onError">Called when the store fails while taking, renewing or releasing the lease.</param>
    /// <param name="stopping">Stops the runner; the lease is then released.</param>
    /// <returns>A task that completes when the runner stops.</returns>
    public async Task RunAsync(
        Func<Lease, CancellationToken, Task<Outcome>> work,
        Action onStandby,
        Action<Lease> onLost,
        Action<Exception> onError,
        CancellationToken stopping)
    {
        var interval = duration / 3;
        while (!stopping.IsCancellationRequested)
        {
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
                if (stopping.IsCancellationRequested || outcome == Outcome.Done)
                {
                    await ReleaseAsync(lease, onError).ConfigureAwait(false);
                }
            }

            if (outcome == Outcome.Done)
            {
                return;
            }

            if (!stopping.IsCancellationRequested)
            {
                onLost(lease);
            }
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
