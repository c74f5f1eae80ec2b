using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing;
using Patterns.Storage;
using Patterns.Testing;

namespace Patterns.Sqlite.Tests;

/// <summary>
/// A projection on a SQLite file that another connection holds locked (SQLite's write lock, past the store's busy
/// time-out: SQLITE_BUSY, a transient error) recovers by itself once the lock is gone: it reports
/// <see cref="SubscriptionState.Recovering"/> and degraded health meanwhile, then resumes from its checkpoint and folds
/// each event once. Every wait of the store and the projection is a timer of the fake clock the test moves.
/// </summary>
public sealed class SqliteSubscriptionOutageTests : IAsyncLifetime
{
    private readonly TempDatabase _db = new();

    private static CancellationToken Timeout => TestContext.Current.CancellationToken;

    public ValueTask InitializeAsync() => default;

    public ValueTask DisposeAsync() => _db.DisposeAsync();

    [Fact]
    public async Task Projection_CommitFindsTheFileLockedByAnotherConnection_RecoversOnceUnlocked_AndFoldsEachEventOnce()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var entered = new ManualResetEventSlim();
        var gate = new ManualResetEventSlim();
        using var host = Build(time, exclusive: false, (_, e) =>
        {
            if (e.Data is Deposited { Amount: 3 } && !entered.IsSet)
            {
                // The second page's first event: the test locks the file before the page commits.
                entered.Set();
                gate.Wait(Timeout);
            }
        });
        // Five events in pages of two: the last page is short, so the commit that reaches position 5 also makes it live.
        await AppendDepositsAsync(host, 5);
        await host.StartAsync(Timeout);
        var subscriptions = host.Services.GetRequiredService<IEventSubscriptions>();
        entered.Wait(Timeout);
        var other = LockDatabase();
        gate.Set();

        // The commit runs again after each of the store's back-offs, then fails with SQLITE_BUSY; the projection then waits.
        await MoveTimeUntilAsync(time, fake, () => subscriptions.GetStatus("tallies").State == SubscriptionState.Recovering, SqliteWriter.MaxBusyDelay);
        var status = subscriptions.GetStatus("tallies");
        status.Checkpoint.Should().Be(2, "the first page committed before the lock");
        status.Error.Should().BeNull("a busy database is no fault");
        status.StoreError.Should().BeOfType<SqliteException>().Which.SqliteErrorCode.Should().Be(5, "SQLITE_BUSY");
        (await Health(host)).Status.Should().Be(HealthStatus.Degraded);

        Execute(other, "ROLLBACK");
        other.Dispose();
        var caughtUp = subscriptions.WaitForPositionAsync("tallies", 5, Timeout);
        await MoveTimeUntilAsync(time, fake, () => caughtUp.IsCompleted, TimeSpan.FromSeconds(1));
        await caughtUp;

        subscriptions.GetStatus("tallies").State.Should().Be(SubscriptionState.Live);
        (await Health(host)).Status.Should().Be(HealthStatus.Healthy);
        (await host.Services.GetRequiredService<IReadModels>().GetAsync<Tally>("tallies", "a", Timeout)).Should().Be(
            new Tally(5, 15m), "the second page, handled again after its commit failed, is folded once");
        await host.StopAsync(Timeout);
    }

    [Fact]
    public async Task Projection_LeaseCannotBeTakenWhileTheFileIsLocked_ReportsRecoveringNotStandby_AndRunsOnceUnlocked()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        using var host = Build(time, exclusive: true, (_, _) => { });
        await AppendDepositsAsync(host, 3);
        var other = LockDatabase();
        await host.StartAsync(Timeout);
        var subscriptions = host.Services.GetRequiredService<IEventSubscriptions>();

        // Taking the lease is a write: it fails with SQLITE_BUSY after the store's back-offs.
        await MoveTimeUntilAsync(time, fake, () => subscriptions.GetStatus("tallies").State == SubscriptionState.Recovering, SqliteWriter.MaxBusyDelay);
        (await Health(host)).Status.Should().Be(HealthStatus.Degraded);

        Execute(other, "ROLLBACK");
        other.Dispose();
        var caughtUp = subscriptions.WaitForPositionAsync("tallies", 3, Timeout);
        await MoveTimeUntilAsync(time, fake, () => caughtUp.IsCompleted, TimeSpan.FromSeconds(1));
        await caughtUp;

        subscriptions.GetStatus("tallies").State.Should().Be(SubscriptionState.Live);
        (await host.Services.GetRequiredService<IReadModels>().GetAsync<Tally>("tallies", "a", Timeout)).Should().Be(new Tally(3, 6m));
        await host.StopAsync(Timeout);
    }

    /// <summary>
    /// Moves the fake clock by <paramref name="step"/> whenever a timer is armed, until <paramref name="done"/> holds: the
    /// store's back-offs, the projection's retry delay and the lease's intervals are all timers of that clock.
    /// </summary>
    private static async Task MoveTimeUntilAsync(TimerTracker time, FakeTimeProvider fake, Func<bool> done, TimeSpan step)
    {
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(Timeout);
        bounded.CancelAfter(TempDatabase.Wait);
        while (!done())
        {
            await time.WaitForPendingTimersAsync(1, bounded.Token);
            if (done())
            {
                return;
            }

            fake.Advance(step);
            await Task.Yield();
        }
    }

    private static Task<HealthCheckResult> Health(IHost host) =>
        host.Services.GetRequiredService<EventSubscriptionsHealthCheck>().CheckHealthAsync(new HealthCheckContext(), Timeout);

    private static async Task AppendDepositsAsync(IHost host, int count)
    {
        // Creates the schema too, before any lock is taken.
        var store = host.Services.GetRequiredService<IEventStore>();
        for (var amount = 1; amount <= count; amount++)
        {
            await store.AppendAsync("a", ExpectedVersion.Any, new Deposited(amount), Timeout);
        }
    }

    private IHost Build(TimeProvider time, bool exclusive, Action<Tally?, RecordedEvent> onFold)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.Services.AddSingleton(time);
        builder.AddEventSourcing(es => es
            .UseSqlite(o =>
            {
                o.ConnectionString = $"Data Source={_db.File()}";
                o.BusyTimeout = TimeSpan.Zero;
            })
            .AddEvent<Deposited>("bank.deposited")
            .Configure(o =>
            {
                o.ExclusiveOwnership = exclusive;
                o.LeaseDuration = TimeSpan.FromSeconds(3);
                o.StoreRetryDelay = TimeSpan.FromSeconds(1);
                o.StoreRetryMaxDelay = TimeSpan.FromSeconds(4);
            })
            .AddDocumentProjection<Tally>(
                "tallies",
                "tallies",
                e => e.StreamId,
                (t, e) =>
                {
                    onFold(t, e);
                    return e.Data is Deposited d ? new Tally((t?.Count ?? 0) + 1, (t?.Sum ?? 0) + d.Amount) : t;
                },
                o => o.BatchSize = 2));
        builder.Services.Configure<Patterns.Hosting.PatternsOptions>(o => o.InboxRetention = System.Threading.Timeout.InfiniteTimeSpan);
        return builder.Build();
    }

    /// <summary>Opens a second connection to the file and takes SQLite's write lock on it (BEGIN IMMEDIATE).</summary>
    private SqliteConnection LockDatabase()
    {
        var connection = new SqliteConnection($"Data Source={_db.File()};Pooling=False");
        connection.Open();
        Execute(connection, "BEGIN IMMEDIATE");
        return connection;
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    public sealed record Deposited(decimal Amount);

    public sealed record Tally(int Count, decimal Sum);
}
