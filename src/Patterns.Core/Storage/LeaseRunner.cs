namespace Patterns.Storage;

/// <summary>
/// Runs work only while holding a lease: takes it (standing by while another owner holds it: until it is released or
/// expires when the store is an <see cref="ILeaseWatch"/>, else a third of its duration at a time), renews it every third of
/// its duration, cancels the work when it is lost, and releases it when the work ends for good. One mechanism for every
/// single-active-owner runner (subscriptions, projections, the outbox relay, pipelines).
/// </summary>
/// <remarks>
/// With <see cref="StoreRetryDelay"/> set, a store error while taking or renewing the lease is retried after that
/// back-off (by the number of failures in a row) instead of a third of the duration: a failed take waits the back-off
/// before the next try; a failed renewal is tried again after the back-off while the work goes on, but only while the
/// lease is sure to be held (until two thirds of the duration after the last renewal that succeeded, counted from
/// before its call): the work is cancelled before the next try would come later than that, and at that time at the
/// latest while a retry's call is still in flight, so the lease never expires under work that still runs (as far as the
/// work honours its token), and another owner can take it only once this one stopped.
/// </remarks>
internal sealed class LeaseRunner(ILeaseStore leases, string name, string owner, TimeSpan duration, TimeProvider timeProvider)
{
    private int _storeFailures;

    /// <summary>Gets the back-off after the given number of store failures in a row, or null to wait a third of the duration (the default).</summary>
    public Func<int, TimeSpan>? StoreRetryDelay { get; init; }

    /// <summary>Gets how many store calls for the lease (take or renew) failed in a row; 0 after one succeeds.</summary>
    public int StoreFailures => Volatile.Read(ref _storeFailures);

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
            var taking = timeProvider.GetUtcNow();
            var failed = false;
            try
            {
                lease = await leases.TryAcquireLeaseAsync(name, owner, duration, stopping).ConfigureAwait(false);
                Volatile.Write(ref _storeFailures, 0);
            }
            catch (Exception) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                // The store is unreachable: try again after the back-off (or a renewal interval) rather than give up for good.
                Interlocked.Increment(ref _storeFailures);
                onError(ex);
                lease = null;
                failed = true;
            }

            if (lease is null)
            {
                onStandby();
                var standingBy = failed && StoreRetryDelay is { } backoff
                    ? DelayAsync(backoff(StoreFailures), stopping)
                    : StandByAsync(interval, onError, stopping);
                if (!await standingBy.ConfigureAwait(false))
                {
                    return;
                }

                continue;
            }

            using var owned = CancellationTokenSource.CreateLinkedTokenSource(stopping);
            var renewal = RenewAsync(lease, interval, taking, owned, onError);
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

    /// <summary>Waits <paramref name="delay"/>; false when the runner stops meanwhile.</summary>
    private async Task<bool> DelayAsync(TimeSpan delay, CancellationToken stopping)
    {
        try
        {
            await Task.Delay(delay, timeProvider, stopping).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            return false;
        }
    }

    /// <summary>Renews the lease (taken, or last renewed, by a call that started at <paramref name="renewed"/>) every <paramref name="interval"/> until the work ends; cancels the work when it is lost.</summary>
    private async Task RenewAsync(Lease lease, TimeSpan interval, DateTimeOffset renewed, CancellationTokenSource owned, Action<Exception> onError)
    {
        var wait = interval;

        // Armed while a failed renewal is being retried: cancels the work when the lease is no longer sure to be held,
        // even while a retry's call is still in flight (a call that hangs must not keep the work going past expiry).
        ITimer? deadline = null;
        try
        {
            while (true)
            {
                await Task.Delay(wait, timeProvider, owned.Token).ConfigureAwait(false);
                var renewing = timeProvider.GetUtcNow();
                try
                {
                    if (await leases.RenewLeaseAsync(lease, duration, owned.Token).ConfigureAwait(false) is null)
                    {
                        await owned.CancelAsync().ConfigureAwait(false);
                        return;
                    }

                    renewed = renewing;
                    wait = interval;
                    deadline?.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                    Volatile.Write(ref _storeFailures, 0);
                }
                catch (Exception ex) when (!owned.IsCancellationRequested)
                {
                    var failures = Interlocked.Increment(ref _storeFailures);
                    onError(ex);

                    // The lease is sure to be held until two thirds of its duration after the last renewal's call began
                    // (a third is left for clocks and calls in flight): try again after the back-off only if that comes
                    // before then, else stop working now. Without a back-off, stop at the first failure.
                    var sure = renewed + duration - interval;
                    var left = sure - timeProvider.GetUtcNow();
                    if (StoreRetryDelay is not { } backoff || left <= TimeSpan.Zero)
                    {
                        await owned.CancelAsync().ConfigureAwait(false);
                        return;
                    }

                    deadline ??= timeProvider.CreateTimer(static state => CancelOwned((CancellationTokenSource)state!), owned, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                    deadline.Change(left, Timeout.InfiniteTimeSpan);
                    if (timeProvider.GetUtcNow() + (wait = backoff(failures)) >= sure)
                    {
                        await owned.CancelAsync().ConfigureAwait(false);
                        return;
                    }
                }
            }
        }
        catch (Exception) when (owned.IsCancellationRequested)
        {
        }
        finally
        {
            deadline?.Dispose();
        }
    }

    private static void CancelOwned(CancellationTokenSource owned)
    {
        try
        {
            // Not on the timer's thread: the work's cancellation callbacks run on their own.
            _ = owned.CancelAsync();
        }
        catch (ObjectDisposedException)
        {
            // The work ended meanwhile.
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
