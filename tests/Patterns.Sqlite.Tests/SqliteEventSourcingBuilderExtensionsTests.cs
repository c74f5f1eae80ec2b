using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing;
using Patterns.Storage;
using Patterns.Testing;

namespace Patterns.Sqlite.Tests;

public sealed class SqliteEventSourcingBuilderExtensionsTests : IAsyncLifetime
{
    private readonly TempDatabase _db = new();

    private static CancellationToken Timeout => TestContext.Current.CancellationToken;

    public ValueTask InitializeAsync() => default;

    public ValueTask DisposeAsync() => _db.DisposeAsync();

    [Fact]
    public async Task UseSqlite_HostAppendsThenAnotherHostReadsBackFromTheFile()
    {
        var connectionString = $"Data Source={_db.File("host.db")}";
        using (var host = Build(es => es.UseSqlite(connectionString)))
        {
            await host.StartAsync(Timeout);
            host.Services.GetRequiredService<IEventStorage>().Should().BeOfType<SqliteEventStore>();
            host.Services.GetRequiredService<IInboxStore>().Should().BeSameAs(host.Services.GetRequiredService<IEventStorage>());
            var store = host.Services.GetRequiredService<IEventStore>();
            await store.AppendAsync("account-1", ExpectedVersion.NoStream, new Deposited(10m), Timeout);
            await store.AppendAsync("account-1", ExpectedVersion.Exact(1), new Deposited(32m), Timeout);
            await host.StopAsync(Timeout);
        }

        using var reopened = Build(es => es.UseSqlite(connectionString));
        await reopened.StartAsync(Timeout);
        var events = new List<RecordedEvent>();
        await foreach (var e in reopened.Services.GetRequiredService<IEventStore>().ReadStreamAsync("account-1", cancellationToken: Timeout))
        {
            events.Add(e);
        }

        events.Select(e => e.Data).Should().Equal(new Deposited(10m), new Deposited(32m));
        events.Select(e => e.Version).Should().Equal(1, 2);
        await reopened.StopAsync(Timeout);
    }

    [Fact]
    public async Task UseSqlite_OptionsOverload_AppliesOptionsAndTheApplicationClock()
    {
        var fake = new FakeTimeProvider(new DateTimeOffset(2031, 3, 4, 5, 6, 7, TimeSpan.Zero));
        var time = new TimerTracker(fake);
        using var host = Build(es => es.UseSqlite(o =>
        {
            o.ConnectionString = _db.File("options.db");
            o.TablePrefix = "bank_";
        }), time);
        await host.StartAsync(Timeout);
        var inbox = host.Services.GetRequiredService<IInboxStore>();
        await inbox.TryMarkHandledAsync("billing", "m-1", Timeout);

        (await inbox.PruneAsync(time.GetUtcNow(), Timeout)).Should().Be(0, "the mark was stamped with the application's clock, not the system's");
        (await inbox.PruneAsync(time.GetUtcNow().AddTicks(1), Timeout)).Should().Be(1);
        await host.StopAsync(Timeout);
        using var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={_db.File("options.db")};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT count(*) FROM sqlite_master WHERE name = 'bank_events'";
        Convert.ToInt64(command.ExecuteScalar()).Should().Be(1);
    }

    [Fact]
    public async Task UseSqlite_InvalidOptions_FailAtStartListingEveryProblem()
    {
        using var host = Build(es => es.UseSqlite(o =>
        {
            o.ConnectionString = "Data Source=:memory:";
            o.PageSize = 0;
        }));

        var start = async () => await host.StartAsync(Timeout);

        var thrown = await start.Should().ThrowAsync<OptionsValidationException>();
        thrown.Which.Message.Should().Contain("in-memory").And.Contain("PageSize");
    }

    [Fact]
    public void UseSqlite_EmptyConnectionString_Throws()
    {
        var services = new ServiceCollection();

        var act = () => services.AddEventSourcing(es => es.UseSqlite(" "));

        act.Should().Throw<ArgumentException>();
    }

    private static IHost Build(Action<EventSourcingBuilder> store, TimeProvider? time = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        if (time is not null)
        {
            builder.Services.AddSingleton(time);
        }

        builder.AddEventSourcing(es =>
        {
            store(es);
            es.AddEvent<Deposited>("bank.deposited");
        });
        return builder.Build();
    }

    public sealed record Deposited(decimal Amount);
}
