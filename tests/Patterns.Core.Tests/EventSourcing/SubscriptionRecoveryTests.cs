using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing;
using Patterns.EventSourcing.InMemory;
using Patterns.Hosting;
using Patterns.Storage;
using Patterns.Testing;

namespace Patterns.Core.Tests.EventSourcing;

/// <summary>
/// A subscription whose store calls fail with a transient error (an outage) recovers by itself: it retries from its
/// checkpoint after a capped exponential back-off on the application's clock, reports itself recovering (degraded health)
/// meanwhile, and applies each event once. A permanent store error still faults it.
/// </summary>
public sealed class SubscriptionRecoveryTests
{
    private static readonly TimeSpan FirstDelay = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan MaxDelay = TimeSpan.FromSeconds(4);

    [Fact]
    public async Task Projection_StoreCommitsFailTransiently_RetriesWithCappedBackoffWhileDegraded_ThenResumesFromItsCheckpointApplyingEachEventOnce()
    {
        var storage = new InMemoryEventStorage();
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var logs = new DelayLog();
        var commits = 0;
        var failing = true;
        var failures = new SemaphoreSlim(0);
        var events = new DelegatingEventStorage(storage)
        {
            // The first page's commit succeeds (checkpoint 2); then the store is down until the test brings it back.
            OnCommit = _ =>
            {
                if (Interlocked.Increment(ref commits) > 1 && Volatile.Read(ref failing))
                {
                    failures.Release();
                    throw new TimeoutException("The store did not answer in time.");
                }

                return ValueTask.CompletedTask;
            },
        };
        await storage.AppendAsync("a", ExpectedVersion.NoStream, [.. Enumerable.Range(1, 5).Select(Deposit)]);
        var fixture = new Patterns.Conformance.EventStoreFixture(events, storage, storage, storage, storage);
        using var host = await TestHost.StartAsync(
            b =>
            {
                b.Logging.AddProvider(logs);
                b.AddEventSourcing(es => es
                    .UseStorage(_ => fixture.AsSingleStore())
                    .AddEvent<Deposited>()
                    .Configure(o =>
                    {
                        // One process, no lease: the back-off is the only timer while the store is down.
                        o.ExclusiveOwnership = false;
                        o.StoreRetryDelay = FirstDelay;
                        o.StoreRetryMaxDelay = MaxDelay;
                    })
                    .AddDocumentProjection<Tally>("tallies", "tallies", e => e.StreamId, (t, e) => (t ?? Tally.Empty).Apply(e.Data), o => o.BatchSize = 2));
                b.Services.Configure<PatternsOptions>(o => o.InboxRetention = Timeout.InfiniteTimeSpan);
            },
            time,
            harness: false);
        var subscriptions = host.Subscriptions();
        var health = host.Services.GetRequiredService<EventSubscriptionsHealthCheck>();

        for (var failure = 1; failure <= 4; failure++)
        {
            (await failures.WaitAsync(TestHost.Wait)).Should().BeTrue($"the store call of attempt {failure} fails");
            await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);
            var status = subscriptions.GetStatus("tallies");
            status.State.Should().Be(SubscriptionState.Recovering, "a transient store error does not fault the projection");
            status.Error.Should().BeNull();
            status.StoreError.Should().BeOfType<TimeoutException>();
            status.Checkpoint.Should().Be(2, "the first page committed before the outage");
            var report = await health.CheckHealthAsync(new HealthCheckContext());
            report.Status.Should().Be(HealthStatus.Degraded);
            report.Description.Should().Contain("tallies").And.Contain("The store did not answer in time.");
            if (failure == 4)
            {
                // The store is back: the run after this delay resumes from checkpoint 2 and catches up.
                Volatile.Write(ref failing, false);
            }

            fake.Advance(MaxDelay);
        }

        logs.Delays.Should().Equal(
            [FirstDelay, FirstDelay * 2, MaxDelay, MaxDelay],
            "the wait doubles from StoreRetryDelay and is capped at StoreRetryMaxDelay");
        await subscriptions.WaitForPositionAsync("tallies", 5).WaitAsync(TestHost.Wait);
        var recovered = subscriptions.GetStatus("tallies");
        recovered.State.Should().Be(SubscriptionState.Live);
        recovered.StoreError.Should().BeNull();
        (await health.CheckHealthAsync(new HealthCheckContext())).Status.Should().Be(HealthStatus.Healthy);
        (await host.Services.GetRequiredService<IReadModels>().GetAsync<Tally>("tallies", "a")).Should().Be(
            new Tally(5, 15m), "each deposit is folded once although pages were handled again after each failed commit");
    }

    [Fact]
    public async Task Projection_CommitStoredButItsReplyLost_ResumesFromTheStoredCheckpointAndFoldsEachEventOnce()
    {
        // The commit's outcome is unknown to the projection (a connection that broke after the database committed): the
        // next run must take its place from the store, not from what it last knew, or it folds a page twice (or, comparing
        // the checkpoint with a stale one, fails).
        var storage = new InMemoryEventStorage();
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var commits = 0;
        var lost = new SemaphoreSlim(0);
        var events = new DelegatingEventStorage(storage)
        {
            AfterCommit = _ =>
            {
                // The second page's commit (checkpoint 2 to 4) is stored, and its reply never comes.
                if (Interlocked.Increment(ref commits) == 2)
                {
                    lost.Release();
                    throw new TimeoutException("The reply to the commit did not arrive in time.");
                }

                return ValueTask.CompletedTask;
            },
        };
        await storage.AppendAsync("a", ExpectedVersion.NoStream, [.. Enumerable.Range(1, 5).Select(Deposit)]);
        var fixture = new Patterns.Conformance.EventStoreFixture(events, storage, storage, storage, storage);
        using var host = await TestHost.StartAsync(
            b =>
            {
                b.AddEventSourcing(es => es
                    .UseStorage(_ => fixture.AsSingleStore())
                    .AddEvent<Deposited>()
                    .Configure(o =>
                    {
                        o.ExclusiveOwnership = false;
                        o.StoreRetryDelay = FirstDelay;
                        o.StoreRetryMaxDelay = MaxDelay;
                    })
                    .AddDocumentProjection<Tally>("tallies", "tallies", e => e.StreamId, (t, e) => (t ?? Tally.Empty).Apply(e.Data), o => o.BatchSize = 2));
                b.Services.Configure<PatternsOptions>(o => o.InboxRetention = Timeout.InfiniteTimeSpan);
            },
            time,
            harness: false);
        var subscriptions = host.Subscriptions();

        (await lost.WaitAsync(TestHost.Wait)).Should().BeTrue("the second page's commit is stored and its reply lost");
        await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);
        subscriptions.GetStatus("tallies").State.Should().Be(SubscriptionState.Recovering);
        (await ((ICheckpointStore)storage).LoadAsync("tallies")).Should().Be(4, "the commit whose reply was lost is stored");
        fake.Advance(FirstDelay);

        await subscriptions.WaitForPositionAsync("tallies", 5).WaitAsync(TestHost.Wait);
        subscriptions.GetStatus("tallies").State.Should().Be(SubscriptionState.Live);
        subscriptions.GetStatus("tallies").Error.Should().BeNull("the next run starts from the stored checkpoint, so its compare holds");
        (await host.Services.GetRequiredService<IReadModels>().GetAsync<Tally>("tallies", "a")).Should().Be(
            new Tally(5, 15m), "the page whose commit was stored is not folded again");
    }

    [Fact]
    public async Task Projection_StoreFailsWithAPermanentError_FaultsAsBefore_AndReportsUnhealthy()
    {
        var storage = new InMemoryEventStorage();
        var events = new DelegatingEventStorage(storage)
        {
            OnCommit = _ => throw new InvalidOperationException("The table is missing."),
        };
        await storage.AppendAsync("a", ExpectedVersion.NoStream, [Deposit(1)]);
        var fixture = new Patterns.Conformance.EventStoreFixture(events, storage, storage, storage, storage);
        using var host = await EventSourcingHost.StartAsync(es => es
            .UseStorage(_ => fixture.AsSingleStore())
            .AddDocumentProjection<Tally>("tallies", "tallies", e => e.StreamId, (t, e) => (t ?? Tally.Empty).Apply(e.Data)));

        var wait = () => host.Subscriptions().WaitForPositionAsync("tallies", 1).WaitAsync(TestHost.Wait);

        (await wait.Should().ThrowAsync<SubscriptionFaultedException>()).Which.InnerException.Should().BeOfType<InvalidOperationException>();
        host.Subscriptions().GetStatus("tallies").State.Should().Be(SubscriptionState.Faulted);
        (await host.Services.GetRequiredService<EventSubscriptionsHealthCheck>().CheckHealthAsync(new HealthCheckContext())).Status.Should().Be(HealthStatus.Unhealthy);
    }

    [Fact]
    public async Task Start_StoreRetryDelaysOutOfRange_FailsNamingBoth()
    {
        using var host = TestHost.Build(
            b => b.AddEventSourcing(es => es.Configure(o =>
            {
                o.StoreRetryDelay = TimeSpan.Zero;
                o.StoreRetryMaxDelay = TimeSpan.FromHours(2);
            })),
            harness: false);

        var act = () => host.StartAsync();

        var thrown = await act.Should().ThrowAsync<Microsoft.Extensions.Options.OptionsValidationException>();
        thrown.Which.Failures.Should().Contain(f => f.Contains("StoreRetryDelay must be between"))
            .And.Contain(f => f.Contains("StoreRetryMaxDelay must be at least"));
    }

    [Fact]
    public async Task Projection_OutageOutlastsMaxOutageDuration_RecoversUntilTheLimit_ThenFaultsWithTheLastStoreErrorAndReportsUnhealthy()
    {
        var storage = new InMemoryEventStorage();
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var commits = 0;
        var failures = new SemaphoreSlim(0);
        var events = new DelegatingEventStorage(storage)
        {
            // The first page's commit succeeds (checkpoint 2); then the store stays down.
            OnCommit = _ =>
            {
                var commit = Interlocked.Increment(ref commits);
                if (commit > 1)
                {
                    failures.Release();
                    throw new TimeoutException($"The store did not answer commit {commit} in time.");
                }

                return ValueTask.CompletedTask;
            },
        };
        await storage.AppendAsync("a", ExpectedVersion.NoStream, [.. Enumerable.Range(1, 5).Select(Deposit)]);
        using var host = await StartAsync(events, storage, time, o => o.MaxOutageDuration = TimeSpan.FromSeconds(6));
        var subscriptions = host.Subscriptions();
        var health = host.Services.GetRequiredService<EventSubscriptionsHealthCheck>();

        // Failures at 0 s (then a wait of 1 s), 1 s (2 s) and 3 s (4 s) are within the limit; the one at 7 s is past it.
        foreach (var delay in new[] { FirstDelay, FirstDelay * 2, MaxDelay })
        {
            (await failures.WaitAsync(TestHost.Wait)).Should().BeTrue();
            await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);
            subscriptions.GetStatus("tallies").State.Should().Be(SubscriptionState.Recovering, "the outage is shorter than MaxOutageDuration");
            (await health.CheckHealthAsync(new HealthCheckContext())).Status.Should().Be(HealthStatus.Degraded);
            fake.Advance(delay);
        }

        (await failures.WaitAsync(TestHost.Wait)).Should().BeTrue("the store is still down 7 s after the outage began");
        var wait = () => subscriptions.WaitForPositionAsync("tallies", 5).WaitAsync(TestHost.Wait);
        var fault = (await wait.Should().ThrowAsync<SubscriptionFaultedException>()).Which;
        fault.InnerException.Should().BeOfType<TimeoutException>().Which.Message.Should().Contain("commit 5", "the fault carries the last store error");
        fault.Message.Should().Contain("MaxOutageDuration");
        var status = subscriptions.GetStatus("tallies");
        status.State.Should().Be(SubscriptionState.Faulted);
        status.Checkpoint.Should().Be(2);
        var report = await health.CheckHealthAsync(new HealthCheckContext());
        report.Status.Should().Be(HealthStatus.Unhealthy);
        report.Description.Should().Contain("MaxOutageDuration");
        time.PendingTimers.Should().Be(0, "a faulted projection does not try again by itself");

        // A restart resumes it from its checkpoint once the store is back.
        Interlocked.Exchange(ref commits, int.MinValue);
        await subscriptions.RestartAsync("tallies");
        await subscriptions.WaitForPositionAsync("tallies", 5).WaitAsync(TestHost.Wait);
        (await host.Services.GetRequiredService<IReadModels>().GetAsync<Tally>("tallies", "a")).Should().Be(new Tally(5, 15m));
    }

    [Fact]
    public async Task Projection_CommitSucceedsBetweenFailures_StartsTheOutageClockAgain()
    {
        // Commit 1 succeeds, 2 and 3 fail, 4 succeeds, 5 to 7 fail, the rest succeed. The failures span 10 s in all,
        // more than the 4 s limit, but no unbroken series of them lasts 4 s.
        var storage = new InMemoryEventStorage();
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var commits = 0;
        var failures = new SemaphoreSlim(0);
        var events = new DelegatingEventStorage(storage)
        {
            OnCommit = _ =>
            {
                if (Interlocked.Increment(ref commits) is 2 or 3 or 5 or 6 or 7)
                {
                    failures.Release();
                    throw new TimeoutException("The store did not answer in time.");
                }

                return ValueTask.CompletedTask;
            },
        };
        await storage.AppendAsync("a", ExpectedVersion.NoStream, [.. Enumerable.Range(1, 5).Select(Deposit)]);
        using var host = await StartAsync(events, storage, time, o => o.MaxOutageDuration = TimeSpan.FromSeconds(4), batchSize: 1);
        var subscriptions = host.Subscriptions();

        // Failures at 0 s and 1 s; the commit at 3 s succeeds; failures at 3 s, 4 s and 6 s (3 s into the second series,
        // 6 s after the first failure); the commit at 10 s succeeds.
        foreach (var delay in new[] { FirstDelay, FirstDelay * 2, FirstDelay, FirstDelay * 2, MaxDelay })
        {
            (await failures.WaitAsync(TestHost.Wait)).Should().BeTrue();
            await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);
            subscriptions.GetStatus("tallies").State.Should().Be(SubscriptionState.Recovering, "a successful commit ended the first series");
            fake.Advance(delay);
        }

        await subscriptions.WaitForPositionAsync("tallies", 5).WaitAsync(TestHost.Wait);
        subscriptions.GetStatus("tallies").State.Should().Be(SubscriptionState.Live);
        (await host.Services.GetRequiredService<IReadModels>().GetAsync<Tally>("tallies", "a")).Should().Be(new Tally(5, 15m));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-5)]
    public async Task Start_MaxOutageDurationNotPositive_FailsNamingIt(int seconds)
    {
        using var host = TestHost.Build(
            b => b.AddEventSourcing(es => es.Configure(o => o.MaxOutageDuration = TimeSpan.FromSeconds(seconds))),
            harness: false);

        var act = () => host.StartAsync();

        (await act.Should().ThrowAsync<Microsoft.Extensions.Options.OptionsValidationException>())
            .Which.Failures.Should().Contain(f => f.Contains("MaxOutageDuration must be positive"));
    }

    [Fact]
    public async Task Start_MaxOutageDurationInfinite_MeansNoLimit()
    {
        using var host = TestHost.Build(
            b =>
            {
                b.AddEventSourcing(es => es.Configure(o => o.MaxOutageDuration = Timeout.InfiniteTimeSpan));
                b.Services.Configure<PatternsOptions>(o => o.InboxRetention = Timeout.InfiniteTimeSpan);
            },
            harness: false);

        await host.StartAsync();
        await host.StopAsync();
    }

    [Fact]
    public async Task Projection_LeaseCannotBeTakenWhileTheStoreIsDown_TriesAgainWithTheDoublingBackoff_AndFaultsPastMaxOutageDuration()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var storage = new InMemoryEventStorage(timeProvider: fake);
        var start = fake.GetUtcNow();
        var attempts = new System.Collections.Concurrent.ConcurrentQueue<TimeSpan>();
        var attempted = new SemaphoreSlim(0);
        var events = new DelegatingEventStorage(storage)
        {
            OnAcquireLease = _ =>
            {
                attempts.Enqueue(fake.GetUtcNow() - start);
                attempted.Release();
                throw new TimeoutException($"The store did not answer lease call {attempts.Count} in time.");
            },
        };
        await storage.AppendAsync("a", ExpectedVersion.NoStream, [Deposit(1)]);
        using var host = await StartAsync(events, storage, time, o => o.MaxOutageDuration = TimeSpan.FromSeconds(6), exclusive: true);
        var subscriptions = host.Subscriptions();

        foreach (var delay in new[] { FirstDelay, FirstDelay * 2, MaxDelay })
        {
            (await attempted.WaitAsync(TestHost.Wait)).Should().BeTrue("the next try comes after the back-off, not a third of the lease duration");
            await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);
            var status = subscriptions.GetStatus("tallies");
            status.State.Should().Be(SubscriptionState.Recovering, "the lease could not be taken because the store failed");
            status.StoreError.Should().BeOfType<TimeoutException>();
            fake.Advance(delay);
        }

        (await attempted.WaitAsync(TestHost.Wait)).Should().BeTrue();
        var wait = () => subscriptions.WaitForPositionAsync("tallies", 1).WaitAsync(TestHost.Wait);
        (await wait.Should().ThrowAsync<SubscriptionFaultedException>()).Which.InnerException.Should().BeOfType<TimeoutException>()
            .Which.Message.Should().Contain("lease call 4");
        attempts.Should().Equal([TimeSpan.Zero, FirstDelay, FirstDelay * 3, FirstDelay * 7], "the waits double from StoreRetryDelay up to StoreRetryMaxDelay");
        subscriptions.GetStatus("tallies").State.Should().Be(SubscriptionState.Faulted);
    }

    [Fact]
    public async Task Projection_LeaseRenewalFailsWhileTheStoreIsDown_WorksOnWhileTheLeaseIsSureToBeHeld_StopsBeforeItCanExpire_AndFoldsEachEventOnce()
    {
        // Lease 9 s: renewed every 3 s, sure to be held until 6 s after the last renewal began.
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var storage = new InMemoryEventStorage(timeProvider: fake);
        var start = fake.GetUtcNow();
        var down = false;
        var renewals = new SemaphoreSlim(0);
        var takes = new System.Collections.Concurrent.ConcurrentQueue<TimeSpan>();
        var taken = new SemaphoreSlim(0);
        var events = new DelegatingEventStorage(storage)
        {
            OnAcquireLease = _ =>
            {
                takes.Enqueue(fake.GetUtcNow() - start);
                taken.Release();
                return Volatile.Read(ref down) ? throw new TimeoutException("The store did not answer in time.") : ValueTask.CompletedTask;
            },
            OnRenewLease = _ =>
            {
                if (Volatile.Read(ref down))
                {
                    renewals.Release();
                    throw new TimeoutException("The store did not answer in time.");
                }

                return ValueTask.CompletedTask;
            },
        };
        await storage.AppendAsync("a", ExpectedVersion.NoStream, [Deposit(1), Deposit(2)]);
        using var host = await StartAsync(events, storage, time, o => o.LeaseDuration = TimeSpan.FromSeconds(9), exclusive: true);
        var subscriptions = host.Subscriptions();
        var models = host.Services.GetRequiredService<IReadModels>();
        await subscriptions.WaitForPositionAsync("tallies", 2).WaitAsync(TestHost.Wait);
        (await taken.WaitAsync(TestHost.Wait)).Should().BeTrue();

        // The store goes down; the renewal at 3 s fails and is tried again 1 s later, while the projection works on.
        Volatile.Write(ref down, true);
        await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromSeconds(3));
        (await renewals.WaitAsync(TestHost.Wait)).Should().BeTrue();
        await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);
        subscriptions.GetStatus("tallies").State.Should().Be(SubscriptionState.Live, "the lease is held until 9 s: one failed renewal does not stop the work");

        // The renewal at 4 s fails too; the next try (2 s later) would come at 6 s, when the lease is no longer sure to be
        // held: the work stops now, and the runner tries to take the lease again after the back-off.
        fake.Advance(FirstDelay);
        (await renewals.WaitAsync(TestHost.Wait)).Should().BeTrue();
        (await taken.WaitAsync(TestHost.Wait)).Should().BeTrue("the work ended, so the runner tries to take the lease again");
        takes.Should().Equal([TimeSpan.Zero, TimeSpan.FromSeconds(4)], "the work stopped at 4 s, before the lease (taken at 0 s for 9 s) could expire");
        await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);
        subscriptions.GetStatus("tallies").State.Should().Be(SubscriptionState.Recovering);

        // Failures in a row: 3, so the next try comes 4 s later, at 8 s (and fails); the one after at 12 s.
        fake.Advance(MaxDelay);
        (await taken.WaitAsync(TestHost.Wait)).Should().BeTrue();
        await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);

        // At 9 s the lease has expired and another process takes it while this one's store is still out of reach;
        // the store is back, an event is appended, and this process finds the lease held: it stands by, the new
        // owner's event is not folded here.
        fake.Advance(FirstDelay);
        var other = await ((ILeaseStore)storage).TryAcquireLeaseAsync("subscription/tallies", "other-process", TimeSpan.FromSeconds(9));
        other.Should().NotBeNull("the lease expired 9 s after it was taken");
        Volatile.Write(ref down, false);
        await storage.AppendAsync("a", ExpectedVersion.Any, [Deposit(3)]);
        fake.Advance(TimeSpan.FromSeconds(3));
        (await taken.WaitAsync(TestHost.Wait)).Should().BeTrue();
        await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);
        subscriptions.GetStatus("tallies").State.Should().Be(SubscriptionState.Standby);
        (await models.GetAsync<Tally>("tallies", "a")).Should().Be(new Tally(2, 3m), "this process folds nothing while another owns the lease");

        // The other process leaves; this one takes the lease over and folds the rest, each event once.
        await ((ILeaseStore)storage).ReleaseLeaseAsync(other!);
        fake.Advance(TimeSpan.FromSeconds(3));
        await subscriptions.WaitForPositionAsync("tallies", 3).WaitAsync(TestHost.Wait);
        (await models.GetAsync<Tally>("tallies", "a")).Should().Be(new Tally(3, 6m), "each deposit is folded once");
    }

    private static Task<IHost> StartAsync(
        DelegatingEventStorage events, InMemoryEventStorage storage, TimerTracker time, Action<EventSourcingOptions> configure, int batchSize = 2, bool exclusive = false)
    {
        var fixture = new Patterns.Conformance.EventStoreFixture(events, storage, storage, storage, storage);
        return TestHost.StartAsync(
            b =>
            {
                b.AddEventSourcing(es => es
                    .UseStorage(_ => fixture.AsSingleStore())
                    .AddEvent<Deposited>()
                    .Configure(o =>
                    {
                        o.ExclusiveOwnership = exclusive;
                        o.StoreRetryDelay = FirstDelay;
                        o.StoreRetryMaxDelay = MaxDelay;
                        configure(o);
                    })
                    .AddDocumentProjection<Tally>("tallies", "tallies", e => e.StreamId, (t, e) => (t ?? Tally.Empty).Apply(e.Data), o => o.BatchSize = batchSize));
                b.Services.Configure<PatternsOptions>(o => o.InboxRetention = Timeout.InfiniteTimeSpan);
            },
            time,
            harness: false);
    }

    private static SerializedEvent Deposit(int amount) =>
        new(Guid.NewGuid(), "bank.deposited", System.Text.Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{{\"amount\":{amount}}}")), DateTimeOffset.UnixEpoch);

    /// <summary>Records the delays the subscription logs when the store is unavailable (event 4020).</summary>
    private sealed class DelayLog : ILoggerProvider
    {
        private readonly Lock _gate = new();
        private readonly List<TimeSpan> _delays = [];

        public IReadOnlyList<TimeSpan> Delays
        {
            get
            {
                lock (_gate)
                {
                    return [.. _delays];
                }
            }
        }

        public ILogger CreateLogger(string categoryName) => new Logger(this);

        public void Dispose()
        {
        }

        private sealed class Logger(DelayLog owner) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (eventId.Id == 4020 && state is IReadOnlyList<KeyValuePair<string, object?>> values
                    && values.FirstOrDefault(v => v.Key == "Delay").Value is TimeSpan delay)
                {
                    lock (owner._gate)
                    {
                        owner._delays.Add(delay);
                    }
                }
            }
        }
    }
}
