using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Npgsql;
using Patterns.EventSourcing;
using Patterns.Storage;
using Patterns.Testing;

namespace Patterns.Postgres.Tests;

/// <summary>
/// A projection on PostgreSQL whose connections the server terminates (<c>pg_terminate_backend</c>, as a database
/// restart or an administrator does) while it handles a page recovers by itself: the store calls that find a terminated
/// connection fail with a transient error, the projection reports <see cref="SubscriptionState.Recovering"/>, runs again
/// from its checkpoint on new connections after its back-off (a timer of the fake clock the test moves), and folds each
/// event once.
/// </summary>
public sealed class PostgresSubscriptionOutageTests : IAsyncLifetime
{
    private readonly string _schema = PostgresDatabase.NewSchema();

    // Only this test's connections are terminated: the server is shared with other tests.
    private readonly string _application = "outage-" + Guid.NewGuid().ToString("N")[..12];

    private static CancellationToken Timeout => TestContext.Current.CancellationToken;

    public async ValueTask InitializeAsync() => await PostgresDatabase.RequireAsync();

    public async ValueTask DisposeAsync() => await PostgresDatabase.DropSchemaAsync(_schema);

    [Fact]
    public async Task Projection_ConnectionsTerminatedByTheServerWhileItHandlesAPage_RecoversAndFoldsEachEventOnce()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var entered = new ManualResetEventSlim();
        var gate = new ManualResetEventSlim();
        using var host = Build(time, (_, e) =>
        {
            if (e.Data is Deposited { Amount: 3 } && !entered.IsSet)
            {
                // The second page's first event: the test terminates the connections before the page commits.
                entered.Set();
                gate.Wait(Timeout);
            }
        });
        var store = host.Services.GetRequiredService<IEventStore>();
        // Five events in pages of two: the last page is short, so the commit that reaches position 5 also makes it live.
        for (var amount = 1; amount <= 5; amount++)
        {
            await store.AppendAsync("a", ExpectedVersion.Any, new Deposited(amount), Timeout);
        }

        await host.StartAsync(Timeout);
        var subscriptions = host.Services.GetRequiredService<IEventSubscriptions>();
        entered.Wait(Timeout);
        var terminated = await PostgresDatabase.ScalarAsync<long>(
            $"SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{_application}') AS t");
        terminated.Should().BeGreaterThan(0, "the store's pooled connections are open");
        gate.Set();

        await MoveTimeUntilAsync(time, fake, () => subscriptions.GetStatus("tallies").State == SubscriptionState.Recovering);
        var status = subscriptions.GetStatus("tallies");
        status.Error.Should().BeNull("a terminated connection is no fault");
        status.StoreError.Should().BeAssignableTo<NpgsqlException>();
        (await host.Services.GetRequiredService<EventSubscriptionsHealthCheck>().CheckHealthAsync(new HealthCheckContext(), Timeout)).Status.Should().Be(HealthStatus.Degraded);

        var caughtUp = subscriptions.WaitForPositionAsync("tallies", 5, Timeout);
        await MoveTimeUntilAsync(time, fake, () => caughtUp.IsCompleted);
        await caughtUp;

        subscriptions.GetStatus("tallies").State.Should().Be(SubscriptionState.Live);
        (await host.Services.GetRequiredService<IReadModels>().GetAsync<Tally>("tallies", "a", Timeout)).Should().Be(
            new Tally(5, 15m), "the page handled again after its store calls failed is folded once");
        await host.StopAsync(Timeout);
    }

    /// <summary>Moves the fake clock a second whenever a timer is armed (the projection's back-off, the listener's reconnect delay), until <paramref name="done"/> holds.</summary>
    private static async Task MoveTimeUntilAsync(TimerTracker time, FakeTimeProvider fake, Func<bool> done)
    {
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(Timeout);
        bounded.CancelAfter(PostgresDatabase.Wait);
        while (!done())
        {
            await time.WaitForPendingTimersAsync(1, bounded.Token);
            if (done())
            {
                return;
            }

            fake.Advance(TimeSpan.FromSeconds(1));
            await Task.Yield();
        }
    }

    private IHost Build(TimeProvider time, Action<Tally?, RecordedEvent> onFold)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.Services.AddSingleton(time);
        var connectionString = new NpgsqlConnectionStringBuilder(PostgresDatabase.ConnectionString) { ApplicationName = _application, MaxPoolSize = 8 }.ConnectionString;
        builder.AddEventSourcing(es => es
            .UsePostgres(connectionString, o => o.Schema = _schema)
            .AddEvent<Deposited>("bank.deposited")
            .Configure(o =>
            {
                // One process: the back-off is the projection's only timer.
                o.ExclusiveOwnership = false;
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

    public sealed record Deposited(decimal Amount);

    public sealed record Tally(int Count, decimal Sum);
}
