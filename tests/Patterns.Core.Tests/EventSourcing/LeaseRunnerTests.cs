using Microsoft.Extensions.Time.Testing;
using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

/// <summary>The lease runner's retry of a failed renewal never lets the work run on past the time the lease is sure to be held.</summary>
public sealed class LeaseRunnerTests
{
    [Fact]
    public async Task RenewalRetry_WhoseCallHangs_StillStopsTheWorkWhenTheLeaseIsNoLongerSureToBeHeld()
    {
        // Lease 9 s: renewed every 3 s, sure to be held until 6 s after the take began. The renewal at 3 s fails; its
        // retry (after a 1 s back-off, before 6 s) hangs: the work must still stop at 6 s, not when the call returns.
        var fake = new FakeTimeProvider();
        var store = new HangingRenewals(fake);
        var backedOff = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var runner = new LeaseRunner(store, "subscription/s", "me", TimeSpan.FromSeconds(9), fake)
        {
            StoreRetryDelay = _ =>
            {
                backedOff.TrySetResult();
                return TimeSpan.FromSeconds(1);
            },
        };
        var working = new TaskCompletionSource<CancellationToken>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stop = new CancellationTokenSource();
        var run = runner.RunAsync(
            async (_, owned) =>
            {
                working.TrySetResult(owned);
                await Task.Delay(Timeout.Infinite, owned).ContinueWith(static _ => { }, TaskScheduler.Default);
                return LeaseRunner.Outcome.Done;
            },
            () => { },
            _ => { },
            _ => { },
            stop.Token);
        var token = await working.Task.WaitAsync(TestContext.Current.CancellationToken);

        fake.Advance(TimeSpan.FromSeconds(3)); // the renewal fails
        await backedOff.Task.WaitAsync(TestContext.Current.CancellationToken);
        token.IsCancellationRequested.Should().BeFalse("the lease is sure to be held until 6 s");

        fake.Advance(TimeSpan.FromSeconds(3)); // the retry's call (at 4 s) hangs past 6 s
        token.IsCancellationRequested.Should().BeTrue("the lease is no longer sure to be held: another owner may take it at 9 s");

        await stop.CancelAsync();
        await run.WaitAsync(TestContext.Current.CancellationToken);
        store.Renewals.Should().BeLessThanOrEqualTo(2);
    }

    /// <summary>Grants every take; the first renewal fails (the store is down), later ones hang until cancelled.</summary>
    private sealed class HangingRenewals(TimeProvider time) : ILeaseStore
    {
        private int _renewals;

        public int Renewals => Volatile.Read(ref _renewals);

        public ValueTask<Lease?> TryAcquireLeaseAsync(string name, string owner, TimeSpan duration, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult<Lease?>(new Lease(name, owner, 1, time.GetUtcNow() + duration));

        public async ValueTask<Lease?> RenewLeaseAsync(Lease lease, TimeSpan duration, CancellationToken cancellationToken = default)
        {
            if (Interlocked.Increment(ref _renewals) == 1)
            {
                throw new TimeoutException("The store is down.");
            }

            await Task.Delay(Timeout.Infinite, cancellationToken);
            return null;
        }

        public ValueTask ReleaseLeaseAsync(Lease lease, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;
    }
}
