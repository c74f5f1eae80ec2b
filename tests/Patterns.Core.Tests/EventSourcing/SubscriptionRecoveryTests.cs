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
        using var host = await StartTalliesAsync(storage, events, time, logs);
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
        using var host = await StartTalliesAsync(storage, events, time);
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

    /// <summary>
    /// Appends five deposits to stream "a" and starts a host whose "tallies" projection (pages of two) reads them through
    /// <paramref name="events"/>, the store that fails as the test says. One process, no lease: the back-off (from
    /// <see cref="FirstDelay"/>, capped at <see cref="MaxDelay"/>) is the only timer while the store is down.
    /// </summary>
    private static async Task<IHost> StartTalliesAsync(InMemoryEventStorage storage, DelegatingEventStorage events, TimeProvider time, ILoggerProvider? logs = null)
    {
        await storage.AppendAsync("a", ExpectedVersion.NoStream, [.. Enumerable.Range(1, 5).Select(Deposit)]);
        var fixture = new Patterns.Conformance.EventStoreFixture(events, storage, storage, storage, storage);
        return await TestHost.StartAsync(
            b =>
            {
                if (logs is not null)
                {
                    b.Logging.AddProvider(logs);
                }

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
